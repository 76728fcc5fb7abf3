"""What every dataset source gives: the :class:`Dataset`, the label names, the text encoding
of ``docs/contracts.md`` (:func:`tokenize`, :func:`encode_texts`, :func:`pad`) and the
user-facing errors. Import them from :mod:`training.data`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PAD, START, OOV, INDEX_FROM = 0, 1, 2, 3

KERAS_SHUFFLE_SEED = 113  # the `seed` default of keras.datasets.{imdb,reuters}.load_data
KERAS_TEST_SPLIT = 0.2  # the `test_split` default of keras.datasets.reuters.load_data
MONTH = 30  # cosine steps per "month"; the last month is the test set

# fmt: off
REUTERS_LABELS = [
    "cocoa", "grain", "veg-oil", "earn", "acq", "wheat", "copper", "housing",
    "money-supply", "coffee", "sugar", "trade", "reserves", "ship", "cotton", "carcass",
    "crude", "nat-gas", "cpi", "money-fx", "interest", "gnp", "meal-feed", "alum",
    "oilseed", "gold", "tin", "strategic-metal", "livestock", "retail", "ipi",
    "iron-steel", "rubber", "heat", "jobs", "lei", "bop", "zinc", "orange", "pet-chem",
    "dlr", "gas", "silver", "wpi", "hog", "lead",
]
CIFAR10_LABELS = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
# fmt: on
LABELS: dict[str, list[str]] = {
    "reuters": REUTERS_LABELS,
    "imdb": ["negative", "positive"],
    "cifar": CIFAR10_LABELS,
    "mnist": [str(d) for d in range(10)],
    "cosine": [],
}
FILE_FORMATS = {
    "imdb": "imdb.npz as downloaded by keras.datasets.imdb (x_train, y_train, x_test, "
    "y_test: lists of word ranks and 0/1 labels; or x, y split 80/20)",
    "reuters": "reuters.npz as downloaded by keras.datasets.reuters (x, y: lists of word "
    "ranks and topic ids 0-45; or x_train, y_train, x_test, y_test)",
    "mnist": "mnist.npz as downloaded by keras.datasets.mnist (x_train, x_test: uint8 "
    "(N, 28, 28); y_train, y_test: digits 0-9)",
    "cifar": "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
    "(data_batch_1..5, test_batch, batches.meta) or its extracted folder",
    "cosine": "a .csv or .npy file with one numeric column",
}


class DataError(Exception):
    """One-line, user-facing message (names the file and the expected format)."""


class DatasetUnavailable(DataError):
    """The real dataset could not be downloaded (offline)."""


def short_reason(error: BaseException) -> str:
    # Keras says "URL fetch failure on <url>: <errno> -- <reason>"; the reason is enough.
    reason = one_line(str(error).split(" -- ")[-1]) or type(error).__name__
    return reason if len(reason) <= 120 else reason[:117] + "..."


def one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Dataset:
    """Train and test tensors of one model, ready for ``model.fit``.

    Text ``x`` is int32 ``(N, maxlen)`` right-padded ids, images uint8 ``(N, H, W, C)``,
    cosine float32 ``(N, window)``; ``y`` is int64 class ids, or float32 next values
    for cosine.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # "keras.datasets.imdb", the --data-path file, or "synthetic"
    synthetic: bool
    labels: list[str]  # class names by id; [] for cosine
    word_index: dict[str, int] | None = None  # text only: word -> rank (1 = most frequent)
    # Always has "warnings" (list[str]); cosine adds "series", "time", "test_start",
    # "window" and "month": x_test[j] predicts series[test_start + j].
    extra: dict[str, Any] = field(default_factory=dict)


def tokenize(text: str) -> list[str]:
    """Splits raw text into words as the exported ``predict_text`` signature does.

    ``str.lower`` is Unicode lowercasing like ``tf.strings.lower(encoding="utf-8")``, so
    e.g. the Kelvin sign becomes ``k`` in both; anything else outside ``[a-z0-9']`` is a
    separator.

    Args:
        text: raw text, e.g. an IMDB review with ``<br />`` line breaks.

    Returns:
        The words, in order.
    """
    return _NOT_WORD_CHAR.sub(" ", text.lower().replace("<br />", " ")).split()

_NOT_WORD_CHAR = re.compile(r"[^a-z0-9']")


def encode_texts(
    texts: Iterable[str], word_index: Mapping[str, int], vocab_size: int, maxlen: int
) -> np.ndarray:
    """Encodes raw texts exactly like ``keras.datasets.*.load_data(num_words=vocab_size)``.

    Args:
        texts: raw texts.
        word_index: word -> rank (1 = most frequent), as ``get_word_index()`` returns.
        vocab_size: ids ``>= vocab_size`` become ``OOV``.
        maxlen: length of every encoded row.

    Returns:
        int32 ``(N, maxlen)``: ``[START, rank + INDEX_FROM, ...]``, unknown words as
        ``OOV``, truncated at the end and right-padded with ``PAD``.
    """
    sequences = []
    for text in texts:
        ids = [START]
        for word in tokenize(text):
            rank = word_index.get(word)
            word_id = OOV if rank is None else rank + INDEX_FROM
            ids.append(word_id if INDEX_FROM <= word_id < vocab_size else OOV)
        sequences.append(ids)
    return pad(sequences, maxlen)


def pad(sequences: Iterable[Sequence[int]], maxlen: int) -> np.ndarray:
    """Truncates at the end and right-pads id sequences with ``PAD``.

    Args:
        sequences: id sequences (lists or 1-D arrays), already starting with ``START``.
        maxlen: length of every row.

    Returns:
        int32 ``(N, maxlen)``.
    """
    if maxlen < 1:
        raise ValueError(f"maxlen must be >= 1, got {maxlen}")
    sequences = list(sequences)
    out = np.full((len(sequences), maxlen), PAD, dtype=np.int32)
    for row, ids in zip(out, sequences):
        ids = ids[:maxlen]
        row[: len(ids)] = ids
    return out


def placeholder_word_index(vocab_size: int) -> dict[str, int]:
    return {f"w{rank}": rank for rank in range(1, vocab_size - INDEX_FROM)}


def text_extra(vocab_size: int, maxlen: int, warnings: list[str]) -> dict[str, Any]:
    return {"vocab_size": vocab_size, "maxlen": maxlen, "warnings": warnings}
