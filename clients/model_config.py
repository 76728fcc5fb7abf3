"""TF Serving's `ModelServerConfig` from a small mapping, for `reload_config` (gRPC).

The mapping names each model with its version policy and labels, in the same words as
the service's own config file (``SERVICE_MODEL_CONFIG``)::

    {
        "imdb": {
            "versions": [1, 2],     # "all" | "latest" | {"latest": 2} | [1, 2] | None
            "labels": {"stable": 1, "canary": 2},
            "base_path": "",        # optional; the service finds versions in its store
        },
        "cosine": {},               # the latest version, no labels
    }

``versions`` absent or None is TF Serving's default, the latest version only. The result
is a `model_config_list` with one `ModelConfig` a model (platform ``"tensorflow"``),
ready for ``ModelService/HandleReloadConfigRequest``.

Typical usage::

    from clients.grpc import Client
    from clients.model_config import model_server_config

    print(model_server_config({"imdb": {"versions": "all", "labels": {"stable": 2}}}))
    with Client("localhost:8500") as client:
        client.reload_config({"imdb": {"versions": "all", "labels": {"stable": 2}}})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clients._inputs import positive_int
from clients.errors import InvalidInput
from tfserving_api._proto.tensorflow_serving.apis import model_management_pb2
from tfserving_api._proto.tensorflow_serving.config import model_server_config_pb2

ModelServerConfig = model_server_config_pb2.ModelServerConfig
PLATFORM = "tensorflow"
_KEYS = ("versions", "labels", "base_path")


def model_server_config(models: Mapping[str, Mapping[str, Any]]) -> ModelServerConfig:
    """The `ModelServerConfig` a mapping describes (see the module docstring).

    Args:
        models: Model name to ``{"versions": ..., "labels": ..., "base_path": ...}``.

    Returns:
        A `ModelServerConfig` with a `model_config_list`, one entry a model, in order.

    Raises:
        InvalidInput: a malformed mapping; the message names the model and the field.
    """
    if not isinstance(models, Mapping) or not models:
        raise InvalidInput("the model config must be a non-empty mapping of model name to config")
    config = ModelServerConfig()
    for name, options in models.items():
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"model names must be non-empty strings, got {name!r}")
        options = {} if options is None else options
        if not isinstance(options, Mapping):
            raise InvalidInput(f"{name}: expected a mapping of {', '.join(_KEYS)}")
        unknown = sorted(set(options) - set(_KEYS))
        if unknown:
            raise InvalidInput(f"{name}: unknown field(s) {unknown}; expected {', '.join(_KEYS)}")
        entry = config.model_config_list.config.add(name=name, model_platform=PLATFORM)
        base_path = options.get("base_path") or ""
        if not isinstance(base_path, str):
            raise InvalidInput(f"{name}.base_path must be a string, got {base_path!r}")
        entry.base_path = base_path
        _set_policy(entry.model_version_policy, options.get("versions"), name)
        labels = options.get("labels") or {}
        if not isinstance(labels, Mapping):
            raise InvalidInput(f"{name}.labels must map label names to versions, got {labels!r}")
        for label, version in labels.items():
            if not isinstance(label, str) or not label:
                raise InvalidInput(f"{name}.labels: label names are strings, got {label!r}")
            entry.version_labels[label] = positive_int(version, f"{name}.labels.{label}")
    return config


def reload_config_request(
    models: Mapping[str, Mapping[str, Any]] | ModelServerConfig,
) -> model_management_pb2.ReloadConfigRequest:
    """A `ReloadConfigRequest` for a mapping or a ready-made `ModelServerConfig`."""
    config = models if isinstance(models, ModelServerConfig) else model_server_config(models)
    return model_management_pb2.ReloadConfigRequest(config=config)


def _set_policy(policy: Any, versions: Any, name: str) -> None:
    field = f"{name}.versions"
    if versions is None or (isinstance(versions, str) and versions == "latest"):
        policy.latest.num_versions = 1
    elif isinstance(versions, str) and versions == "all":
        policy.all.SetInParent()
    elif isinstance(versions, Mapping) and set(versions) == {"latest"}:
        policy.latest.num_versions = positive_int(versions["latest"], f"{field}.latest")
    elif isinstance(versions, Mapping) and set(versions) == {"specific"}:
        _set_specific(policy, versions["specific"], f"{field}.specific")
    elif isinstance(versions, (list, tuple)) and versions:
        _set_specific(policy, versions, field)
    else:
        raise InvalidInput(
            f'{field} must be "all", "latest", {{"latest": n}} or a non-empty list of '
            f"versions, got {versions!r}"
        )


def _set_specific(policy: Any, versions: Any, field: str) -> None:
    if not isinstance(versions, (list, tuple)) or not versions:
        raise InvalidInput(f"{field} must be a non-empty list of versions, got {versions!r}")
    policy.specific.versions.extend(
        positive_int(v, f"{field}[{i}]") for i, v in enumerate(versions)
    )
