"""Tests for training.data: encoding, synthetic sets, local files and offline downloads.

No test touches the network; fixtures are written to tmp_path in the formats Keras downloads.
"""

from __future__ import annotations

import io
import json
import pickle
import socket
import tarfile

import numpy as np
import pytest

from training import data
from training.data import (
    INDEX_FROM,
    OOV,
    PAD,
    START,
    DataError,
    DatasetUnavailable,
    encode_texts,
    load_dataset,
    pad,
    tokenize,
)

# --- tokenize / encode_texts / pad --------------------------------------------------------


@pytest.mark.parametrize(
    "text, words",
    [
        ("Hello, World!", ["hello", "world"]),
        ("Great.<br /><br />Loved it", ["great", "loved", "it"]),
        ("don't STOP-me: 42x", ["don't", "stop", "me", "42x"]),
        ("café ÉCOLE tab\there", ["caf", "cole", "tab", "here"]),  # non-ASCII separates
        ("\u212aelvin \u0130stanbul", ["kelvin", "i", "stanbul"]),  # as tf.strings.lower(utf-8)
        ("", []),
    ],
)
def test_tokenize(text, words):
    assert tokenize(text) == words


WORDS = {"the": 1, "movie": 2, "was": 3, "great": 96}


@pytest.mark.parametrize(
    "text, vocab_size, maxlen, expected",
    [
        ("The movie was GREAT", 100, 6, [START, 4, 5, 6, 99, PAD]),
        ("the movie was great", 99, 6, [START, 4, 5, 6, OOV, PAD]),  # rank + 3 >= vocab
        ("the unknownword movie", 100, 4, [START, 4, OOV, 5]),
        ("the movie was great", 100, 3, [START, 4, 5]),  # truncated at the end
        ("", 100, 3, [START, PAD, PAD]),
    ],
)
def test_encode_texts(text, vocab_size, maxlen, expected):
    encoded = encode_texts([text], WORDS, vocab_size, maxlen)
    assert encoded.dtype == np.int32
    assert encoded.tolist() == [expected]


def test_encode_texts_empty_batch():
    assert encode_texts([], WORDS, 100, 5).shape == (0, 5)


def test_pad_truncates_and_right_pads():
    padded = pad([[START, 5, 6], [START], np.array([START, 7])], 2)
    assert padded.dtype == np.int32
    assert padded.tolist() == [[START, 5], [START, PAD], [START, 7]]
    with pytest.raises(ValueError):
        pad([[1]], 0)


# --- synthetic data -----------------------------------------------------------------------

SHAPES = {
    "imdb": ((64,), np.int32, 2),
    "reuters": ((48,), np.int32, 46),
    "cifar": ((32, 32, 3), np.uint8, 10),
    "mnist": ((28, 28, 1), np.uint8, 10),
}


@pytest.mark.parametrize("name", SHAPES)
def test_synthetic_shapes_dtypes_labels(name):
    sample_shape, dtype, num_classes = SHAPES[name]
    ds = load_dataset(name, synthetic=True, quick=True, vocab_size=1000, maxlen=sample_shape[0])
    assert ds.name == name and ds.synthetic and ds.source == "synthetic"
    assert ds.x_train.shape == (1024, *sample_shape) and ds.x_test.shape == (256, *sample_shape)
    assert ds.x_train.dtype == dtype and ds.x_test.dtype == dtype
    assert ds.y_train.dtype == np.int64 and ds.y_test.dtype == np.int64
    assert len(ds.labels) == num_classes
    assert set(np.unique(ds.y_train)) == set(range(num_classes))  # every class is trained
    assert 0 <= ds.y_test.min() and ds.y_test.max() < num_classes
    if dtype == np.int32:
        assert (ds.x_train[:, 0] == START).all()
        assert ds.x_train.min() >= 0 and ds.x_train.max() < 1000
        assert ds.word_index["w1"] == 1 and max(ds.word_index.values()) + INDEX_FROM < 1000
    else:
        assert ds.word_index is None


@pytest.mark.parametrize("name", ["imdb", "reuters", "cifar", "mnist", "cosine"])
def test_synthetic_is_deterministic_per_seed(name):
    first, again, other = (
        load_dataset(name, synthetic=True, quick=True, seed=seed) for seed in (1, 1, 2)
    )
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert not np.array_equal(first.x_train, other.x_train)


def _bag_of_ids(x, vocab_size):
    counts = np.zeros((len(x), vocab_size))
    np.add.at(counts, (np.arange(len(x))[:, None].repeat(x.shape[1], 1), x), 1)
    counts[:, :INDEX_FROM] = 0
    return counts


@pytest.mark.parametrize("name", ["imdb", "reuters"])
def test_synthetic_text_is_learnable(name):
    ds = load_dataset(name, synthetic=True, quick=True, vocab_size=2000)
    classes = len(ds.labels)
    train, test = _bag_of_ids(ds.x_train, 2000), _bag_of_ids(ds.x_test, 2000)
    # Multinomial naive Bayes, about the simplest bag-of-ids classifier.
    per_class = np.stack([train[ds.y_train == c].sum(0) for c in range(classes)]) + 1
    log_prob = np.log(per_class / per_class.sum(1, keepdims=True))
    accuracy = ((test @ log_prob.T).argmax(1) == ds.y_test).mean()
    assert accuracy > 0.9


@pytest.mark.parametrize("name", ["cifar", "mnist"])
def test_synthetic_images_are_learnable(name):
    ds = load_dataset(name, synthetic=True, quick=True)
    train = ds.x_train.reshape(len(ds.x_train), -1).astype(np.float32)
    test = ds.x_test.reshape(len(ds.x_test), -1).astype(np.float32)
    means = np.stack([train[ds.y_train == c].mean(0) for c in range(10)])
    nearest = ((test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    assert (nearest == ds.y_test).mean() > 0.6


def test_synthetic_sizes_without_quick():
    ds = load_dataset("reuters", synthetic=True, maxlen=16, vocab_size=400)
    assert (len(ds.x_train), len(ds.x_test)) == data.FULL_SYNTHETIC


# --- cosine -------------------------------------------------------------------------------


def test_cosine_series_matches_formula_on_noise_free_half():
    ds = load_dataset("cosine")
    series, time = ds.extra["series"], ds.extra["time"]
    assert len(series) == 361 and ds.extra["test_start"] == 361 - 30
    np.testing.assert_allclose(time, np.arange(361) / 30, rtol=1e-6)
    formula = 20 * np.cos(2 * np.pi * np.arange(361) / 30)
    clean = np.arange(361) % 30 < 15  # the first half of every 30-step month
    np.testing.assert_allclose(series[clean], formula[clean], atol=1e-5)
    noise = series[~clean] - formula[~clean]
    assert 1.0 < noise.std() < 3.0


def test_cosine_windows_and_held_out_month():
    ds = load_dataset("cosine", window=10)
    series, start = ds.extra["series"], ds.extra["test_start"]
    assert not ds.synthetic and ds.labels == [] and ds.word_index is None
    assert ds.x_train.shape == (321, 10) and ds.x_test.shape == (30, 10)
    assert ds.x_train.dtype == ds.y_train.dtype == np.float32
    np.testing.assert_array_equal(ds.x_train[5], series[5:15])
    assert ds.y_train[5] == series[15]
    np.testing.assert_array_equal(ds.y_test, series[start:])  # x_test[j] -> series[start + j]
    np.testing.assert_array_equal(ds.x_test[0], series[start - 10 : start])
    assert load_dataset("cosine", synthetic=True).synthetic


# --- local files in the formats Keras downloads -------------------------------------------


def _ragged(seqs):
    array = np.empty(len(seqs), dtype=object)
    array[:] = [list(s) for s in seqs]
    return array


RANKS_TRAIN = [[1, 14, 22, 16], [1, 43, 530, 973, 2], [3, 9], [5, 6, 7], [1, 8]]
RANKS_TEST = [[2, 2, 5], [1, 3, 4, 12], [7]]


def _write_raw_imdb(path):
    np.savez(path, **_raw_imdb_arrays())


def _raw_imdb_arrays():
    return dict(
        x_train=_ragged(RANKS_TRAIN),
        y_train=np.array([0, 1, 1, 0, 1]),
        x_test=_ragged(RANKS_TEST),
        y_test=np.array([1, 0, 1]),
    )


def _write_raw_reuters(path):
    np.savez(path, x=_ragged(RANKS_TRAIN + RANKS_TEST), y=np.array([3, 4, 45, 0, 19, 3, 1, 2]))


@pytest.fixture(scope="module")
def keras_datasets():
    pytest.importorskip("keras")
    from keras.src.datasets import cifar10, imdb, mnist, reuters

    return {"imdb": imdb, "reuters": reuters, "mnist": mnist, "cifar": cifar10}


@pytest.mark.parametrize(
    "name, write", [("imdb", _write_raw_imdb), ("reuters", _write_raw_reuters)]
)
def test_text_file_is_processed_like_keras(name, write, tmp_path, keras_datasets, monkeypatch):
    path = tmp_path / f"{name}.npz"
    write(path)
    module = keras_datasets[name]
    monkeypatch.setattr(module, "get_file", lambda *args, **kwargs: str(path))
    (kx_train, ky_train), (kx_test, ky_test) = module.load_data(num_words=20)

    ds = load_dataset(name, data_path=path, vocab_size=20, maxlen=4)
    assert ds.source == str(path) and not ds.synthetic
    np.testing.assert_array_equal(ds.x_train, pad(kx_train, 4))
    np.testing.assert_array_equal(ds.x_test, pad(kx_test, 4))
    np.testing.assert_array_equal(ds.y_train, ky_train)
    np.testing.assert_array_equal(ds.y_test, ky_test)
    assert ds.y_train.dtype == np.int64 and ds.x_train.dtype == np.int32


def test_reuters_raw_setup_is_processed_like_keras(tmp_path, keras_datasets, monkeypatch):
    """The seed's load_data(num_words, maxlen, test_split): long newswires dropped, 70/30."""
    path = tmp_path / "reuters.npz"
    _write_raw_reuters(path)
    module = keras_datasets["reuters"]
    monkeypatch.setattr(module, "get_file", lambda *args, **kwargs: str(path))
    (kx_train, ky_train), (kx_test, ky_test) = module.load_data(
        num_words=20, maxlen=5, test_split=0.3
    )

    ds = load_dataset(
        "reuters", data_path=path, vocab_size=20, maxlen=4, max_length=5, test_split=0.3
    )
    assert len(ds.y_train) + len(ds.y_test) < len(RANKS_TRAIN + RANKS_TEST)  # some dropped
    np.testing.assert_array_equal(ds.x_train, pad(kx_train, 4))
    np.testing.assert_array_equal(ds.x_test, pad(kx_test, 4))
    np.testing.assert_array_equal(ds.y_train, ky_train)
    np.testing.assert_array_equal(ds.y_test, ky_test)


def test_word_index_path_overrides_the_sibling(tmp_path):
    path = tmp_path / "imdb.npz"
    _write_raw_imdb(path)
    (tmp_path / "imdb_word_index.json").write_text(json.dumps({"sibling": 1}))
    chosen = tmp_path / "elsewhere" / "my_index.json"
    chosen.parent.mkdir()
    chosen.write_text(json.dumps({"the": 1, "and": 2}))

    ds = load_dataset("imdb", data_path=path, vocab_size=50, maxlen=8, word_index_path=chosen)
    assert ds.word_index == {"the": 1, "and": 2}
    with pytest.raises(DataError, match="no such file"):
        load_dataset("imdb", data_path=path, vocab_size=50, maxlen=8,
                     word_index_path=tmp_path / "missing.json")


def test_text_file_word_index_sibling_or_placeholder(tmp_path):
    path = tmp_path / "imdb.npz"
    _write_raw_imdb(path)
    placeholder = load_dataset("imdb", data_path=path, vocab_size=50, maxlen=8)
    assert placeholder.word_index == {f"w{r}": r for r in range(1, 47)}
    assert "imdb_word_index.json not found" in placeholder.extra["warnings"][0]

    (tmp_path / "imdb_word_index.json").write_text(json.dumps({"the": 1, "and": 2}))
    real = load_dataset("imdb", data_path=path, vocab_size=50, maxlen=8)
    assert real.word_index == {"the": 1, "and": 2} and real.extra["warnings"] == []
    assert encode_texts(["the and"], real.word_index, 50, 4).tolist() == [[START, 4, 5, PAD]]


def test_text_file_saved_from_load_data_is_not_encoded_twice(tmp_path):
    encoded = [[START, 4, 17, 25], [START, 12, OOV], [START, 5, 6]]
    path = tmp_path / "imdb.npz"
    np.savez(
        path,
        x_train=_ragged(encoded),
        y_train=np.array([0, 1, 0]),
        x_test=_ragged(encoded[:2]),
        y_test=np.array([1, 1]),
    )
    ds = load_dataset("imdb", data_path=path, vocab_size=20, maxlen=4)
    assert sorted(ds.x_train.tolist()) == [
        [START, 4, 17, OOV],  # 25 >= vocab_size
        [START, 5, 6, PAD],
        [START, 12, OOV, PAD],
    ]
    assert any("already start with START" in w for w in ds.extra["warnings"])


def test_mnist_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x_train, x_test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (6, 3))
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=np.arange(6), x_test=x_test, y_test=[9, 0, 1])
    ds = load_dataset("mnist", data_path=path)
    assert ds.x_train.shape == (6, 28, 28, 1) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train[..., 0], x_train)
    assert ds.y_test.tolist() == [9, 0, 1] and ds.labels[9] == "9"


def _cifar_batch(images, labels, protocol=2):
    # NHWC -> the file's rows of 1024 red, 1024 green, 1024 blue values.
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    return pickle.dumps({b"batch_label": b"x", b"labels": list(labels), b"data": rows}, protocol)


def _write_cifar(path, images, labels, *, skip=(), meta=None):
    meta = meta or {b"label_names": [n.encode() for n in data.CIFAR10_LABELS]}
    members = {  # two images per training batch, the rest in test_batch
        f"data_batch_{i + 1}": _cifar_batch(images[2 * i : 2 * i + 2], labels[2 * i : 2 * i + 2])
        for i in range(5)
    }
    members["test_batch"] = _cifar_batch(images[10:], labels[10:])
    members["batches.meta"] = pickle.dumps(meta, 2)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            if name not in skip:
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))


CIFAR_IMAGES = np.random.default_rng(0).integers(0, 256, (13, 32, 32, 3), dtype=np.uint8)
CIFAR_LABELS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 8, 7]


def test_cifar_tarball_round_trip(tmp_path, monkeypatch):
    path = tmp_path / "cifar-10-python.tar.gz"
    _write_cifar(path, CIFAR_IMAGES, CIFAR_LABELS)
    monkeypatch.chdir(tmp_path)
    ds = load_dataset("cifar", data_path=path)
    np.testing.assert_array_equal(ds.x_train, CIFAR_IMAGES[:10])
    np.testing.assert_array_equal(ds.x_test, CIFAR_IMAGES[10:])
    assert ds.y_train.tolist() == CIFAR_LABELS[:10] and ds.y_test.dtype == np.int64
    assert ds.labels[0] == "airplane"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing extracted

    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    from_folder = load_dataset("cifar", data_path=tmp_path / "extracted")
    np.testing.assert_array_equal(from_folder.x_test, ds.x_test)


def test_cifar_pixels_are_in_keras_channel_order(tmp_path):
    image = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    image[0, 1, 2] = [10, 20, 30]  # row 1, column 2
    images = np.concatenate([np.zeros((10, 32, 32, 3), np.uint8), image])
    path = tmp_path / "cifar.tgz"
    _write_cifar(path, images, [0] * 11)
    rows = pickle.loads(_cifar_batch(image, [0]))[b"data"]
    assert rows[0, [0 * 1024 + 34, 1 * 1024 + 34, 2 * 1024 + 34]].tolist() == [10, 20, 30]
    assert load_dataset("cifar", data_path=path).x_test[0, 1, 2].tolist() == [10, 20, 30]


@pytest.mark.parametrize("suffix, header", [(".csv", "value\n"), (".csv", ""), (".npy", None)])
def test_cosine_file_round_trip(tmp_path, suffix, header):
    series = np.sin(np.arange(60) / 5).astype(np.float32)
    path = tmp_path / f"series{suffix}"
    if header is None:
        np.save(path, series[:, None])
    else:
        path.write_text(header + "\n".join(f"{v:.9g}" for v in series) + "\n")
    ds = load_dataset("cosine", data_path=path, window=5)
    assert ds.source == str(path) and ds.extra["test_start"] == 30
    assert ds.x_train.shape == (25, 5) and ds.x_test.shape == (30, 5)
    np.testing.assert_allclose(ds.extra["series"], series, rtol=1e-6)


def test_quick_takes_a_random_subset_of_real_data(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "QUICK_REAL", (3, 2))
    path = tmp_path / "imdb.npz"
    _write_raw_imdb(path)
    ds = load_dataset("imdb", data_path=path, quick=True, maxlen=4)
    assert ds.x_train.shape == (3, 4) and ds.y_test.shape == (2,)


# --- malformed files: one row per case ----------------------------------------------------


class _RunsCode:
    def __reduce__(self):
        return (print, ("this must never run",))


def _npz(**arrays):
    def write(path):
        with open(path, "wb") as f:  # np.savez would append .npz to other names
            np.savez(f, **arrays)

    return write


def _text(content):
    return lambda path: path.write_text(content)


def _imdb_with(**changes):
    return _npz(**{**_raw_imdb_arrays(), **changes})


def _cifar_with(**kwargs):
    return lambda path: _write_cifar(path, CIFAR_IMAGES, CIFAR_LABELS, **kwargs)


def _tar_with_batch(blob):
    def write(path):
        with tarfile.open(path, "w:gz") as tar:
            for name in ("data_batch_1", "test_batch"):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))

    return write


def _mnist_with(**changes):
    arrays = dict(
        x_train=np.zeros((2, 28, 28), np.uint8),
        y_train=[0, 1],
        x_test=np.zeros((1, 28, 28), np.uint8),
        y_test=[2],
    )
    return _npz(**{**arrays, **changes})


_WRONG_CIFAR_BATCH = pickle.dumps({b"data": np.zeros((1, 3000), np.uint8), b"labels": [0]})

MALFORMED = [
    # (dataset, file name, writer or None for "does not exist", expected words)
    ("imdb", "imdb.npz", None, "no such file"),
    ("imdb", "imdb.txt", _text("hello"), "wrong extension"),
    ("imdb", "imdb.npz", _text("not a zip"), "not a readable .npz"),
    ("imdb", "imdb.npz", _npz(a=np.zeros(3)), "missing arrays (found: a)"),
    ("imdb", "imdb.npz", _imdb_with(y_train=np.array([0, 1, 2, 0, 1])), "labels outside 0..1"),
    ("imdb", "imdb.npz", _imdb_with(y_test=np.array([1, 0])), "y_test must be 3 integer labels"),
    ("imdb", "imdb.npz", _imdb_with(x_test=_ragged([[1.5, 2], [1], [2]])), "x_test[0] is not"),
    ("imdb", "imdb.npz", _imdb_with(x_train=np.zeros(5)), "x_train must be an array of id lists"),
    ("imdb", "imdb.npz", _imdb_with(x_train=np.array([_RunsCode()] * 5, dtype=object)), "refusing"),
    ("reuters", "reuters.npz", _npz(x=_ragged([[1], [2]]), y=np.array([0, 46])), "outside 0..45"),
    ("mnist", "mnist.npz", _mnist_with(x_test=np.zeros((1, 27, 28), np.uint8)), "(1, 27, 28)"),
    ("mnist", "mnist.npz", _mnist_with(x_train=np.zeros((2, 28, 28))), "x_train is float64"),
    ("mnist", "mnist.npz", _mnist_with(y_train=[0, 10]), "labels outside 0..9"),
    ("cifar", "cifar.zip", _text("x"), "wrong extension"),
    ("cifar", "cifar.tar.gz", _text("not a tarball"), "not a readable CIFAR-10 archive"),
    ("cifar", "cifar.tar.gz", _cifar_with(skip=("test_batch",)), "missing data_batch_N or"),
    ("cifar", "cifar.tar.gz", _cifar_with(meta={b"label_names": [b"x"] * 100}), "100 classes"),
    ("cifar", "cifar.tar.gz", _tar_with_batch(_WRONG_CIFAR_BATCH), "data is uint8 (1, 3000)"),
    ("cifar", "cifar.tar.gz", _tar_with_batch(pickle.dumps(_RunsCode())), "refusing"),
    ("cosine", "series.txt", _text("1\n2\n"), "wrong extension"),
    ("cosine", "series.csv", _text("t,value\n0,1\n"), "line 1 has 2 columns"),
    ("cosine", "series.csv", _text("1\n2\nthree\n"), "line 3: 'three' is not a number"),
    ("cosine", "series.csv", _text("1\n2\n3\n"), "3 values, need more than window + 30"),
    ("cosine", "series.csv", _text("\n".join(["1"] * 50 + ["nan"])), "NaN"),
    ("cosine", "series.npy", lambda p: np.save(p, np.zeros((50, 2))), "array is float64 (50, 2)"),
]


@pytest.mark.parametrize("name, filename, write, words", MALFORMED)
def test_malformed_file_raises_one_line_data_error(name, filename, write, words, tmp_path, capsys):
    path = tmp_path / filename
    if write is not None:
        write(path)
    with pytest.raises(DataError) as caught:
        load_dataset(name, data_path=path, maxlen=8)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ") and words in message
    assert f"expected {data.FILE_FORMATS[name]}" in message
    assert "must never run" not in capsys.readouterr().out


def test_malformed_word_index_json_raises_data_error(tmp_path):
    path = tmp_path / "reuters.npz"
    _write_raw_reuters(path)
    index_path = tmp_path / "reuters_word_index.json"
    for content in ("{not json", '["the"]', '{"the": "1"}'):
        index_path.write_text(content)
        with pytest.raises(DataError, match=r"^\S*reuters_word_index\.json: [^\n]*expected"):
            load_dataset("reuters", data_path=path)


# --- real data without network ------------------------------------------------------------


@pytest.mark.parametrize("name", ["imdb", "reuters", "mnist", "cifar"])
def test_download_failure_raises_dataset_unavailable(name, keras_datasets, monkeypatch):
    timeouts = []

    def offline(*args, **kwargs):
        timeouts.append(socket.getdefaulttimeout())
        raise Exception(  # what keras' get_file raises on a URLError
            "URL fetch failure on https://storage.googleapis.com/x.npz: None -- "
            "[Errno -3] Temporary failure in name resolution"
        )

    monkeypatch.setattr(keras_datasets[name], "get_file", offline)
    before = socket.getdefaulttimeout()
    with pytest.raises(DatasetUnavailable) as caught:
        load_dataset(name)
    message = str(caught.value)
    assert message.startswith(
        f"could not download {name} ([Errno -3] Temporary failure in name resolution); "
        "pass --data-path FILE ("
    )
    assert message.endswith(") or --synthetic") and "\n" not in message
    assert timeouts == [data.DOWNLOAD_TIMEOUT_S]
    assert socket.getdefaulttimeout() == before


# --- arguments ----------------------------------------------------------------------------


def test_bad_arguments_raise_value_error(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'translator'"):
        load_dataset("translator")
    with pytest.raises(ValueError, match="not both"):
        load_dataset("imdb", synthetic=True, data_path=tmp_path / "imdb.npz")
    with pytest.raises(ValueError, match="vocab_size must be >="):
        load_dataset("reuters", synthetic=True, vocab_size=100)


def test_default_maxlen_per_text_dataset():
    assert load_dataset("reuters", synthetic=True, quick=True).x_train.shape[1] == 200
    assert load_dataset("imdb", synthetic=True, quick=True).x_train.shape[1] == 500
