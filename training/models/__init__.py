"""Model registry: one module per model, one line per model here.

Every module (except ``translator``, which has its own richer interface) exposes:

* ``NAME``: the model name used on the command line and in the export path.
* ``TASK``: ``"binary"``, ``"multiclass"`` or ``"regression"``.
* ``INPUT``: ``"text"`` (int32 token ids, shape ``(batch, maxlen)``),
  ``"image"`` (float32 pixels in [0, 1], shape ``(batch, H, W, C)``) or
  ``"window"`` (float32, shape ``(batch, n)``).
* ``Config``: a frozen dataclass with the model's hyper-parameters.
* ``DEFAULT_VARIANT`` and ``VARIANTS``: variant name -> builder ``(Config) -> keras.Model``.
* ``PUBLISHED_PARAMS``: variant name -> the seed's ``model.summary()`` total
  (``None`` where the seed publishes no figure and Keras' own count is the reference).
* ``PUBLISHED_RESULTS``: variant name -> the seed's published test metric on the real
  dataset (accuracy; ``None`` where none is on record). ``python -m training report``
  compares real-data exports with it.
* ``build_model(variant, config) -> keras.Model`` (uncompiled).

Every model takes exactly one input whose shape/dtype is the *tensor signature*
of its export, and returns one output (probabilities, or the forecast).
"""

from __future__ import annotations

import importlib
from types import ModuleType

MODEL_NAMES: tuple[str, ...] = ("reuters", "imdb", "cifar", "cosine", "mnist", "translator")


def get_model_module(name: str) -> ModuleType:
    """Returns the module implementing model ``name``.

    Raises:
        KeyError: ``name`` is not a known model.
    """
    if name not in MODEL_NAMES:
        raise KeyError(name)
    return importlib.import_module(f"training.models.{name}")
