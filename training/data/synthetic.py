"""Small synthetic datasets with learnable structure (``--synthetic``), for offline runs and
tests, and the tutorial's cosine series. Same shapes and dtypes as the real data.
"""

from __future__ import annotations

import numpy as np

from training.data.contract import (
    INDEX_FROM,
    LABELS,
    MONTH,
    PAD,
    START,
    Dataset,
    placeholder_word_index,
    text_extra,
)

QUICK_SYNTHETIC = (1024, 256)
FULL_SYNTHETIC = (8000, 2000)
SYNTHETIC_TEXT_MAX_WORDS = 100  # short, so the quick profile's few LSTM steps learn them
COSINE_POINTS = 361
COSINE_NOISE_STD = 2.0


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


def synthetic_dataset(name, rng, quick, vocab_size, maxlen) -> Dataset:
    n_train, n_test = QUICK_SYNTHETIC if quick else FULL_SYNTHETIC
    word_index = None
    if name in ("imdb", "reuters"):
        keywords = _topic_keywords(name, vocab_size, rng)
        x_train, y_train = _synthetic_texts(keywords, n_train, vocab_size, maxlen, rng, True)
        x_test, y_test = _synthetic_texts(keywords, n_test, vocab_size, maxlen, rng, False)
        word_index = placeholder_word_index(vocab_size)
        extra = text_extra(vocab_size, maxlen, [])
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
