"""English→German sentence pairs for the translator: loading, synthetic pairs, vocabularies.

The real data is ``deu.txt`` from the Tatoeba/ManyThings ``deu-eng.zip``: one pair a line,
``english<TAB>german<TAB>attribution``. Text is tokenized as in the seed tutorial:
lowercase, ``\\w+`` tokens; targets are wrapped in ``<sos>``/``<eos>``. Ids are
right-padded with ``<pad>=0`` so masks stay cuDNN-eligible.

Typical usage::

    pairs = read_pairs_file(Path("deu.txt"))          # or download_pairs_file()
    vocab = build_vocabulary([english for english, _ in pairs], max_size=8000)
    ids = encode_sources(["Hello there!"], vocab, source_len=11)
"""

from __future__ import annotations

import collections
import contextlib
import random
import re
import urllib.request
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import DataError, DatasetUnavailable, download_timeout

DATA_URL = "http://www.manythings.org/anki/deu-eng.zip"
DATA_MEMBER = "deu.txt"
DOWNLOAD_TIMEOUT_S = 15.0
EXPECTED_FORMAT = "deu.txt or deu-eng.zip with lines 'english<TAB>german[<TAB>attribution]'"

SPECIAL_TOKENS = ("<pad>", "<unk>", "<sos>", "<eos>")
PAD, UNK, SOS, EOS = range(len(SPECIAL_TOKENS))

_WORD = re.compile(r"\w+")

Pair = tuple[str, str]


@dataclass(frozen=True)
class TranslationData:
    """Train/test sentence pairs and the vocabularies built from the training pairs."""

    train_pairs: tuple[Pair, ...]  # (english, german), raw text
    test_pairs: tuple[Pair, ...]
    source_vocab: tuple[str, ...]  # id -> English word; starts with SPECIAL_TOKENS
    target_vocab: tuple[str, ...]  # id -> German word; starts with SPECIAL_TOKENS
    max_source_tokens: int  # longer inputs are truncated (pairs that long were dropped)
    max_target_tokens: int
    source: str  # URL or path the pairs came from, or "synthetic"
    synthetic: bool

    @property
    def source_len(self) -> int:
        """Ids per encoder row: the words, then ``<eos>``."""
        return self.max_source_tokens + 1

    @property
    def target_len(self) -> int:
        """Ids per target row: ``<sos>``, the words, ``<eos>``."""
        return self.max_target_tokens + 2

    @property
    def translation_len(self) -> int:
        """Ids per decoded row: the words, then ``<eos>`` (0-padded)."""
        return self.max_target_tokens + 1


def tokenize(sentence: str) -> list[str]:
    """Lowercased ``\\w+`` tokens (Unicode-aware, so umlauts and ß stay inside words)."""
    return _WORD.findall(sentence.lower())


def build_vocabulary(sentences: Iterable[str], max_size: int) -> tuple[str, ...]:
    """The special tokens, then the most frequent words (ties: alphabetical); ``max_size`` ids."""
    counts = collections.Counter(word for s in sentences for word in tokenize(s))
    for token in SPECIAL_TOKENS:
        counts.pop(token, None)
    ranked = sorted(counts, key=lambda word: (-counts[word], word))
    return SPECIAL_TOKENS + tuple(ranked[: max(0, max_size - len(SPECIAL_TOKENS))])


def encode_sources(sentences: Sequence[str], vocab: Sequence[str], source_len: int) -> np.ndarray:
    """Encoder ids ``[words[:source_len-1], <eos>, 0...]``, int32 ``(n, source_len)``.

    The trailing ``<eos>`` keeps every row non-empty (an empty sentence would otherwise be
    a zero-length sequence, which cuDNN rejects) and tells the encoder where the input ends.
    Unknown words become ``<unk>``.
    """
    index = {word: i for i, word in enumerate(vocab)}
    ids = np.zeros((len(sentences), source_len), dtype=np.int32)
    for row, sentence in enumerate(sentences):
        words = tokenize(sentence)[: source_len - 1]
        ids[row, : len(words)] = [index.get(w, UNK) for w in words]
        ids[row, len(words)] = EOS
    return ids


def encode_targets(sentences: Sequence[str], vocab: Sequence[str], target_len: int) -> np.ndarray:
    """Target ids ``[<sos>, words[:target_len-2], <eos>, 0...]``, int32 ``(n, target_len)``."""
    index = {word: i for i, word in enumerate(vocab)}
    ids = np.zeros((len(sentences), target_len), dtype=np.int32)
    for row, sentence in enumerate(sentences):
        words = tokenize(sentence)[: target_len - 2]
        ids[row, 0] = SOS
        ids[row, 1 : len(words) + 1] = [index.get(w, UNK) for w in words]
        ids[row, len(words) + 1] = EOS
    return ids


def teacher_forcing_arrays(
    pairs: Sequence[Pair], data: TranslationData
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """``((source_ids, decoder_input_ids), labels)`` for training with teacher forcing.

    The decoder reads ``<sos> w1 .. wn`` and predicts ``w1 .. wn <eos>``. The ``<eos>`` is
    blanked out of the decoder input so that its padding mask is exactly the mask of the
    labels: Keras then skips the padding in both the loss and the accuracy.
    """
    sources = encode_sources([en for en, _ in pairs], data.source_vocab, data.source_len)
    targets = encode_targets([de for _, de in pairs], data.target_vocab, data.target_len)
    decoder_inputs = np.where(targets[:, :-1] == EOS, PAD, targets[:, :-1]).astype(np.int32)
    return (sources, decoder_inputs), targets[:, 1:]


def decode_ids(ids: Iterable[int], vocab: Sequence[str]) -> str:
    """Words up to the first ``<eos>``, space-separated (padding skipped)."""
    words = []
    for i in ids:
        if i == EOS:
            break
        if i != PAD:
            words.append(vocab[i])
    return " ".join(words)


def reference_text(sentence: str) -> str:
    """A sentence as the model can produce it (tokens joined by spaces), for BLEU."""
    return " ".join(tokenize(sentence))


# ---------------------------------------------------------------- real data


def read_pairs_file(path: Path) -> list[Pair]:
    """Reads the (english, german) pairs of a ``deu.txt``, or of a zip holding one.

    Raises:
        DataError: the file is missing, unreadable or not in the expected format.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; expected {EXPECTED_FORMAT}")
    try:
        with _open_pairs_text(path) as lines:
            pairs = _parse_pairs(lines, path)
    except (OSError, UnicodeDecodeError, zipfile.BadZipFile, KeyError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: unreadable ({reason}); expected {EXPECTED_FORMAT}") from None
    if not pairs:
        raise DataError(f"{path}: no sentence pairs found; expected {EXPECTED_FORMAT}")
    return pairs


@contextlib.contextmanager
def _open_pairs_text(path: Path) -> Iterator[Iterable[str]]:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = _find_member(archive, path)
            with archive.open(member) as raw:
                yield (line.decode("utf-8") for line in raw)
    else:
        with path.open(encoding="utf-8") as text:
            yield text


def _find_member(archive: zipfile.ZipFile, path: Path) -> str:
    for name in archive.namelist():
        if Path(name).name == DATA_MEMBER:
            return name
    raise DataError(f"{path}: zip has no {DATA_MEMBER}; expected {EXPECTED_FORMAT}")


def _parse_pairs(lines: Iterable[str], path: Path) -> list[Pair]:
    pairs = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(
                f"{path}: line {number} is not 'english<TAB>german'; expected {EXPECTED_FORMAT}"
            )
        pairs.append((fields[0].strip(), fields[1].strip()))
    return pairs


def download_pairs_file() -> Path:
    """Downloads and extracts ``deu-eng.zip`` into the Keras cache; returns ``deu.txt``.

    Raises:
        DatasetUnavailable: the download failed (offline, timeout, HTTP error).
    """
    import keras

    try:
        with download_timeout(DOWNLOAD_TIMEOUT_S), _browser_user_agent():
            extracted = keras.utils.get_file("deu-eng.zip", origin=DATA_URL, extract=True)
    # get_file wraps every URL error in a bare Exception, so nothing narrower catches it.
    except Exception as exc:  # noqa: BLE001
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetUnavailable(
            f"could not download {DATA_URL} ({reason}); download it by hand and pass "
            f"--data-path deu-eng.zip"
        ) from None
    found = sorted(Path(extracted).rglob(DATA_MEMBER))
    if not found:
        raise DatasetUnavailable(f"{extracted}: the download of {DATA_URL} holds no {DATA_MEMBER}")
    return found[0]


@contextlib.contextmanager
def _browser_user_agent() -> Iterator[None]:
    # manythings.org refuses urllib's default "Python-urllib" agent, and get_file's
    # urlretrieve only goes through the process-wide opener; restore it afterwards.
    previous = getattr(urllib.request, "_opener", None)
    opener = urllib.request.build_opener()
    opener.addheaders = [("User-Agent", "Mozilla/5.0 (keras-serving translator data)")]
    urllib.request.install_opener(opener)
    try:
        yield
    finally:
        urllib.request._opener = previous


def select_pairs(
    pairs: Iterable[Pair], *, max_source_tokens: int, max_target_tokens: int, limit: int | None
) -> list[Pair]:
    """Pairs whose both sides have 1..max tokens, in file order, at most ``limit`` of them.

    ``deu.txt`` is sorted roughly by length, so the first pairs are the shortest ones.
    """
    kept = []
    for english, german in pairs:
        if 0 < len(tokenize(english)) <= max_source_tokens and (
            0 < len(tokenize(german)) <= max_target_tokens
        ):
            kept.append((english, german))
            if limit is not None and len(kept) >= limit:
                break
    return kept


def split_pairs(pairs: Sequence[Pair], test_fraction: float, seed: int) -> tuple[list, list]:
    """Shuffles (deterministically per seed) and splits into train and test pairs."""
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    n_test = max(1, round(len(shuffled) * test_fraction)) if len(shuffled) > 1 else 0
    return shuffled[n_test:], shuffled[:n_test]


# ---------------------------------------------------------------- synthetic data

# English word -> German pseudo-word. Fixed (not seeded), so every run learns the same
# language; the pseudo-words carry umlauts and ß to exercise Unicode tokenization.
SUBJECTS = {"i": "ösch", "you": "dü", "he": "ärr", "she": "sü", "we": "wür", "they": "zö"}
VERBS = {
    "see": "sähen",
    "like": "möger",
    "eat": "ässen",
    "buy": "käufen",
    "want": "wöllen",
    "find": "fünden",
    "draw": "zeichnä",
    "carry": "trägen",
}
ADJECTIVES = {
    "big": "groß",
    "small": "kleinö",
    "red": "rät",
    "green": "grün",
    "old": "ält",
    "new": "nüi",
    "cold": "kält",
    "warm": "wärmi",
}
NOUNS = {
    "dog": "hünd",
    "cat": "kätz",
    "apple": "äpfel",
    "house": "hüs",
    "car": "wägen",
    "book": "büch",
    "tree": "bäum",
    "bird": "vögl",
    "fish": "fösch",
    "cup": "täss",
}
ADVERBS = {
    "today": "hüte",
    "often": "öft",
    "here": "hiär",
    "now": "jätz",
    "slowly": "längsäm",
}


def synthetic_sentence(subject: str, verb: str, adjective: str, noun: str, adverb: str) -> Pair:
    """One pair; ``adjective``/``adverb`` may be empty.

    English is ``S V [Adj] N [Adv]``; the German side is verb-final with the adverb after
    the subject, ``S [Adv] [Adj] N V``: word mapping plus long-distance reordering.
    """
    english = [subject, verb, adjective, noun, adverb]
    german = [
        SUBJECTS[subject],
        ADVERBS.get(adverb, ""),
        ADJECTIVES.get(adjective, ""),
        NOUNS[noun],
        VERBS[verb],
    ]
    return " ".join(w for w in english if w), " ".join(w for w in german if w)


def synthetic_pairs(n: int, seed: int) -> list[Pair]:
    """``n`` distinct synthetic pairs (at most all 25,920 sentences), deterministic per seed."""
    rng = random.Random(seed)
    adjectives = [""] + sorted(ADJECTIVES)
    adverbs = [""] + sorted(ADVERBS)
    universe = len(SUBJECTS) * len(VERBS) * len(adjectives) * len(NOUNS) * len(adverbs)
    seen: set[Pair] = set()
    pairs: list[Pair] = []
    while len(pairs) < min(n, universe):
        pair = synthetic_sentence(
            rng.choice(sorted(SUBJECTS)),
            rng.choice(sorted(VERBS)),
            rng.choice(adjectives),
            rng.choice(sorted(NOUNS)),
            rng.choice(adverbs),
        )
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    return pairs


def make_translation_data(
    pairs: Sequence[Pair],
    *,
    source: str,
    synthetic: bool,
    seed: int,
    test_fraction: float,
    max_source_tokens: int,
    max_target_tokens: int,
    source_vocab_size: int,
    target_vocab_size: int,
) -> TranslationData:
    """Splits ``pairs`` and builds both vocabularies from the training side only."""
    train, test = split_pairs(pairs, test_fraction, seed)
    return TranslationData(
        train_pairs=tuple(train),
        test_pairs=tuple(test),
        source_vocab=build_vocabulary((en for en, _ in train), source_vocab_size),
        target_vocab=build_vocabulary((de for _, de in train), target_vocab_size),
        max_source_tokens=max_source_tokens,
        max_target_tokens=max_target_tokens,
        source=source,
        synthetic=synthetic,
    )
