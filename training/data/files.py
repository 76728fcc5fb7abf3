"""User files given with ``--data-path``, in the formats Keras downloads (``FILE_FORMATS``).

The files are untrusted input: each reader checks the extension, the archive members, the
dtypes, shapes and label ranges, and names the file and the expected format in a one-line
:class:`~training.data.DataError`. Pickled members (ragged ``.npz`` sequences, the CIFAR-10
batches) go through an unpickler that builds numpy arrays, lists and bytes and nothing else,
so no code in a file runs. Nothing is extracted to disk.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.data.contract import (
    FILE_FORMATS,
    INDEX_FROM,
    KERAS_SHUFFLE_SEED,
    KERAS_TEST_SPLIT,
    LABELS,
    OOV,
    START,
    DataError,
    one_line,
    placeholder_word_index,
    short_reason,
)


def file_error(path: Path, what: str, name: str) -> DataError:
    return DataError(one_line(f"{path}: {what}; expected {FILE_FORMATS[name]}"))


def _check_file(path: Path, name: str, suffixes: tuple[str, ...], allow_dir=False) -> None:
    if not path.exists():
        raise file_error(path, "no such file", name)
    if allow_dir and path.is_dir():
        return
    if not path.is_file():
        raise file_error(path, "not a file", name)
    if not path.name.lower().endswith(suffixes):
        raise file_error(path, f"wrong extension (want {' or '.join(suffixes)})", name)


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
                raise file_error(path, f"missing arrays (found: {found})", name)
            return {k: _read_npy(io.BytesIO(archive.read(members[k]))) for k in wanted}
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, header and pickle errors all mean "corrupt"
        raise file_error(path, f"not a readable .npz archive ({short_reason(e)})", name)


def _class_ids(y: np.ndarray, n: int, num_classes: int, path: Path, name: str, key: str):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != n or (n and y.dtype.kind not in "iub"):
        raise file_error(path, f"{key} must be {n} integer labels, got {y.dtype} {y.shape}", name)
    if n and (y.min() < 0 or y.max() >= num_classes):
        raise file_error(path, f"{key} has labels outside 0..{num_classes - 1}", name)
    return y.astype(np.int64)


def _word_rank_lists(x: np.ndarray, path: Path, name: str, key: str) -> list[np.ndarray]:
    if x.dtype.kind in "iu" and x.ndim == 2:  # a dense matrix: 0 is padding
        return [row[row != 0].astype(np.int64) for row in x]
    if x.dtype != object or x.ndim != 1:
        what = f"{key} must be an array of id lists, got {x.dtype} {x.shape}"
        raise file_error(path, what, name)
    sequences = []
    for i, seq in enumerate(x):
        ids = np.asarray(seq)
        if ids.size == 0:
            ids = ids.astype(np.int64)
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or (ids.size and ids.min() < 0):
            raise file_error(path, f"{key}[{i}] is not a list of word ranks", name)
        sequences.append(ids.astype(np.int64))
    return sequences


def read_text_file(
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
        return placeholder_word_index(vocab_size)
    expected = f"{name}_word_index.json as downloaded by keras.datasets.{name}.get_word_index()"
    try:
        word_index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(one_line(f"{index_path}: not readable JSON ({e}); expected {expected}"))
    if not isinstance(word_index, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and v >= 1 for k, v in word_index.items()
    ):
        raise DataError(f"{index_path}: not a word -> rank (int >= 1) object; expected {expected}")
    return word_index


def read_mnist_file(path: Path):
    keys = ("x_train", "y_train", "x_test", "y_test")
    arrays = _read_npz(path, "mnist", [keys])
    splits = []
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.ndim == 4 and x.shape[3] == 1:
            x = x[..., 0]
        if x.ndim != 3 or x.shape[1:] != (28, 28) or (x.size and x.dtype.kind not in "iu"):
            raise file_error(path, f"x_{split} is {x.dtype} {x.shape}", "mnist")
        if x.size and (x.min() < 0 or x.max() > 255):
            raise file_error(path, f"x_{split} has pixels outside 0..255", "mnist")
        y = _class_ids(arrays[f"y_{split}"], len(x), 10, path, "mnist", f"y_{split}")
        splits += [x.astype(np.uint8)[..., np.newaxis], y]
    return tuple(splits)


def read_cifar_file(path: Path):
    _check_file(path, "cifar", (".tar.gz", ".tgz", ".tar"), allow_dir=True)
    try:
        batches = _cifar_members(path)
    except Exception as e:  # noqa: BLE001 - tar and pickle errors all mean "corrupt"
        raise file_error(path, f"not a readable CIFAR-10 archive ({short_reason(e)})", "cifar")
    train_names = sorted(
        (n for n in batches if re.fullmatch(r"data_batch_\d+", n)), key=lambda n: int(n[11:])
    )
    if not train_names or "test_batch" not in batches:
        found = ", ".join(sorted(batches)) or "nothing"
        raise file_error(path, f"missing data_batch_N or test_batch (found: {found})", "cifar")
    meta = batches.get("batches.meta", {})
    names = [n.decode() if isinstance(n, bytes) else n for n in meta.get("label_names", [])]
    if names and len(names) != 10:
        raise file_error(path, f"batches.meta names {len(names)} classes, not 10", "cifar")
    xs, ys = {}, {}
    for split, members in (("train", train_names), ("test", ["test_batch"])):
        images, labels = [], []
        for member in members:
            data = np.asarray(batches[member].get("data", []))
            y = batches[member].get("labels", [])
            if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
                raise file_error(path, f"{member} data is {data.dtype} {data.shape}", "cifar")
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


def read_series_file(path: Path) -> np.ndarray:
    _check_file(path, "cosine", (".csv", ".npy"))
    if path.suffix.lower() == ".npy":
        try:
            series = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001
            raise file_error(path, f"not a readable .npy file ({short_reason(e)})", "cosine")
        if series.ndim == 2 and series.shape[1] == 1:
            series = series[:, 0]
        if series.ndim != 1 or series.dtype.kind not in "iuf":
            raise file_error(path, f"array is {series.dtype} {series.shape}", "cosine")
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise file_error(path, f"not a readable text file ({short_reason(e)})", "cosine")
        values = []
        for number, line in enumerate(lines, start=1):
            cells = line.strip().split(",")
            if cells == [""]:
                continue
            if len(cells) != 1:
                raise file_error(path, f"line {number} has {len(cells)} columns", "cosine")
            try:
                values.append(float(cells[0]))
            except ValueError:
                if values or number > 1:  # only the first line may be a header
                    what = f"line {number}: {cells[0]!r} is not a number"
                    raise file_error(path, what, "cosine")
        series = np.asarray(values)
    if not np.isfinite(series).all():
        raise file_error(path, "series has NaN or infinite values", "cosine")
    return series.astype(np.float32)
