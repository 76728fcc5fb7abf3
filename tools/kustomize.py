"""Render a kustomization without kubectl: the subset ``deploy/k8s`` uses, and nothing more.

Supported: ``resources`` (YAML files, or directories holding a kustomization) and
``patches`` (``path:`` or inline ``patch:``) as strategic-merge patches matched by kind and
name, including ``$patch: delete``. Maps merge key by key; lists of maps that all have a
``name`` merge item by item on it (containers, env, volumes: Kubernetes' merge key for
those); any other list is replaced, as strategic merge does for lists without a merge key
(an HPA's ``metrics``, tolerations). Any other kustomization field is an error, so an overlay
cannot use a feature this renderer would silently ignore.

Typical usage::

    python tools/kustomize.py deploy/k8s/overlays/keda     # the YAML kubectl -k would apply
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "patches"}
Object = dict[str, Any]


def _key(obj: Object) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _load(path: Path) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for key, value in patch.items():
            merged[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        merged_list = [copy.deepcopy(item) for item in base]
        index = {item["name"]: i for i, item in enumerate(merged_list)}
        for item in patch:
            if item["name"] in index:
                merged_list[index[item["name"]]] = _merge(merged_list[index[item["name"]]], item)
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def render(directory: str | Path) -> list[Object]:
    """The objects ``kubectl kustomize <directory>`` would print, in resource order.

    Raises:
        ValueError: an unsupported field, a patch matching no object, or two objects of
            one kind and name.
    """
    directory = Path(directory)
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    objects: list[Object] = []
    for resource in kustomization.get("resources") or []:
        path = directory / resource
        objects.extend(render(path) if path.is_dir() else _load(path))
    keys = [_key(obj) for obj in objects]
    duplicates = {key for key in keys if keys.count(key) > 1}
    if duplicates:
        raise ValueError(f"{directory}: more than one {sorted(duplicates)}")
    for entry in kustomization.get("patches") or []:
        if set(entry) - {"path", "patch"}:
            raise ValueError(f"{directory}: unsupported patch fields {sorted(entry)}")
        patches = _load(directory / entry["path"]) if "path" in entry else [
            yaml.safe_load(entry["patch"])
        ]
        for patch in patches:
            matches = [i for i, obj in enumerate(objects) if _key(obj) == _key(patch)]
            if not matches:
                raise ValueError(f"{directory}: patch for {_key(patch)} matches no object")
            [i] = matches
            if patch.get("$patch") == "delete":
                del objects[i]
            else:
                objects[i] = _merge(objects[i], patch)
    return objects


if __name__ == "__main__":
    print(yaml.safe_dump_all(render(sys.argv[1] if len(sys.argv) > 1 else "."), sort_keys=False))
