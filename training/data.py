"""Datasets for the reuters, imdb, cifar, mnist and cosine models.

Each dataset comes from one of three sources: the real one through
``keras.datasets`` (downloaded and cached by Keras), a local file in the format
Keras downloads (``--data-path``), or a small synthetic set with learnable
structure (``--synthetic``) for offline runs and tests. All three give the same
shapes and dtypes, and text is encoded by the conventions in
``docs/contracts.md``.

Typical usage:

    data = load_dataset("imdb", quick=True, maxlen=500)
    model.fit(data.x_train, data.y_train, validation_data=(data.x_test, data.y_test))
    print(data.labels[int(model.predict(data.x_test[:1]).argmax())])
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
import socket
import tarfile
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PAD, START, OOV, INDEX_FROM = 0, 1, 2, 3

DATASET_NAMES: tuple[str, ...] = ("reuters", "imdb", "cifar", "mnist", "cosine")
DEFAULT_MAXLEN = {"reuters": 200, "imdb": 500}
DOWNLOAD_TIMEOUT_S = 15.0  # Keras' get_file has no timeout of its own
KERAS_SHUFFLE_SEED = 113  # the `seed` default of keras.datasets.{imdb,reuters}.load_data
KERAS_TEST_SPLIT = 0.2  # the `test_split` default of keras.datasets.reuters.load_data
QUICK_REAL = (4000, 1000)  # (train, test) subset sizes of real data under --quick
QUICK_SYNTHETIC = (1024, 256)
FULL_SYNTHETIC = (8000, 2000)
SYNTHETIC_TEXT_MAX_WORDS = 100  # short, so the quick profile's few LSTM steps learn them
MONTH = 30  # cosine steps per "month"; the last month is the test set
COSINE_POINTS = 361
COSINE_NOISE_STD = 2.0

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
_KERAS_NAMES = {"reuters": "reuters", "imdb": "imdb", "cifar": "cifar10", "mnist": "mnist"}


class DataError(Exception):
    """One-line, user-facing message (names the file and the expected format)."""


class DatasetUnavailable(DataError):
    """The real dataset could not be downloaded (offline)."""


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
        return _synthetic_dataset(name, rng, quick, vocab_size, maxlen)

    warnings: list[str] = []
    word_index = None
    if data_path is not None:
        path = Path(data_path)
        source = str(path)
        if name in ("imdb", "reuters"):
            splits, word_index = _read_text_file(
                path, name, vocab_size, warnings, test_split, max_length, word_index_path
            )
        elif name == "mnist":
            splits = _read_mnist_file(path)
        else:
            splits = _read_cifar_file(path)
    else:
        source = f"keras.datasets.{_KERAS_NAMES[name]}"
        splits, word_index = _download(name, vocab_size, test_split, max_length)
    x_train, y_train, x_test, y_test = splits
    if quick:
        x_train, y_train = _random_subset(x_train, y_train, QUICK_REAL[0], rng)
        x_test, y_test = _random_subset(x_test, y_test, QUICK_REAL[1], rng)
    if word_index is not None:
        x_train, x_test = pad(x_train, maxlen), pad(x_test, maxlen)
        extra = _text_extra(vocab_size, maxlen, warnings)
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


def _text_extra(vocab_size: int, maxlen: int, warnings: list[str]) -> dict[str, Any]:
    return {"vocab_size": vocab_size, "maxlen": maxlen, "warnings": warnings}


def _random_subset(x: Any, y: np.ndarray, size: int, rng: np.random.Generator):
    if len(y) <= size:
        return x, y
    keep = rng.permutation(len(y))[:size]
    return (x[keep] if isinstance(x, np.ndarray) else [x[i] for i in keep]), y[keep]


# --- real data through keras.datasets -----------------------------------------------------


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(name: str, vocab_size: int, test_split=None, max_length=None):
    import keras  # deferred: TensorFlow takes seconds to import and files don't need it

    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
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
            f"could not download {name} ({_short_reason(e)}); "
            f"pass --data-path FILE ({FILE_FORMATS[name]}) or --synthetic"
        ) from e
    (x_train, y_train), (x_test, y_test) = train, test
    if name == "mnist":
        x_train, x_test = x_train[..., np.newaxis], x_test[..., np.newaxis]
    return (x_train, np.reshape(y_train, -1), x_test, np.reshape(y_test, -1)), word_index


def _short_reason(error: BaseException) -> str:
    # Keras says "URL fetch failure on <url>: <errno> -- <reason>"; the reason is enough.
    reason = _one_line(str(error).split(" -- ")[-1]) or type(error).__name__
    return reason if len(reason) <= 120 else reason[:117] + "..."


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- local files (--data-path) ------------------------------------------------------------


def _file_error(path: Path, what: str, name: str) -> DataError:
    return DataError(_one_line(f"{path}: {what}; expected {FILE_FORMATS[name]}"))


def _check_file(path: Path, name: str, suffixes: tuple[str, ...], allow_dir=False) -> None:
    if not path.exists():
        raise _file_error(path, "no such file", name)
    if allow_dir and path.is_dir():
        return
    if not path.is_file():
        raise _file_error(path, "not a file", name)
    if not path.name.lower().endswith(suffixes):
        raise _file_error(path, f"wrong extension (want {' or '.join(suffixes)})", name)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists and bytes, refusing any other global (no code runs)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _read_npy(stream: io.BytesIO) -> np.ndarray:
    try:
        return np.lib.format.read_array(stream, allow_pickle=False)
    except ValueError:  # an object array (ragged sequences) is stored as a pickle
        stream.seek(0)
        major, _ = np.lib.format.read_magic(stream)
        if major == 1:
            np.lib.format.read_array_header_1_0(stream)
        else:  # 2.0 and 3.0 share the header length layout
            np.lib.format.read_array_header_2_0(stream)
        array = _NumpyOnlyUnpickler(stream).load()
        if not isinstance(array, np.ndarray):
            raise ValueError("member is not an array")
        return array


def _read_npz(path: Path, name: str, keys: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Reads the first of the alternative key sets ``keys`` that the archive holds."""
    _check_file(path, name, (".npz",))
    try:
        with zipfile.ZipFile(path) as archive:
            members = {m[: -len(".npy")]: m for m in archive.namelist() if m.endswith(".npy")}
            wanted = next((k for k in keys if set(k) <= members.keys()), None)
            if wanted is None:
                found = ", ".join(sorted(members)) or "none"
                raise _file_error(path, f"missing arrays (found: {found})", name)
            return {k: _read_npy(io.BytesIO(archive.read(members[k]))) for k in wanted}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, header and pickle errors all mean "corrupt"
        raise _file_error(path, f"not a readable .npz archive ({_short_reason(e)})", name)


def _class_ids(y: np.ndarray, n: int, num_classes: int, path: Path, name: str, key: str):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n or (n and y.dtype.kind not in "iub"):
        raise _file_error(path, f"{key} must be {n} integer labels, got {y.dtype} {y.shape}", name)
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise _file_error(path, f"{key} has labels outside 0..{num_classes - 1}", name)
    return y.astype(np.int64)


def _word_rank_lists(x: np.ndarray, path: Path, name: str, key: str) -> list[np.ndarray]:
    if x.dtype.kind in "iu" and x.ndim == 2:  # a dense matrix: 0 is padding
        return [row[row != 0].astype(np.int64) for row in x]
    if x.dtype != object or x.ndim != 1:
        what = f"{key} must be an array of id lists, got {x.dtype} {x.shape}"
        raise _file_error(path, what, name)
    sequences = []
    for i, seq in enumerate(x):
        ids = np.asarray(seq)
        if ids.size == 0:
            ids = ids.astype(np.int64)
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or (ids.size and ids.min() < 0):
            raise _file_error(path, f"{key}[{i}] is not a list of word ranks", name)
        sequences.append(ids.astype(np.int64))
    return sequences


def _read_text_file(
    path: Path,
    name: str,
    vocab_size: int,
    warnings: list[str],
    test_split: float | None = None,
    max_length: int | None = None,
    word_index_path: str | Path | None = None,
):
    """Replays what keras.datasets.{imdb,reuters}.load_data does with the downloaded file."""
    arrays = _read_npz(path, name, [("x_train", "y_train", "x_test", "y_test"), ("x", "y")])
    num_classes = len(LABELS[name])
    parts = {}
    for split in ("_train", "_test") if "x_train" in arrays else ("",):
        x = _word_rank_lists(arrays["x" + split], path, name, "x" + split)
        y = _class_ids(arrays["y" + split], len(x), num_classes, path, name, "y" + split)
        parts[split] = x, y

    if _already_encoded(x for x, _ in parts.values()):
        warnings.append(f"{path}: sequences already start with START={START}; used as encoded")
        encode = lambda ids: np.where(ids < vocab_size, ids, OOV)  # noqa: E731
    else:
        encode = lambda ids: np.concatenate(  # noqa: E731
            [[START], np.where(ids + INDEX_FROM < vocab_size, ids + INDEX_FROM, OOV)]
        )
    keras_rng = np.random.RandomState(KERAS_SHUFFLE_SEED)  # same shuffle as keras
    for split, (x, y) in parts.items():
        order = np.arange(len(y))
        keras_rng.shuffle(order)
        x, y = [encode(x[i]) for i in order], y[order]
        if max_length:  # load_data(maxlen=...) keeps sequences shorter than maxlen
            keep = [i for i, ids in enumerate(x) if len(ids) < max_length]
            x, y = [x[i] for i in keep], y[keep]
        parts[split] = x, y
    if "" in parts:
        x, y = parts.pop("")
        cut = int(len(y) * (1 - (test_split or KERAS_TEST_SPLIT)))
        parts = {"_train": (x[:cut], y[:cut]), "_test": (x[cut:], y[cut:])}
    splits = (*parts["_train"], *parts["_test"])
    index_path = Path(word_index_path) if word_index_path else None
    return splits, _read_word_index(path, name, vocab_size, warnings, index_path)


def _already_encoded(splits: Iterable[list[np.ndarray]]) -> bool:
    # Raw ranks use 1 ("the") and 3 everywhere; encoded rows only start with START=1
    # and never contain 3 (= rank 0), so saved load_data() output is told apart.
    sequences = [ids for x in splits for ids in x if ids.size]
    return bool(sequences) and all(
        ids[0] == START and not np.isin(ids[1:], (START, INDEX_FROM)).any() for ids in sequences
    )


def _read_word_index(
    path: Path, name: str, vocab_size: int, warnings: list[str], index_path: Path | None = None
):
    if index_path is not None:
        if not index_path.is_file():
            raise DataError(f"{index_path}: no such file (--word-index)")
    else:
        index_path = path.with_name(f"{name}_word_index.json")
    if not index_path.is_file():
        warnings.append(
            f"{index_path} not found: using placeholder words w1..w{vocab_size - INDEX_FROM - 1}, "
            "so predict_text will map real words to OOV"
        )
        return _placeholder_word_index(vocab_size)
    expected = f"{name}_word_index.json as downloaded by keras.datasets.{name}.get_word_index()"
    try:
        word_index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(_one_line(f"{index_path}: not readable JSON ({e}); expected {expected}"))
    if not isinstance(word_index, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 1 for k, v in word_index.items()
    ):
        raise DataError(f"{index_path}: not a word -> rank (int >= 1) object; expected {expected}")
    return word_index


def _placeholder_word_index(vocab_size: int) -> dict[str, int]:
    return {f"w{rank}": rank for rank in range(1, vocab_size - INDEX_FROM)}


def _read_mnist_file(path: Path):
    keys = ("x_train", "y_train", "x_test", "y_test")
    arrays = _read_npz(path, "mnist", [keys])
    splits = []
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.ndim == 4 and x.shape[3] == 1:
            x = x[..., 0]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or (x.size and x.dtype.kind not in "iu"):
            raise _file_error(path, f"x_{split} is {x.dtype} {x.shape}", "mnist")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise _file_error(path, f"x_{split} has pixels outside 0..255", "mnist")
        y = _class_ids(arrays[f"y_{split}"], len(x), 10, path, "mnist", f"y_{split}")
        splits += [x.astype(np.uint8)[..., np.newaxis], y]
    return tuple(splits)


def _read_cifar_file(path: Path):
    _check_file(path, "cifar", (".tar.gz", ".tgz", ".tar"), allow_dir=True)
    try:
        batches = _cifar_members(path)
    except Exception as e:  # noqa: BLE001 - tar and pickle errors all mean "corrupt"
        raise _file_error(path, f"not a readable CIFAR-10 archive ({_short_reason(e)})", "cifar")
    train_names = sorted(
        (n for n in batches if re.fullmatch(r"data_batch_\d+", n)), key=lambda n: int(n[11:])
    )
    if not train_names or "test_batch" not in batches:
        found = ", ".join(sorted(batches)) or "nothing"
        raise _file_error(path, f"missing data_batch_N or test_batch (found: {found})", "cifar")
    meta = batches.get("batches.meta", {})
    names = [n.decode() if isinstance(n, bytes) else n for n in meta.get("label_names", [])]
    if names and len(names) != 10:
        raise _file_error(path, f"batches.meta names {len(names)} classes, not 10", "cifar")
    xs, ys = {}, {}
    for split, members in (("train", train_names), ("test", ["test_batch"])):
        images, labels = [], []
        for member in members:
            data = np.asarray(batches[member].get("data", []))
            y = batches[member].get("labels", [])
            if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
                raise _file_error(path, f"{member} data is {data.dtype} {data.shape}", "cifar")
            images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels.append(_class_ids(np.asarray(y), len(data), 10, path, "cifar", member))
        xs[split], ys[split] = np.concatenate(images), np.concatenate(labels)
    return xs["train"], ys["train"], xs["test"], ys["test"]


def _cifar_members(path: Path) -> dict[str, dict[str, Any]]:
    """Unpickled batches by file name, read in memory (nothing is extracted to disk)."""
    wanted = re.compile(r"data_batch_\d+|test_batch|batches\.meta")
    raw: dict[str, bytes] = {}
    if path.is_dir():
        for file in path.rglob("*"):
            if file.is_file() and wanted.fullmatch(file.name):
                raw[file.name] = file.read_bytes()
    else:
        with tarfile.open(path, "r:*") as tar:
            for member in tar.getmembers():
                basename = member.name.rsplit("/", 1)[-1]
                if member.isfile() and wanted.fullmatch(basename):
                    raw[basename] = tar.extractfile(member).read()
    batches = {}
    for name, blob in raw.items():
        # The batches were pickled by Python 2: str fields come back as bytes.
        batch = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="bytes").load()
        if not isinstance(batch, dict):
            raise ValueError(f"{name} is not a dict")
        batches[name] = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
    return batches


def _read_series_file(path: Path) -> np.ndarray:
    _check_file(path, "cosine", (".csv", ".npy"))
    if path.suffix.lower() == ".npy":
        try:
            series = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise _file_error(path, f"not a readable .npy file ({_short_reason(e)})", "cosine")
        if series.ndim == 2 and series.shape[1] == 1:
            series = series[:, 0]
        if series.ndim != 1 or series.dtype.kind not in "iuf":
            raise _file_error(path, f"array is {series.dtype} {series.shape}", "cosine")
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise _file_error(path, f"not a readable text file ({_short_reason(e)})", "cosine")
        values = []
        for number, line in enumerate(lines, start=1):
            cells = line.strip().split(",")
            if cells == [""]:
                continue
            if len(cells) != 1:
                raise _file_error(path, f"line {number} has {len(cells)} columns", "cosine")
            try:
                values.append(float(cells[0]))
            except ValueError:
                if values or number > 1:  # only the first line may be a header
                    what = f"line {number}: {cells[0]!r} is not a number"
                    raise _file_error(path, what, "cosine")
        series = np.asarray(values)
    if not np.isfinite(series).all():
        raise _file_error(path, "series has NaN or infinite values", "cosine")
    return series.astype(np.float32)


# --- cosine -------------------------------------------------------------------------------


def cosine_series(seed: int = 0, points: int = COSINE_POINTS) -> np.ndarray:
    """The tutorial's series: ``20 cos(2 pi t)``, ``t = i / 30``, noisy second half-months.

    Args:
        seed: seeds the Gaussian noise (std ``COSINE_NOISE_STD``).
        points: series length (361: twelve 30-step months and one more point).

    Returns:
        float32 ``(points,)``.
    """
    steps = np.arange(points)
    series = 20.0 * np.cos(2.0 * np.pi * steps / MONTH)
    noisy = steps % MONTH >= MONTH // 2
    series[noisy] += np.random.default_rng(seed).normal(0.0, COSINE_NOISE_STD, noisy.sum())
    return series.astype(np.float32)


def _load_cosine(data_path, synthetic: bool, seed: int, window: int) -> Dataset:
    if data_path is not None:
        series, source = _read_series_file(Path(data_path)), str(data_path)
        if len(series) <= window + MONTH:
            raise _file_error(
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


# --- synthetic data -----------------------------------------------------------------------


def _synthetic_dataset(name, rng, quick, vocab_size, maxlen) -> Dataset:
    n_train, n_test = QUICK_SYNTHETIC if quick else FULL_SYNTHETIC
    word_index = None
    if name in ("imdb", "reuters"):
        keywords = _topic_keywords(name, vocab_size, rng)
        x_train, y_train = _synthetic_texts(keywords, n_train, vocab_size, maxlen, rng, True)
        x_test, y_test = _synthetic_texts(keywords, n_test, vocab_size, maxlen, rng, False)
        word_index = _placeholder_word_index(vocab_size)
        extra = _text_extra(vocab_size, maxlen, [])
    else:
        make = _synthetic_cifar if name == "cifar" else _synthetic_mnist
        (x_train, y_train), (x_test, y_test) = make(n_train, rng), make(n_test, rng)
        extra = {"warnings": []}
    return Dataset(
        name,
        x_train,
        y_train,
        x_test,
        y_test,
        source="synthetic",
        synthetic=True,
        labels=list(LABELS[name]),
        word_index=word_index,
        extra=extra,
    )


def _topic_keywords(name: str, vocab_size: int, rng: np.random.Generator) -> np.ndarray:
    """(classes, k) ids that decide the class, taken from the most frequent ranks."""
    classes, per_class = (2, 25) if name == "imdb" else (46, 5)
    first_filler = INDEX_FROM + 1 + classes * per_class
    if vocab_size < first_filler + 100:
        raise ValueError(f"vocab_size must be >= {first_filler + 100} for synthetic {name}")
    return (INDEX_FROM + 1 + rng.permutation(classes * per_class)).reshape(classes, per_class)


# Roughly how many of 10,000 Reuters training newswires have each topic (earn 35%, acq 22%).
# fmt: off
_REUTERS_TOPIC_SHARES = [
    61, 480, 82, 3512, 2167, 19, 53, 18, 155, 138, 127, 434, 54, 191, 29, 22,
    494, 43, 73, 610, 299, 111, 17, 46, 69, 102, 27, 17, 53, 21, 50, 43,
    36, 12, 56, 11, 54, 21, 21, 27, 40, 33, 14, 23, 13, 20,
]
# fmt: on


def _synthetic_texts(keywords, n, vocab_size, maxlen, rng, every_class):
    """Short newswires or reviews: about half topic keywords, half common filler words.

    The keywords are dense so that the quick profile's few LSTM steps can learn them.
    """
    classes, per_class = keywords.shape
    if maxlen < 8:
        raise ValueError(f"maxlen must be >= 8 for synthetic text, got {maxlen}")
    # Reuters topics as imbalanced as the real ones; the test split keeps that prior.
    weights = np.asarray(_REUTERS_TOPIC_SHARES if classes == 46 else np.ones(classes), float)
    y = rng.choice(classes, size=n, p=weights / weights.sum())
    if every_class:
        y[: min(n, classes)] = np.arange(min(n, classes))
        y = rng.permutation(y)

    body = maxlen - 1  # after START; no row is truncated, so every keyword is kept
    longest = min(body, SYNTHETIC_TEXT_MAX_WORDS)
    lengths = rng.integers(min(16, longest), longest + 1, size=n)
    first_filler = int(keywords.max()) + 1
    # Filler skewed to frequent ranks, as in real text.
    ids = first_filler + (rng.random((n, body)) ** 3 * (vocab_size - first_filler)).astype(int)
    rows = np.arange(n)[:, None]

    def plant(topic: np.ndarray, slots: int, count: np.ndarray) -> None:
        positions = (rng.random((n, slots)) * lengths[:, None]).astype(int)
        words = keywords[topic[:, None], rng.integers(0, per_class, (n, slots))]
        used = np.arange(slots)[None, :] < count[:, None]
        ids[np.broadcast_to(rows, used.shape)[used], positions[used]] = words[used]

    other = (y + rng.integers(1, classes, n)) % classes
    plant(other, 2, rng.integers(0, 3, n) // 2)  # a few misleading keywords
    plant(y, 6 + longest // 2, rng.integers(2, 7, n) + lengths // 2)
    ids[np.arange(body)[None, :] >= lengths[:, None]] = PAD
    x = np.concatenate([np.full((n, 1), START), ids], axis=1).astype(np.int32)
    return x, y.astype(np.int64)


def _synthetic_cifar(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Class = colour x stripe direction and frequency; pairs of classes share a hue."""
    y = rng.integers(0, 10, n)
    hue = 2 * np.pi * (np.arange(10) // 2) / 5
    colours = 128 + 90 * np.cos(hue[:, None] + np.array([0.0, 2.1, 4.2]))  # (10, 3) RGB
    angles = np.pi * np.arange(10) / 10 + np.pi / 2 * (np.arange(10) % 2)
    frequency = 2.0 + np.arange(10) % 3
    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731 - float64 is 2x slower here
    yy, xx = f32(np.mgrid[0:32, 0:32] / 32.0)
    cos, sin = f32(np.cos(angles[y])[:, None, None]), f32(np.sin(angles[y])[:, None, None])
    phase = f32(rng.uniform(-0.6, 0.6, (n, 1, 1)))
    stripes = np.sin(f32(2 * np.pi * frequency[y])[:, None, None] * (xx * cos + yy * sin) + phase)
    colour = (colours[y] + rng.normal(0, 18, (n, 3))) * rng.uniform(0.8, 1.2, (n, 1))
    images = (0.725 + 0.275 * stripes[..., None]) * f32(colour[:, None, None, :])
    images += 14 * rng.standard_normal(images.shape, dtype=np.float32)
    return np.clip(images, 0, 255).astype(np.uint8), y.astype(np.int64)


# Seven-segment strokes a..g per digit; boxes are (top, bottom, left, right) at thickness t.
# fmt: off
_SEGMENTS = {
    "a": lambda t: (4, 4 + t, 8, 20), "b": lambda t: (4, 14, 20 - t, 20),
    "c": lambda t: (14, 24, 20 - t, 20), "d": lambda t: (24 - t, 24, 8, 20),
    "e": lambda t: (14, 24, 8, 8 + t), "f": lambda t: (4, 14, 8, 8 + t),
    "g": lambda t: (14 - t // 2, 14 - t // 2 + t, 8, 20),
}
_DIGIT_SEGMENTS = [
    "abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg",
]
# fmt: on


def _synthetic_mnist(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Seven-segment digits, shifted, of varying thickness and ink, with noise."""
    templates = np.zeros((10, 2, 28, 28))
    for digit, segments in enumerate(_DIGIT_SEGMENTS):
        for thickness in (2, 3):
            for segment in segments:
                top, bottom, left, right = _SEGMENTS[segment](thickness)
                templates[digit, thickness - 2, top:bottom, left:right] = 1.0
    y = rng.integers(0, 10, n)
    images = templates[y, rng.integers(0, 2, n)] * rng.uniform(170, 255, (n, 1, 1))
    shifts = np.clip(np.round(rng.normal(0, 1.0, (n, 2))), -3, 3).astype(int)
    for i, (dy, dx) in enumerate(shifts):  # margins are >= 4 pixels, so nothing wraps
        images[i] = np.roll(images[i], (dy, dx), axis=(0, 1))
    images += rng.normal(0, 20, images.shape)
    images = np.clip(images, 0, 255).astype(np.uint8)[..., np.newaxis]
    return images, y.astype(np.int64)
