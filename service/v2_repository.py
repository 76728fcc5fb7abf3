"""The Open Inference Protocol's model repository extension, mapped onto the version policy
and hot reload that ``HandleReloadConfigRequest`` drives. No I/O; both V2 doors use it.

* **index** (``POST /v2/repository/index``, ``RepositoryIndex``): every version this worker
  knows of every served model, with Triton's state names: ``READY`` (``AVAILABLE``),
  ``LOADING``, ``UNLOADING``, ``UNAVAILABLE`` (a failed load, with its reason).
* **load** (``POST /v2/repository/models/{m}/load``, ``RepositoryModelLoad``): reads the
  store again and applies the model config in force, so a version registered since the last
  poll loads now; with a ``config`` parameter (a JSON object) it first replaces that model's
  version policy and labels: Triton's ``{"version_policy": {"latest": {"num_versions": 2}}}``
  / ``{"all": {}}`` / ``{"specific": {"versions": [3]}}``, or this service's own
  ``{"versions": ..., "labels": {...}}`` (as in ``SERVICE_MODEL_CONFIG``). The config reaches
  every worker and the call returns once what it wants has loaded (or failed), exactly as
  ``HandleReloadConfigRequest``.
* **unload** (``.../unload``, ``RepositoryModelUnload``): refused (501 / UNIMPLEMENTED).
  Every served model keeps a version (the engine never leaves a gap, even when a new
  version fails to load); to serve fewer versions, load with a ``config``, and to serve
  fewer models, start with ``SERVICE_MODELS``.

All three are admin calls (``service/auth.py``: ``SERVICE_ADMIN_TOKEN``, ``authorization:
Bearer <token>``), as Triton restricts its ``model-repository`` protocol.

Typical usage::

    rows = repository_index(server.models, ready_only=False)
    config = load_config(server.engine.config, "imdb", server.models, '{"versions": "all"}')
    await server.engine.reload(config)
"""

from __future__ import annotations

import json
import typing as t

from service.client_text import clip
from service.errors import InvalidInput, ModelNotFound, Unsupported
from service.versions import ConfigError, ServingConfig, parse_config

# ServableState -> Triton's model states.
STATES = {
    "START": "LOADING",
    "LOADING": "LOADING",
    "AVAILABLE": "READY",
    "UNLOADING": "UNLOADING",
    "END": "UNAVAILABLE",
}
REPOSITORY_EXTENSION = "model_repository"
CONFIG_PARAMETER = "config"
CONFIG_KEYS = ("name", "version_policy", "versions", "labels")
UNLOAD_REFUSED = (
    "unload: every served model keeps a version on this server; serve fewer versions with "
    "load's 'config' parameter (e.g. {\"version_policy\": {\"latest\": {\"num_versions\": 1}}}) "
    "or fewer models with SERVICE_MODELS at start"
)


def repository_index(models: t.Mapping[str, t.Any], ready_only: bool = False) -> list[dict]:
    """``[{"name", "version", "state", "reason"?}]`` for every version of every model."""
    rows = []
    for name in sorted(models):
        for version, state, error in models[name].status():
            triton_state = STATES.get(state, "UNAVAILABLE")
            if ready_only and triton_state != "READY":
                continue
            row = {"name": name, "version": str(version), "state": triton_state}
            if error:
                row["reason"] = error
            rows.append(row)
    return rows


def _served(name: str, models: t.Mapping[str, t.Any]) -> None:
    if name not in models:
        served = ", ".join(sorted(models)) or "none"
        raise ModelNotFound(f"model '{clip(name)}' is not served (served: {served})")


def _triton_policy(raw: t.Any) -> t.Any:
    """Triton's ``version_policy`` -> this service's ``versions`` form."""
    where = f"{CONFIG_PARAMETER}.version_policy"
    if not isinstance(raw, dict) or len(raw) != 1:
        raise InvalidInput(f"{where}: expected one of latest, all or specific")
    ((kind, body),) = raw.items()
    body = body or {}
    if not isinstance(body, dict):
        raise InvalidInput(f"{where}.{clip(kind)}: expected an object")
    if kind == "all":
        return "all"
    if kind == "latest":
        return {"latest": body.get("num_versions", 1)}
    if kind == "specific":
        return body.get("versions") or []
    raise InvalidInput(f"{where}: '{clip(kind)}' is not latest, all or specific")


def load_config(
    current: ServingConfig, name: str, models: t.Mapping[str, t.Any], parameter: t.Any = None
) -> ServingConfig:
    """The config a load of ``name`` applies: ``current``, with ``name``'s version policy and
    labels replaced when a ``config`` parameter (JSON text or object) is given.

    Raises:
        ModelNotFound: ``name`` is not a served model.
        InvalidInput: the parameter is not a config this service understands.
    """
    _served(name, models)
    if parameter is None:
        return current
    raw = parameter
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise InvalidInput(f"{CONFIG_PARAMETER}: not valid JSON ({clip(exc)})") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{CONFIG_PARAMETER}: expected a JSON object")
    unknown = [key for key in raw if key not in CONFIG_KEYS]
    if unknown:
        raise InvalidInput(
            f"{CONFIG_PARAMETER}.{clip(unknown[0])}: not supported here "
            f"(accepted: {', '.join(CONFIG_KEYS)})"
        )
    if "name" in raw and raw["name"] != name:
        raise InvalidInput(f"{CONFIG_PARAMETER}.name: '{clip(raw['name'])}' is not '{name}'")
    if "version_policy" in raw and "versions" in raw:
        raise InvalidInput(f"{CONFIG_PARAMETER}: version_policy or versions, not both")
    entry: dict[str, t.Any] = {}
    if "version_policy" in raw:
        entry["versions"] = _triton_policy(raw["version_policy"])
    elif "versions" in raw:
        entry["versions"] = raw["versions"]
    if "labels" in raw:
        entry["labels"] = raw["labels"]
    try:
        parsed = parse_config({"models": {name: entry}}, source=CONFIG_PARAMETER)
    except ConfigError as exc:
        raise InvalidInput(clip(str(exc), 400)) from None
    return ServingConfig(models={**current.models, name: parsed.for_model(name)})


def config_parameter(parameters: t.Mapping[str, t.Any]) -> t.Any:
    """The ``config`` of a load's parameters; Triton's ``file:`` overrides are refused.

    Raises:
        InvalidInput: a ``file:`` parameter (models come from the BentoML store here).
    """
    for key in parameters:
        if isinstance(key, str) and key.startswith("file:"):
            raise InvalidInput(
                f"parameters.{clip(key)}: model files cannot be uploaded here; register a "
                "version in the BentoML store (python -m training ...) and load again"
            )
    return parameters.get(CONFIG_PARAMETER)


def refuse_unload(name: str, models: t.Mapping[str, t.Any]) -> t.NoReturn:
    """Raises ModelNotFound for a model not served, else Unsupported (see the module doc)."""
    _served(name, models)
    raise Unsupported(UNLOAD_REFUSED)
