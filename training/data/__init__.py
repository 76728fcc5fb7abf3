"""Datasets for the reuters, imdb, cifar, mnist and cosine models.

Each dataset comes from one of three sources: the real one through
``keras.datasets`` (downloaded and cached by Keras), a local file in the format
Keras downloads (``--data-path``, read by :mod:`training.data.files`), or a small
synthetic set with learnable structure (``--synthetic``, :mod:`training.data.synthetic`)
for offline runs and tests. All three give the same shapes and dtypes
(:mod:`training.data.contract`), and text is encoded by the conventions in
``docs/contracts.md``.

Typical usage:

    data = load_dataset("imdb", quick=True, maxlen=500)
    model.fit(data.x_train, data.y_train, validation_data=(data.x_test, data.y_test))
    print(data.labels[int(model.predict(data.x_test[:1]).argmax())])
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from training.data.contract import (
    CIFAR10_LABELS,
    FILE_FORMATS,
    INDEX_FROM,
    KERAS_SHUFFLE_SEED,
    KERAS_TEST_SPLIT,
    LABELS,
    MONTH,
    OOV,
    PAD,
    REUTERS_LABELS,
    START,
    DataError,
    Dataset,
    DatasetUnavailable,
    encode_texts,
    pad,
    short_reason,
    text_extra,
    tokenize,
)
from training.data.files import (
    file_error,
    read_cifar_file,
    read_mnist_file,
    read_series_file,
    read_text_file,
)
from training.data.synthetic import (
    COSINE_NOISE_STD,
    COSINE_POINTS,
    FULL_SYNTHETIC,
    QUICK_SYNTHETIC,
    SYNTHETIC_TEXT_MAX_WORDS,
    cosine_series,
    synthetic_dataset,
)

__all__ = [
    "CIFAR10_LABELS", "COSINE_NOISE_STD", "COSINE_POINTS", "DATASET_NAMES", "DEFAULT_MAXLEN",
    "DOWNLOAD_TIMEOUT_S", "FILE_FORMATS", "FULL_SYNTHETIC", "INDEX_FROM", "KERAS_SHUFFLE_SEED",
    "KERAS_TEST_SPLIT", "LABELS", "MONTH", "OOV", "PAD", "QUICK_REAL", "QUICK_SYNTHETIC",
    "REUTERS_LABELS", "START", "SYNTHETIC_TEXT_MAX_WORDS", "DataError", "Dataset",
    "DatasetUnavailable", "cosine_series", "download_timeout", "encode_texts", "load_dataset",
    "pad", "tokenize",
]  # fmt: skip

DATASET_NAMES: tuple[str, ...] = ("reuters", "imdb", "cifar", "mnist", "cosine")
DEFAULT_MAXLEN = {"reuters": 200, "imdb": 500}
DOWNLOAD_TIMEOUT_S = 15.0  # Keras' get_file has no timeout of its own
QUICK_REAL = (4000, 1000)  # (train, test) subset sizes of real data under --quick
_KERAS_NAMES = {"reuters": "reuters", "imdb": "imdb", "cifar": "cifar10", "mnist": "mnist"}


def load_dataset(
    name: str,
    *,
    synthetic: bool = False,
    data_path: str | Path | None = None,
    quick: bool = False,
    seed: int = 0,
    vocab_size: int = 10000,
    maxlen: int | None = None,
    window: int = 10,
    test_split: float | None = None,
    max_length: int | None = None,
    word_index_path: str | Path | None = None,
) -> Dataset:
    """Loads the train and test data of one model.

    Args:
        name: one of ``DATASET_NAMES``.
        synthetic: generate a small learnable dataset instead of the real one.
        data_path: read the real dataset from this local file instead of downloading it
            (formats in ``FILE_FORMATS``; text also reads a sibling
            ``<name>_word_index.json`` when present).
        quick: a 4000/1000 random subset of real data, 1024/256 synthetic samples.
        seed: seeds the synthetic data, the quick subset and the cosine noise.
        vocab_size: text only: ids ``>= vocab_size`` become ``OOV``.
        maxlen: text only: row length; defaults to ``DEFAULT_MAXLEN[name]``.
        window: cosine only: past values per sample.
        test_split: reuters only: the test share of the newswires (default
            ``KERAS_TEST_SPLIT``), as ``keras.datasets.reuters.load_data(test_split=...)``.
        max_length: text only: drop sequences of ``max_length`` ids or more (``START``
            included) before splitting, as ``load_data(maxlen=...)`` does.
        word_index_path: text with ``data_path`` only: the ``<name>_word_index.json`` to
            read instead of the one next to ``data_path``.

    Returns:
        The dataset; ``extra["warnings"]`` lists what the caller should show the user.

    Raises:
        ValueError: unknown ``name``, contradictory or out-of-range arguments.
        DatasetUnavailable: the real dataset could not be downloaded.
        DataError: ``data_path`` is missing or not in the expected format.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")
    if synthetic and data_path is not None:
        raise ValueError("pass either synthetic=True or data_path, not both")
    rng = np.random.default_rng(seed)
    if name == "cosine":
        return _load_cosine(data_path, synthetic, seed, window)
    maxlen = maxlen or DEFAULT_MAXLEN.get(name)
    if synthetic:
        return synthetic_dataset(name, rng, quick, vocab_size, maxlen)

    warnings: list[str] = []
    word_index = None
    if data_path is not None:
        path = Path(data_path)
        source = str(path)
        if name in ("imdb", "reuters"):
            splits, word_index = read_text_file(
                path, name, vocab_size, warnings, test_split, max_length, word_index_path
            )
        elif name == "mnist":
            splits = read_mnist_file(path)
        else:
            splits = read_cifar_file(path)
    else:
        source = f"keras.datasets.{_KERAS_NAMES[name]}"
        splits, word_index = _download(name, vocab_size, test_split, max_length)
    x_train, y_train, x_test, y_test = splits
    if quick:
        x_train, y_train = _random_subset(x_train, y_train, QUICK_REAL[0], rng)
        x_test, y_test = _random_subset(x_test, y_test, QUICK_REAL[1], rng)
    if word_index is not None:
        x_train, x_test = pad(x_train, maxlen), pad(x_test, maxlen)
        extra = text_extra(vocab_size, maxlen, warnings)
    else:
        extra = {"warnings": warnings}
    return Dataset(
        name,
        x_train,
        y_train.astype(np.int64),
        x_test,
        y_test.astype(np.int64),
        source=source,
        synthetic=False,
        labels=list(LABELS[name]),
        word_index=word_index,
        extra=extra,
    )


def _random_subset(x: Any, y: np.ndarray, size: int, rng: np.random.Generator):
    if len(y) <= size:
        return x, y
    keep = rng.permutation(len(y))[:size]
    return (x[keep] if isinstance(x, np.ndarray) else [x[i] for i in keep]), y[keep]


@contextlib.contextmanager
def download_timeout(seconds: float) -> Iterator[None]:
    """Sockets opened inside time out after ``seconds``: Keras' ``get_file`` (urlretrieve)
    takes no timeout, the socket default is the only knob."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(name: str, vocab_size: int, test_split=None, max_length=None):
    import keras  # deferred: TensorFlow takes seconds to import and files don't need it

    try:
        with download_timeout(DOWNLOAD_TIMEOUT_S):
            word_index = None
            if name == "imdb":
                train, test = keras.datasets.imdb.load_data(
                    num_words=vocab_size, maxlen=max_length
                )
                word_index = keras.datasets.imdb.get_word_index()
            elif name == "reuters":
                train, test = keras.datasets.reuters.load_data(
                    num_words=vocab_size,
                    test_split=test_split or KERAS_TEST_SPLIT,
                    maxlen=max_length,
                )
                word_index = keras.datasets.reuters.get_word_index()
            elif name == "mnist":
                train, test = keras.datasets.mnist.load_data()
            else:
                train, test = keras.datasets.cifar10.load_data()
    except Exception as e:  # noqa: BLE001 - get_file raises bare Exception on URLError
        raise DatasetUnavailable(
            f"could not download {name} ({short_reason(e)}); "
            f"pass --data-path FILE ({FILE_FORMATS[name]}) or --synthetic"
        ) from e
    (x_train, y_train), (x_test, y_test) = train, test
    if name == "mnist":
        x_train, x_test = x_train[..., np.newaxis], x_test[..., np.newaxis]
    return (x_train, np.reshape(y_train, -1), x_test, np.reshape(y_test, -1)), word_index


def _load_cosine(data_path, synthetic: bool, seed: int, window: int) -> Dataset:
    if data_path is not None:
        series, source = read_series_file(Path(data_path)), str(data_path)
        if len(series) <= window + MONTH:
            raise file_error(
                Path(data_path), f"{len(series)} values, need more than window + {MONTH}", "cosine"
            )
    else:
        series = cosine_series(seed)
        source = "synthetic" if synthetic else "generated 20*cos(2*pi*t) + noise (tutorial)"
    # Sample i is series[i : i + window] -> series[i + window]; the targets of the last
    # month are the test set, their windows may reach back into the training months.
    windows = np.lib.stride_tricks.sliding_window_view(series[:-1], window).astype(np.float32)
    targets = series[window:].astype(np.float32)
    test_start = len(series) - MONTH
    first_test = test_start - window
    extra = {
        "series": series,
        "time": (np.arange(len(series)) / MONTH).astype(np.float32),
        "test_start": test_start,
        "window": window,
        "month": MONTH,
        "warnings": [],
    }
    return Dataset(
        "cosine",
        windows[:first_test],
        targets[:first_test],
        windows[first_test:],
        targets[first_test:],
        source=source,
        synthetic=synthetic,
        labels=[],
        extra=extra,
    )
