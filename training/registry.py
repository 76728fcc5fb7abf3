"""Register exports in the BentoML model store (``$BENTOML_HOME``).

``bentoml.tensorflow`` / ``bentoml.keras`` are deprecated in BentoML 1.4 and broken on Keras 3,
so exports are stored as plain directories through ``bentoml.models.create``: the model's
directory holds the SavedModel and ``metadata.json``, and ``tf.saved_model.load(ref.path)``
loads it.

Typical usage::

    tag = register_export(Path("exports/imdb/3"), metadata)
    registered_names()   # {"imdb", ...}
"""

from __future__ import annotations

import shutil
from pathlib import Path


def register_export(export_path: Path, metadata: dict) -> str:
    """Copies an export directory into the BentoML store.

    Args:
        export_path: ``<out>/<model>/<version>`` as written by :mod:`training.export`.
        metadata: the export's metadata; model/variant become labels, metrics metadata.

    Returns:
        The BentoML tag, e.g. ``imdb:abc123``.
    """
    import bentoml

    labels = {
        "model": metadata["model"],
        "variant": metadata["variant"],
        "version": str(metadata["version"]),
        "synthetic": str(metadata["dataset"]["synthetic"]).lower(),
    }
    store_metadata = {
        "version": metadata["version"],
        "variant": metadata["variant"],
        "dataset": metadata["dataset"]["name"],
        "synthetic": metadata["dataset"]["synthetic"],
        "params": metadata["params"],
        "export_path": str(export_path),
        **{f"metric_{k}": float(v) for k, v in metadata["metrics"].items()},
    }
    with bentoml.models.create(
        metadata["model"], labels=labels, metadata=store_metadata
    ) as ref:
        shutil.copytree(export_path, ref.path, dirs_exist_ok=True)
    return str(ref.tag)


def registered_names() -> set[str]:
    """Names of the models the BentoML store holds at least one version of."""
    import bentoml

    return {m.tag.name for m in bentoml.models.list()}
