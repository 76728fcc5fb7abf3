"""Which versions of each model to serve, and the labels that name them.

TF Serving's model config, in a small file of our own (``SERVICE_MODEL_CONFIG``, YAML or
TOML) or as a ``ModelServerConfig`` sent to ``HandleReloadConfigRequest``::

    models:
      imdb:
        versions: latest        # latest (default) | all | {latest: 2} | [3, 4]
        labels: {stable: 3, canary: 4}

A model the config does not name serves its latest version with no labels. No TensorFlow
or BentoML here: :mod:`service.engine` applies what this module decides.

Typical usage::

    config = load_model_config("models.yaml")
    config.for_model("imdb").policy.select([1, 2, 3])     # [3]
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from service.client_text import clip


class ConfigError(ValueError):
    """A model config that cannot be applied; the message names the field."""


@dataclass(frozen=True)
class VersionPolicy:
    """TF Serving's ``ServableVersionPolicy``: ``latest`` N, ``all``, or ``specific``."""

    kind: str = "latest"  # latest | all | specific
    latest: int = 1
    specific: tuple[int, ...] = ()

    def select(self, available: Iterable[int]) -> list[int]:
        """The versions to serve among ``available`` (ascending)."""
        versions = sorted(set(available))
        if self.kind == "all":
            return versions
        if self.kind == "specific":
            wanted = set(self.specific)  # linear: a long list must not cost its square
            return [v for v in versions if v in wanted]
        return versions[-self.latest :] if versions else []

    def to_raw(self) -> Any:
        """The config-file form (:func:`parse_policy` reads it back)."""
        if self.kind == "specific":
            return list(self.specific)
        return "all" if self.kind == "all" else {"latest": self.latest}


@dataclass(frozen=True)
class ModelConfig:
    """One model's version policy and labels (label -> version)."""

    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ServingConfig:
    """Every model's config; models it does not name get :class:`ModelConfig` defaults."""

    models: Mapping[str, ModelConfig] = field(default_factory=dict)

    def for_model(self, name: str) -> ModelConfig:
        return self.models.get(name) or ModelConfig()

    def to_raw(self) -> dict[str, Any]:
        """The config-file form (:func:`parse_config` reads it back)."""
        return {
            "models": {
                name: {"versions": model.policy.to_raw(), "labels": dict(model.labels)}
                for name, model in self.models.items()
            }
        }


def parse_policy(raw: Any, where: str) -> VersionPolicy:
    """``latest`` | ``all`` | ``{latest: N}`` | ``{specific: [..]}`` | ``[v, ...]``.

    Raises:
        ConfigError: anything else (the message names ``where``).
    """
    if raw is None or raw == "latest":
        return VersionPolicy()
    if raw == "all":
        return VersionPolicy(kind="all")
    if isinstance(raw, Mapping) and set(raw) == {"latest"}:
        count = raw["latest"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"{where}.latest: expected a positive integer, got {count!r}")
        return VersionPolicy(latest=count)
    if isinstance(raw, Mapping) and set(raw) == {"specific"}:
        raw = raw["specific"]
    if isinstance(raw, list) and raw:
        return VersionPolicy(kind="specific", specific=tuple(_version(v, where) for v in raw))
    raise ConfigError(
        f"{where}: expected latest, all, {{latest: N}} or a list of versions, got {raw!r}"
    )


def _version(raw: Any, where: str) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ConfigError(f"{where}: version {raw!r} is not an integer")
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{where}: version {raw!r} is not an integer") from None
    if value < 0:
        raise ConfigError(f"{where}: version {value} is negative")
    return value


def parse_config(raw: Any, source: str = "config") -> ServingConfig:
    """``{"models": {name: {"versions": ..., "labels": {label: version}}}}`` -> config.

    Raises:
        ConfigError: wrong structure, unknown keys, or a label on a version the policy
            leaves out (the message names the field).
    """
    if raw is None:
        return ServingConfig()
    if not isinstance(raw, Mapping) or set(raw) - {"models"}:
        raise ConfigError(f"{source}: expected a mapping with one key, 'models'")
    models = raw.get("models")
    models = {} if models is None else models
    if not isinstance(models, Mapping):
        raise ConfigError(f"{source}: models: expected a mapping of model name to its config")
    parsed = {}
    for name, entry in models.items():
        where = f"models.{clip(name)}"
        entry = entry or {}
        if not isinstance(entry, Mapping) or set(entry) - {"versions", "labels"}:
            raise ConfigError(f"{where}: expected a mapping with 'versions' and/or 'labels'")
        policy = parse_policy(entry.get("versions"), f"{where}.versions")
        labels_raw = entry.get("labels") or {}
        if not isinstance(labels_raw, Mapping):
            raise ConfigError(f"{where}.labels: expected a mapping of label to version")
        labels = {}
        served = set(policy.specific)
        for label, version in labels_raw.items():
            if not isinstance(label, str) or not label:
                raise ConfigError(f"{where}.labels: label {label!r} must be a non-empty string")
            labels[label] = _version(version, f"{where}.labels.{clip(label)}")
            if policy.kind == "specific" and labels[label] not in served:
                raise ConfigError(
                    f"{where}.labels.{clip(label)}: version {labels[label]} is not served "
                    f"(versions: {list(policy.specific)})"
                )
        parsed[str(name)] = ModelConfig(policy=policy, labels=labels)
    return ServingConfig(models=parsed)


class _ConfigLoader(yaml.SafeLoader):
    """YAML without aliases: a few ``*name`` references can make a small file describe a
    huge config, and parsing must cost no more than the file's size."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.events.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed here", self.peek_event().start_mark
            )
        return super().compose_node(parent, index)


def load_model_config(path: str | Path) -> ServingConfig:
    """Reads a YAML (``.yaml``/``.yml``) or TOML (``.toml``) model config file.

    Raises:
        ConfigError: unreadable, unparsable or invalid (the message names the file).
    """
    path = Path(path)
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.load(text, _ConfigLoader)
    except (OSError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"SERVICE_MODEL_CONFIG={path}: {exc}") from None
    return parse_config(raw, source=str(path))


def config_from_proto(config: Any) -> ServingConfig:
    """A TF Serving ``ModelServerConfig`` (``model_config_list``) -> config.

    Raises:
        ConfigError: not a ``model_config_list``, or an invalid entry.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError("config: only model_config_list is supported")
    models: dict[str, Any] = {}
    for entry in config.model_config_list.config:
        if not entry.name:
            raise ConfigError("config.model_config_list.config.name: required")
        policy = entry.model_version_policy
        which = policy.WhichOneof("policy_choice")
        if which == "all":
            versions: Any = "all"
        elif which == "specific":
            versions = list(policy.specific.versions)
        elif which == "latest" and policy.latest.num_versions:
            versions = {"latest": policy.latest.num_versions}
        else:
            versions = "latest"
        models[entry.name] = {"versions": versions, "labels": dict(entry.version_labels)}
    return parse_config({"models": models}, source="HandleReloadConfigRequest")
