"""Result types returned by both clients: small frozen dataclasses, not raw dicts.

Both transports return exactly these, so results compare equal across HTTP and gRPC
(up to float rounding, and `model.variant`, which only HTTP reports).

Typical usage::

    from clients.http import Client

    with Client() as client:
        [result] = client.classify_topic(["oil prices rose"], top_k=3)
        print(result.label, result.probability)          # the best topic
        for score in result.topics:                       # all top_k, best first
            print(f"{score.label:>12} {score.probability:.3f}")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tfserving_api.contract import SENTIMENT_LABELS


@dataclass(frozen=True)
class ModelRef:
    """Which model answered: name, the version that answered (whatever `version=` or
    `label=` asked), and (HTTP only) training variant."""

    name: str
    version: int | None = None
    variant: str | None = None


@dataclass(frozen=True)
class LabelScore:
    """One class and its probability. `label` is None when no label names are known
    (gRPC without label metadata); `index` is always the model's class index."""

    label: str | None
    index: int
    probability: float


@dataclass(frozen=True)
class TopicPrediction:
    """Reuters topics for one text, best first (length `top_k`)."""

    topics: tuple[LabelScore, ...]
    model: ModelRef

    @property
    def label(self) -> str | None:
        """The most likely topic's name."""
        return self.topics[0].label

    @property
    def probability(self) -> float:
        """The most likely topic's probability."""
        return self.topics[0].probability


@dataclass(frozen=True)
class SentimentResult:
    """IMDB sentiment for one text."""

    label: str  # "positive" or "negative"
    probability: float  # of `label`
    positive_probability: float
    model: ModelRef


@dataclass(frozen=True)
class ImageClassification:
    """Class of one image (cifar or mnist); `top` holds the `top_k` best, best first."""

    label: str | None
    index: int
    probability: float
    top: tuple[LabelScore, ...]
    model: ModelRef


@dataclass(frozen=True)
class Forecast:
    """The next `horizon` values of the series after the given window."""

    values: tuple[float, ...]
    model: ModelRef


@dataclass(frozen=True)
class Translation:
    """One translated sentence."""

    source: str
    text: str
    model: ModelRef


@dataclass(frozen=True)
class TensorSpec:
    """A signature input or output. `dtype` is TensorFlow's name (``"float32"``,
    ``"string"``...); `shape` has None for dynamic dimensions, and is None itself for
    unknown rank."""

    dtype: str
    shape: tuple[int | None, ...] | None


@dataclass(frozen=True)
class SignatureInfo:
    """One SavedModel signature."""

    name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    method_name: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """What `metadata(model)` returns: the signatures and, when the server says, the
    label names in class-index order."""

    name: str
    version: int | None
    signatures: Mapping[str, SignatureInfo] = field(default_factory=dict)
    labels: tuple[str, ...] | None = None


@dataclass(frozen=True)
class VersionStatus:
    """State of one model version, as TF Serving reports it; a version that failed to
    load is ``END`` with the failure in `error_code` / `error_message`."""

    version: int
    state: str  # UNKNOWN, START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


@dataclass(frozen=True)
class ModelStatus:
    """What `status(model)` returns: every version the server knows of (loading,
    serving, unloading, unloaded or failed), in ascending version order."""

    name: str
    versions: tuple[VersionStatus, ...]

    @property
    def available(self) -> bool:
        """Whether some version can serve requests."""
        return any(v.state == "AVAILABLE" for v in self.versions)


# Helpers both transports use to turn model outputs into the types above.


def top_scores(
    probabilities: np.ndarray, k: int, labels: Sequence[str] | None
) -> tuple[LabelScore, ...]:
    """The `k` most likely classes of one probability vector, best first."""
    k = max(1, min(int(k), len(probabilities)))
    # A stable sort keeps the lower index first on ties, as argmax does.
    order = np.argsort(-np.asarray(probabilities, dtype=np.float64), kind="stable")[:k]
    return tuple(
        LabelScore(
            labels[i] if labels is not None and i < len(labels) else None,
            int(i),
            float(probabilities[i]),
        )
        for i in order
    )


def sentiment_result(
    probabilities: np.ndarray, label: int | None, model: ModelRef
) -> SentimentResult:
    """A SentimentResult from imdb's `[1 - p, p]` output and its argmax `label`."""
    index = int(np.argmax(probabilities)) if label is None else int(label)
    return SentimentResult(
        label=SENTIMENT_LABELS[index],
        probability=float(probabilities[index]),
        positive_probability=float(probabilities[1]),
        model=model,
    )
