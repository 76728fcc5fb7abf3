"""The English→German translator: data, models, training, greedy decoding, export.

Training here runs on SYNTHETIC pairs (a fixed word mapping with verb-final reordering),
small models and few epochs: the BLEU figures say that the model and the decoding work,
not how well it translates real German.
"""

from __future__ import annotations

import socket
import urllib.request
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import translation
from training.data import DataError, DatasetUnavailable
from training.models import translator
from training.models.layers import cudnn_ineligible_reasons
from training.translation import EOS, PAD, UNK

VARIANTS = tuple(translator.VARIANTS)
SMALL = translator.Config(embedding_dim=32, units=64, synthetic_pairs=1500)
# Keras' own counts for the default Config built without data (vocabularies at their
# caps, 8000 English / 10000 German). Per LSTM: 4 * (units * (inputs + units) + units).
DEFAULT_PARAMS = {
    "seq2seq": 8000 * 128 + 10000 * 128 + 2 * 4 * (256 * (128 + 256) + 256) + 256 * 10000 + 10000,
    "attention": 8000 * 128
    + 10000 * 128
    + 2 * 4 * (256 * (128 + 256) + 256)
    + (512 * 256 + 256)  # attention_combine
    + 256 * 10000
    + 10000,
}
# Inputs that exercise the tokenizer: case, punctuation, unknown words, umlauts and ß,
# too many words, nothing at all.
ODD_SENTENCES = [
    "He SEES the big Dog, today!",
    "zebra xylophone quokka",
    "Über die Straße, größer & schöner.",
    "i " * 30,
    "",
    "   ",
]


@pytest.fixture(scope="module")
def synthetic() -> translation.TranslationData:
    return translator.load_pairs(synthetic=True, seed=0, config=SMALL)


@pytest.fixture(scope="module")
def trained(synthetic):
    """Each variant trained briefly on the synthetic pairs: (model, history, metrics)."""
    results = {}
    for variant in VARIANTS:
        keras.utils.set_random_seed(0)
        model = translator.build_model(variant, SMALL, synthetic)
        history = translator.fit(
            model, synthetic, epochs=8, batch_size=64, seed=0, learning_rate=1e-2, verbose=0
        )
        results[variant] = (model, history, translator.evaluate(model, synthetic))
    return results


@pytest.fixture(scope="module")
def exported(trained, synthetic, tmp_path_factory):
    """Each trained variant saved exactly as the pipeline saves it, then reloaded."""
    loaded = {}
    for variant, (model, _, _) in trained.items():
        module = translator.make_export_module(model, synthetic)
        path = tmp_path_factory.mktemp(variant) / "1"
        tf.saved_model.save(
            module,
            str(path),
            signatures={
                "serving_default": module.serving_default.get_concrete_function(),
                "translate": module.translate.get_concrete_function(),
            },
        )
        loaded[variant] = tf.saved_model.load(str(path))
    return loaded


# ---------------------------------------------------------------- synthetic data


def test_synthetic_pairs_are_deterministic_per_seed():
    assert translation.synthetic_pairs(200, seed=3) == translation.synthetic_pairs(200, seed=3)
    assert translation.synthetic_pairs(200, seed=3) != translation.synthetic_pairs(200, seed=4)
    assert translator.load_pairs(synthetic=True, seed=3, config=SMALL) == translator.load_pairs(
        synthetic=True, seed=3, config=SMALL
    )


def test_synthetic_german_is_verb_final_with_the_adverb_after_the_subject():
    assert translation.synthetic_sentence("he", "see", "big", "dog", "today") == (
        "he see big dog today",
        "ärr hüte groß hünd sähen",
    )
    assert translation.synthetic_sentence("we", "eat", "", "apple", "") == (
        "we eat apple",
        "wür äpfel ässen",
    )


def test_synthetic_split_is_held_out_and_vocabularies_come_from_training(synthetic):
    assert len(synthetic.train_pairs) + len(synthetic.test_pairs) == SMALL.synthetic_pairs
    assert not set(synthetic.train_pairs) & set(synthetic.test_pairs)
    assert synthetic.source_vocab[:4] == ("<pad>", "<unk>", "<sos>", "<eos>")
    assert synthetic.target_vocab[:4] == ("<pad>", "<unk>", "<sos>", "<eos>")
    assert "größ" not in synthetic.target_vocab and "groß" in synthetic.target_vocab
    assert synthetic.synthetic and synthetic.source == "synthetic"


# ---------------------------------------------------------------- encoding


def test_unknown_words_map_to_unk_and_every_source_row_ends_with_eos(synthetic):
    ids = translation.encode_sources(
        ["Zebra quokka", "", "he see dog"], synthetic.source_vocab, synthetic.source_len
    )
    assert ids.dtype == np.int32 and ids.shape == (3, synthetic.source_len)
    np.testing.assert_array_equal(ids[0, :3], [UNK, UNK, EOS])
    np.testing.assert_array_equal(ids[1, :1], [EOS])
    assert (ids[1, 1:] == PAD).all()
    assert UNK not in ids[2]


def test_teacher_forcing_masks_match_the_labels(synthetic):
    (sources, decoder_inputs), labels = translation.teacher_forcing_arrays(
        synthetic.train_pairs[:50], synthetic
    )
    assert sources.shape == (50, synthetic.source_len)
    assert decoder_inputs.shape == labels.shape == (50, synthetic.target_len - 1)
    # Same padding mask on input and labels, so Keras masks exactly the padded labels.
    np.testing.assert_array_equal(decoder_inputs != PAD, labels != PAD)
    # Shifted by one: the decoder reads the word it has just been asked to predict.
    words = (labels[:, :-1] != PAD) & (labels[:, :-1] != EOS)
    np.testing.assert_array_equal(decoder_inputs[:, 1:][words], labels[:, :-1][words])


def test_in_graph_tokenization_matches_python():
    pairs = [("Über größe Straße schön", "a b"), ("Café naïve don't 42", "c d")] * 3
    data = translation.make_translation_data(
        pairs,
        source="test",
        synthetic=False,
        seed=0,
        test_fraction=0.2,
        max_source_tokens=6,
        max_target_tokens=4,
        source_vocab_size=100,
        target_vocab_size=100,
    )
    module = translator.make_export_module(translator.build_model("seq2seq", SMALL, data), data)
    sentences = ODD_SENTENCES + ["ÜBER größe, STRASSE; Straße!", "don't café naïve 42 x²"]
    expected = translation.encode_sources(sentences, data.source_vocab, data.source_len)
    got = module.encode_sentences(tf.constant(sentences)).numpy()
    np.testing.assert_array_equal(got, expected)
    index = data.source_vocab.index
    assert list(expected[-2][:5]) == [index("über"), index("größe"), UNK, index("straße"), EOS]


# ---------------------------------------------------------------- models


@pytest.mark.parametrize("variant", VARIANTS)
def test_param_count_is_stable(variant):
    assert translator.build_model(variant).count_params() == DEFAULT_PARAMS[variant]
    assert translator.PUBLISHED_PARAMS[variant] is None


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_lstm_is_cudnn_eligible(variant):
    model = translator.build_model(variant, SMALL)
    lstms = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert [layer.name for layer in lstms] == ["encoder_lstm", "decoder_lstm"]
    for layer in lstms:
        assert layer.activation is keras.activations.tanh
        assert layer.recurrent_activation is keras.activations.sigmoid
        assert layer.recurrent_dropout == 0 and not layer.unroll and layer.use_bias
        assert cudnn_ineligible_reasons(layer) == []
    embeddings = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    assert len(embeddings) == 2 and all(layer.mask_zero for layer in embeddings)


@pytest.mark.parametrize("variant", VARIANTS)
def test_stepwise_decoder_reproduces_teacher_forcing(variant, synthetic):
    """The 1-step decoder used for greedy decoding is the training model, step by step
    (same weights, same attention mask over the encoder's padding)."""
    keras.utils.set_random_seed(0)
    model = translator.build_model(variant, SMALL, synthetic)
    (sources, decoder_inputs), labels = translation.teacher_forcing_arrays(
        synthetic.test_pairs[:16], synthetic
    )
    expected = model.predict([sources, decoder_inputs], verbose=0)
    decoder = translator.StepDecoder(model)
    encoder_outputs, source_mask, h, c = decoder.encode(tf.constant(sources))
    for t in range(decoder_inputs.shape[1]):
        token = tf.constant(decoder_inputs[:, t])
        embedded = decoder.target_embedding(token[:, None])
        outputs, h, c = decoder.decoder(embedded, initial_state=[h, c])
        if decoder.attention is not None:
            context = decoder.attention([outputs, encoder_outputs], mask=[None, source_mask])
            outputs = decoder.combine(tf.concat([outputs, context], axis=-1))
        step = decoder.next_word(outputs)[:, 0, :].numpy()
        valid = labels[:, t] != PAD
        np.testing.assert_allclose(step[valid], expected[valid, t], atol=1e-5)


def test_unknown_variant_is_rejected():
    with pytest.raises(KeyError):
        translator.build_model("transformer")


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("variant", VARIANTS)
def test_short_training_learns_the_synthetic_language(variant, trained):
    """Synthetic data: BLEU far above the ~0 of an untrained model, in seconds of CPU."""
    _, history, metrics = trained[variant]
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert metrics["bleu"] > 20, metrics
    assert 0.5 < metrics["token_accuracy"] <= 1.0
    assert list(metrics) == ["bleu", "loss", "token_accuracy"]


def test_reported_loss_and_accuracy_skip_padding(trained, synthetic):
    model, _, metrics = trained["seq2seq"]
    (sources, decoder_inputs), labels = translation.teacher_forcing_arrays(
        synthetic.test_pairs, synthetic
    )
    probabilities = model.predict([sources, decoder_inputs], verbose=0)
    valid = labels != PAD
    picked = np.take_along_axis(probabilities, labels[..., None], axis=-1)[..., 0]
    assert metrics["loss"] == pytest.approx(float(-np.log(picked[valid]).mean()), rel=1e-4)
    accuracy = (probabilities.argmax(-1) == labels)[valid].mean()
    assert metrics["token_accuracy"] == pytest.approx(float(accuracy), abs=1e-6)


def test_python_translation_handles_odd_input(trained, synthetic):
    model, _, _ = trained["attention"]
    out = translator.translate_python(model, synthetic, ODD_SENTENCES)
    assert len(out) == len(ODD_SENTENCES) and all(isinstance(t, str) for t in out)
    assert all(len(t.split()) <= synthetic.max_target_tokens + 1 for t in out)
    assert translator.translate_python(model, synthetic, []) == []


# ---------------------------------------------------------------- export


@pytest.mark.parametrize("variant", VARIANTS)
def test_saved_translate_equals_python_translation(variant, trained, exported, synthetic):
    model, _, _ = trained[variant]
    sentences = [english for english, _ in synthetic.test_pairs[:40]] + ODD_SENTENCES
    got = exported[variant].signatures["translate"](sentences=tf.constant(sentences))
    got = [text.decode("utf-8") for text in got["translation"].numpy()]
    assert got == translator.translate_python(model, synthetic, sentences)
    # Learned, not just consistent: most held-out sentences come out exactly right.
    references = [translation.reference_text(de) for _, de in synthetic.test_pairs[:40]]
    assert sum(g == r for g, r in zip(got, references)) >= 20


@pytest.mark.parametrize("variant", VARIANTS)
def test_saved_serving_default_equals_python_decoding(variant, trained, exported, synthetic):
    model, _, _ = trained[variant]
    sentences = [english for english, _ in synthetic.test_pairs[:40]] + ODD_SENTENCES
    ids = translation.encode_sources(sentences, synthetic.source_vocab, synthetic.source_len)
    got = exported[variant].signatures["serving_default"](source_ids=tf.constant(ids))
    got = got["translation_ids"]
    assert got.dtype == tf.int32 and got.shape == (len(sentences), synthetic.translation_len)
    np.testing.assert_array_equal(
        got.numpy(), translator.greedy_decode(model, ids, synthetic.translation_len)
    )


def test_saved_signatures_match_the_contract(exported, synthetic):
    loaded = exported["seq2seq"]
    ids_fn = loaded.signatures["serving_default"]
    text_fn = loaded.signatures["translate"]
    (ids_spec,) = ids_fn.structured_input_signature[1].values()
    (text_spec,) = text_fn.structured_input_signature[1].values()
    assert (ids_spec.name, ids_spec.dtype, ids_spec.shape.as_list()) == (
        "source_ids",
        tf.int32,
        [None, synthetic.source_len],
    )
    assert (text_spec.name, text_spec.dtype, text_spec.shape.as_list()) == (
        "sentences",
        tf.string,
        [None],
    )
    assert ids_fn.structured_outputs["translation_ids"].shape.as_list() == [
        None,
        synthetic.translation_len,
    ]
    assert text_fn.structured_outputs["translation"].shape.as_list() == [None]
    empty = text_fn(sentences=tf.constant([], tf.string))["translation"]
    assert empty.shape == (0,)


# ---------------------------------------------------------------- real-data files


DEU_LINES = [
    "Go.\tGeh.\tCC-BY 2.0 (France) Attribution: tatoeba.org #2877272 (CM) & #8597805 (Roujin)",
    "Hi.\tHallo!\tCC-BY 2.0 (France) Attribution: tatoeba.org #538123 (CM) & #380701 (cburgmer)",
    "Run!\tLauf!\tCC-BY 2.0 (France) Attribution: tatoeba.org #906328 (papabear)",
    "I'm cold.\tMir ist kalt.\tCC-BY 2.0",
    "We're late.\tWir sind spät dran.\tCC-BY 2.0",
    "Tom ate an apple.\tTom aß einen Apfel.\tCC-BY 2.0",
    "",  # a blank line is tolerated
    (
        "This sentence is far too long to be kept by the quick profile at all, really.\t"
        "Dieser Satz ist viel zu lang, um überhaupt behalten zu werden, wirklich, ganz sicher.\tCC"
    ),
    "The doors are open.\tDie Türen sind offen.\tCC-BY 2.0",
    "She's happy.\tSie ist glücklich.\tCC-BY 2.0",
    "Be nice.\tSei nett!",  # no attribution column: still a pair
]
EXPECTED_PAIRS = 9  # every line but the blank and the over-long one


def _write_deu(directory: Path) -> Path:
    path = directory / "deu.txt"
    path.write_text("\n".join(DEU_LINES) + "\n", encoding="utf-8")
    return path


def test_data_path_reads_deu_txt(tmp_path):
    path = _write_deu(tmp_path)
    data = translator.load_pairs(data_path=path, seed=0, config=SMALL)
    assert not data.synthetic and data.source == str(path)
    pairs = set(data.train_pairs) | set(data.test_pairs)
    assert len(pairs) == EXPECTED_PAIRS and ("Tom ate an apple.", "Tom aß einen Apfel.") in pairs
    assert ("Be nice.", "Sei nett!") in pairs


def test_data_path_reads_the_zip_like_the_txt(tmp_path):
    txt = _write_deu(tmp_path)
    archive = tmp_path / "deu-eng.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(txt, "deu.txt")
        zf.writestr("_about.txt", "attribution")
    from_zip = translator.load_pairs(data_path=archive, seed=0, config=SMALL)
    from_txt = translator.load_pairs(data_path=txt, seed=0, config=SMALL)
    assert from_zip.train_pairs == from_txt.train_pairs
    assert from_zip.test_pairs == from_txt.test_pairs
    assert from_zip.source == str(archive)


def test_quick_profile_keeps_the_first_pairs(tmp_path):
    config = translator.Config(quick_pairs=3)
    data = translator.load_pairs(data_path=_write_deu(tmp_path), quick=True, config=config)
    assert set(data.train_pairs) | set(data.test_pairs) == {
        ("Go.", "Geh."),
        ("Hi.", "Hallo!"),
        ("Run!", "Lauf!"),
    }


def test_a_tiny_real_file_trains_and_exports(tmp_path):
    data = translator.load_pairs(data_path=_write_deu(tmp_path), seed=0, config=SMALL)
    model = translator.build_model("attention", SMALL, data)
    history = translator.fit(model, data, epochs=2, batch_size=4, seed=0, verbose=0)
    assert len(history.history["loss"]) == 2
    assert set(translator.evaluate(model, data)) == {"bleu", "loss", "token_accuracy"}
    module = translator.make_export_module(model, data)
    out = module.translate(tf.constant(["Tom ate an apple.", "Türen?"]))["translation"]
    assert out.shape == (2,)


def _zip_without_deu(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("spa.txt", "Go.\tVe.\n")


BAD_FILES = [
    # (case, file name, how to write it or None for a missing file)
    ("missing", "deu.txt", None),
    ("no tab", "deu.txt", lambda p: p.write_text("Go. Geh.\n", encoding="utf-8")),
    ("empty german", "deu.txt", lambda p: p.write_text("Go.\t \tCC\n", encoding="utf-8")),
    ("empty file", "deu.txt", lambda p: p.write_text("\n\n", encoding="utf-8")),
    ("not utf-8", "deu.txt", lambda p: p.write_bytes(b"Go.\tGeh\xe4\xff.\n")),
    ("zip without deu.txt", "deu-eng.zip", _zip_without_deu),
    (
        "only over-long pairs",
        "deu.txt",
        lambda p: p.write_text(("w " * 20 + "\tx\n"), encoding="utf-8"),
    ),
]


@pytest.mark.parametrize(("case", "name", "write"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_data_path_raises_one_line_data_error(tmp_path, case, name, write):
    path = tmp_path / name
    if write is not None:
        write(path)
    with pytest.raises(DataError) as caught:
        translator.load_pairs(data_path=path, config=SMALL)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message, message
    assert not isinstance(caught.value, DatasetUnavailable)


def test_download_failure_raises_dataset_unavailable(monkeypatch):
    def offline(*args, **kwargs):
        # Keras' get_file wraps every URL error in a bare Exception.
        raise Exception(f"URL fetch failure on {translation.DATA_URL}: None")  # noqa: TRY002

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(DatasetUnavailable) as caught:
        translator.load_pairs(config=SMALL)
    assert translation.DATA_URL in str(caught.value) and "\n" not in str(caught.value)


def test_download_uses_get_file_with_a_timeout_and_restores_globals(monkeypatch, tmp_path):
    extracted = tmp_path / "deu-eng_extracted"
    extracted.mkdir()
    _write_deu(extracted)
    seen = {}

    def fake_get_file(fname, origin, extract):
        seen.update(fname=fname, origin=origin, extract=extract, timeout=socket.getdefaulttimeout())
        return str(extracted)

    opener_before = getattr(urllib.request, "_opener", None)
    timeout_before = socket.getdefaulttimeout()
    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    data = translator.load_pairs(quick=True, config=SMALL)
    assert seen == {
        "fname": "deu-eng.zip",
        "origin": translation.DATA_URL,
        "extract": True,
        "timeout": translation.DOWNLOAD_TIMEOUT_S,
    }
    assert data.source == translation.DATA_URL and not data.synthetic
    assert socket.getdefaulttimeout() == timeout_before
    assert getattr(urllib.request, "_opener", None) is opener_before
