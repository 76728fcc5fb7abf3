"""The names server and clients agree on: signatures, label names, metadata fields.

One home for the strings of ``docs/contracts.md`` that both sides of the wire spell:
the SavedModel signature names, which kind of input each user-level signature takes, the
imdb sentiment labels and the ``GetModelMetadata`` fields. ``training/`` writes these
names into its exports with its own literals; everything that reads them imports them
from here.

Typical usage::

    from tfserving_api.contract import PREDICT_TEXT_SIGNATURE, SENTIMENT_LABELS

    request.model_spec.signature_name = PREDICT_TEXT_SIGNATURE
    label = SENTIMENT_LABELS[int(probabilities.argmax())]   # "negative" / "positive"
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# ---------------------------------------------------------------- signatures

# The tensor signature every export has: token ids, pixels, windows, source ids.
TENSOR_SIGNATURE = "serving_default"
# The user-level signatures: raw text, uint8 images, a window, sentences.
PREDICT_TEXT_SIGNATURE = "predict_text"  # reuters, imdb
PREDICT_IMAGES_SIGNATURE = "predict_images"  # cifar, mnist
FORECAST_SIGNATURE = "forecast"  # cosine: window [None, 10] -> forecast [None]
TRANSLATE_SIGNATURE = "translate"  # translator
# cosine, multi-step: window [None, 10] -> forecast [None, 100]. Not exported or served yet.
FORECAST_STEPS_SIGNATURE = "forecast_steps"

# User-level signature -> the kind of input it takes (the name of its one input).
USER_SIGNATURES: Mapping[str, str] = MappingProxyType(
    {
        PREDICT_TEXT_SIGNATURE: "text",
        PREDICT_IMAGES_SIGNATURE: "image",
        FORECAST_SIGNATURE: "window",
        TRANSLATE_SIGNATURE: "sentences",
    }
)

# ---------------------------------------------------------------- labels

# imdb outputs [1 - p, p]: class index -> name.
SENTIMENT_LABELS: tuple[str, str] = ("negative", "positive")

# ---------------------------------------------------------------- GetModelMetadata

SIGNATURE_DEF_FIELD = "signature_def"  # TF Serving's own
# An extension: the class names in index order, a 1-D DT_STRING TensorProto packed in Any.
LABELS_FIELD = "labels"
