"""What the BentoML store holds: served models, their versions, signatures and labels.

Read from each export's ``metadata.json`` (see ``docs/contracts.md``), so the gateway knows
every model's signatures without importing TensorFlow.

Typical usage::

    tags = latest_tags()                       # {"imdb": "imdb:fgxxcdxg42u5eax4", ...}
    info = ModelInfo.from_path("imdb", tags["imdb"], stored.path)
    info.signature("predict_text").input       # TensorSpec(name="text", dtype="string", ...)
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.client_text import clip
from service.errors import ModelNotFound
from tfserving_api.contract import TENSOR_SIGNATURE, USER_SIGNATURES
from tfserving_api.store import readable_models

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a signature; ``shape[0]`` is the batch (``None``)."""

    name: str
    dtype: str  # numpy-style name: int32, int64, uint8, float32, string
    shape: tuple[int | None, ...]

    @property
    def row_shape(self) -> tuple[int | None, ...]:
        return self.shape[1:]

    def to_json(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class SignatureSpec:
    name: str
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]

    @property
    def input(self) -> TensorSpec:
        """The signature's only input (every exported signature has exactly one)."""
        return next(iter(self.inputs.values()))


@dataclass(frozen=True)
class ModelInfo:
    """A served model as the gateway and the runners see it."""

    name: str
    version: int
    variant: str
    tag: str
    labels: tuple[str, ...]
    signatures: dict[str, SignatureSpec]
    synthetic: bool = False
    # Exclusive upper bound of token ids in the tensor signature (text models), if known.
    vocab_size: int | None = None

    @classmethod
    def from_path(cls, name: str, tag: str, path: str | Path) -> ModelInfo:
        """Reads ``<path>/metadata.json``.

        Raises:
            ValueError: the file is missing or lacks the contract's fields.
        """
        meta_path = Path(path) / "metadata.json"
        try:
            meta = json.loads(meta_path.read_text())
            signatures = {
                sig: SignatureSpec(
                    name=sig,
                    inputs=_specs(spec["inputs"]),
                    outputs=_specs(spec["outputs"]),
                )
                for sig, spec in meta["signatures"].items()
            }
            version = int(meta["version"])
            config = (meta.get("training") or {}).get("config") or {}
            vocab = config.get("vocab_size", config.get("source_vocab_size"))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{meta_path}: not a usable export metadata file ({exc})") from exc
        if TENSOR_SIGNATURE not in signatures:
            raise ValueError(f"{meta_path}: no {TENSOR_SIGNATURE} signature")
        if any(len(s.inputs) != 1 for s in signatures.values()):
            raise ValueError(f"{meta_path}: every signature must take exactly one input")
        return cls(
            name=name,
            version=version,
            variant=str(meta.get("variant", "")),
            tag=tag,
            labels=tuple(str(label) for label in meta.get("labels") or ()),
            signatures=signatures,
            synthetic=bool((meta.get("dataset") or {}).get("synthetic", False)),
            vocab_size=int(vocab) if vocab else None,
        )

    @functools.cached_property  # read on every request; ModelInfo never changes
    def user_signature(self) -> str | None:
        """The signature taking what a person has (raw text, uint8 images, ...)."""
        return next((s for s in self.signatures if s in USER_SIGNATURES), None)

    @functools.cached_property
    def kind(self) -> str | None:
        """``text``, ``image``, ``window``, ``sentences`` or ``None`` for other exports."""
        user = self.user_signature
        return USER_SIGNATURES[user] if user else None

    def signature(self, name: str | None) -> SignatureSpec:
        """The named signature (``serving_default`` when ``name`` is empty).

        Raises:
            ModelNotFound: the model has no such signature.
        """
        name = name or TENSOR_SIGNATURE
        try:
            return self.signatures[name]
        except KeyError:
            known = ", ".join(sorted(self.signatures))
            raise ModelNotFound(
                f"signature_name: model '{self.name}' has no signature '{clip(name)}' "
                f"(has: {known})"
            ) from None

    def describe(self) -> dict[str, Any]:
        """The ``model`` object of every friendly response."""
        return {"name": self.name, "version": self.version, "variant": self.variant}


@dataclass(frozen=True)
class StoredVersion:
    """One version of a model as the store holds it."""

    info: ModelInfo
    path: str

    @property
    def version(self) -> int:
        return self.info.version


Stored = dict[str, dict[int, StoredVersion]]
_INFO_CACHE: dict[tuple[str, str], ModelInfo] = {}
_WARNED: set[tuple[str, str]] = set()


def stored_versions(names: tuple[str, ...] = ()) -> Stored:
    """Every servable version in the store, by model name and integer version.

    A version is its export's ``metadata.json`` ``version`` (BentoML's tag suffix is
    random). Entries without a valid ``model.yaml`` or a usable ``metadata.json`` are
    skipped, with one warning each; when two entries claim one version, the newer wins.

    Args:
        names: models to look at; empty means all.
    """
    found: dict[str, dict[int, tuple[Any, StoredVersion]]] = {}
    for model in readable_models():
        name = model.tag.name
        if names and name not in names:
            continue
        key = (str(model.tag), str(model.path))
        info = _INFO_CACHE.get(key)
        if info is None:
            try:
                info = _INFO_CACHE[key] = ModelInfo.from_path(name, str(model.tag), model.path)
            except ValueError as exc:  # tried again at the next look, warned about once
                if key not in _WARNED:
                    _WARNED.add(key)
                    logger.warning("not serving %s: %s", model.tag, exc)
                continue
        created = model.info.creation_time
        previous = found.setdefault(name, {}).get(info.version)
        if previous is not None and (previous[1].info.tag, info.tag) not in _WARNED:
            _WARNED.add((previous[1].info.tag, info.tag))
            logger.warning(
                "%s and %s both claim version %d of %s; serving the newer",
                previous[1].info.tag,
                info.tag,
                info.version,
                name,
            )
        if previous is not None and previous[0] >= created:
            continue
        found[name][info.version] = (created, StoredVersion(info, str(model.path)))
    return {name: {v: entry[1] for v, entry in versions.items()} for name, versions in found.items()}


def _specs(raw: dict[str, dict[str, Any]]) -> dict[str, TensorSpec]:
    return {
        key: TensorSpec(name=key, dtype=str(spec["dtype"]), shape=tuple(spec["shape"]))
        for key, spec in raw.items()
    }


def bento_tags(bento_yaml: Path, names: tuple[str, ...] = ()) -> dict[str, str] | None:
    """The model versions a built Bento was built with, or ``None`` outside a Bento.

    ``bentoml serve <bento>`` must serve what was packaged, not whatever the store's latest
    version is at start-up; the Bento's ``bento.yaml`` records one model per runner.
    """
    if not bento_yaml.is_file():
        return None
    import yaml

    manifest = yaml.safe_load(bento_yaml.read_text())
    tags = {}
    for service in manifest.get("services") or []:
        for model in service.get("models") or []:
            name = str(model["tag"]).split(":")[0]
            if not names or name in names:
                tags[name] = str(model["tag"])
    return tags or None


def latest_tags(names: tuple[str, ...] = ()) -> dict[str, str]:
    """The latest stored version of each model to serve, as ``name -> "name:version"``:
    the newest entry with a valid ``model.yaml`` and a usable export ``metadata.json``
    (broken newer entries are skipped with a warning, so one bad entry never stops a model).

    Args:
        names: models to serve; empty means every model in the store that has a usable
            entry.

    Raises:
        LookupError: a requested model is not in the store, or nothing is servable.
    """
    entries: dict[str, list[Any]] = {}
    for model in readable_models():
        if not names or model.tag.name in names:
            entries.setdefault(model.tag.name, []).append(model)
    missing = [n for n in names if n not in entries]
    if missing:
        raise LookupError(
            f"SERVICE_MODELS names {', '.join(missing)} but the BentoML store has no such model; "
            "train it first: python -m training <model> (BENTOML_HOME decides the store)"
        )
    tags = {}
    for name, models in sorted(entries.items()):
        for model in sorted(models, key=lambda m: m.info.creation_time, reverse=True):
            try:
                ModelInfo.from_path(name, str(model.tag), model.path)
            except ValueError as exc:
                key = (str(model.tag), str(model.path))
                if key not in _WARNED:
                    _WARNED.add(key)
                    logger.warning("not serving %s: %s", model.tag, exc)
                continue
            tags[name] = str(model.tag)
            break
    if not tags:
        raise LookupError(
            "the BentoML store holds no exported model; train some first: "
            "python -m training all --quick (BENTOML_HOME decides the store)"
        )
    return tags
