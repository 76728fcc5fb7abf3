"""The BentoML model store as training and the service both read it, one bad entry at a time.

``bentoml.models.list()`` raises as soon as one directory of the store lacks a valid
``model.yaml`` (a half-copied version, a stray folder), which would stop the service's
start-up, its polling and the training toolkit's next-version lookup alike.
:func:`readable_models` lists every entry that parses instead, and warns once per entry
that does not (not once per poll).

Typical usage::

    for model in readable_models("imdb"):
        print(model.tag, model.path)
"""

from __future__ import annotations

import logging
import typing as t
from pathlib import Path

logger = logging.getLogger("bentoml.keras_serving.store")

_WARNED: set[str] = set()


def store_directory() -> Path:
    """``$BENTOML_HOME/models`` (or wherever BentoML's configuration puts the model store)."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store_dir.get())


def readable_models(name: str | None = None) -> list[t.Any]:
    """Every ``bentoml.Model`` of the store whose entry parses (optionally of one name),
    in name then version-directory order; each entry that does not parse is skipped with a
    warning, logged once per entry for the life of the process."""
    from bentoml._internal.models.model import Model

    store = store_directory()
    try:
        names = sorted(d for d in store.iterdir() if d.is_dir())
    except OSError:  # no store yet
        return []
    found = []
    for folder in names:
        if name is not None and folder.name != name:
            continue
        try:
            versions = sorted(d for d in folder.iterdir() if d.is_dir())
        except OSError:
            continue
        for path in versions:
            try:
                found.append(Model.from_path(path))
            except Exception as exc:  # any way a model.yaml can be broken
                key = str(path)
                if key not in _WARNED:
                    _WARNED.add(key)
                    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                    logger.warning("skipping store entry %s: %s", path, reason)
    return found
