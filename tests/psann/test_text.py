"""Text input: the word tokenizer, sinusoidal token embeddings, and estimators fed token ids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from psann import (
    PSANNRegressor,
    ResConvPSANNRegressor,
    SimpleWordTokenizer,
    SineTokenEmbedder,
    WaveResNetRegressor,
)
from psann.errors import ValidationError

TEXTS = ["the cat sat on the mat", "The dog sat.", "a cat and a dog", "the end"]


# -- tokenizer -------------------------------------------------------------------------------------


def test_round_trip_of_known_words_with_bos_and_eos():
    tok = SimpleWordTokenizer().fit(TEXTS)
    ids = tok.encode("The dog sat on the mat.")
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "the dog sat on the mat ."
    assert tok.decode(ids, skip_special=False) == "<bos> the dog sat on the mat . <eos>"
    assert tok.vocabulary_[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert tok.vocabulary_[4] == "the"  # the most frequent word gets the first word id


def test_unknown_words_encode_to_the_unknown_id():
    tok = SimpleWordTokenizer(add_bos=False, add_eos=False).fit(TEXTS)
    ids = tok.encode("the zebra sat")
    assert ids[1] == tok.unk_id and tok.token_to_id("zebra") == tok.unk_id
    assert tok.decode(ids) == "the <unk> sat"


def test_vocabulary_limits_keep_the_most_frequent_words():
    tok = SimpleWordTokenizer(max_vocab=6).fit(TEXTS)
    assert tok.vocab_size == 6 and tok.vocabulary_[4:] == ["the", "a"]
    assert tok.decode(tok.encode("the dog")) == "the <unk>"
    frequent = SimpleWordTokenizer(min_freq=2).fit(TEXTS)
    assert set(frequent.vocabulary_[4:]) == {"the", "a", "cat", "dog", "sat"}


def test_case_folding_is_a_setting():
    tok = SimpleWordTokenizer(lowercase=False).fit(["The the"])
    assert tok.vocabulary_[4:] == ["The", "the"]


def test_encode_batch_pads_and_truncates():
    tok = SimpleWordTokenizer().fit(TEXTS)
    batch = tok.encode_batch(["the cat", "the cat sat on the mat"])
    assert batch.dtype == np.int64 and batch.shape == (2, 8)
    assert list(batch[0, 4:]) == [tok.pad_id] * 4
    cut = tok.encode_batch(["the cat", "the cat sat on the mat"], max_length=3)
    assert cut.shape == (2, 3) and tok.decode(cut[1]) == "the cat"


def test_save_and_load_encode_identically(tmp_path):
    tok = SimpleWordTokenizer(max_vocab=8, min_freq=1, add_bos=False).fit(TEXTS)
    path = tok.save(tmp_path / "tok.json")
    again = SimpleWordTokenizer.load(path)
    assert again.vocabulary_ == tok.vocabulary_ and again.add_bos is False and again.max_vocab == 8
    assert np.array_equal(again.encode_batch(TEXTS), tok.encode_batch(TEXTS))


def test_tokenizer_errors_name_the_argument(tmp_path):
    with pytest.raises(ValidationError) as err:
        SimpleWordTokenizer().encode("x")
    assert err.value.key == "vocabulary" and "not fitted" in str(err.value)
    with pytest.raises(TypeError) as err:
        SimpleWordTokenizer().fit("one text, not a list")
    assert err.value.key == "texts"
    with pytest.raises(TypeError) as err:
        SimpleWordTokenizer().fit(["ok", 3])
    assert err.value.key == "texts[1]"
    with pytest.raises(ValidationError) as err:
        SimpleWordTokenizer(max_vocab=4)
    assert err.value.key == "max_vocab" and "got 4" in str(err.value)
    with pytest.raises(ValidationError) as err:
        SimpleWordTokenizer(min_freq=0)
    assert err.value.key == "min_freq"
    tok = SimpleWordTokenizer().fit(TEXTS)
    with pytest.raises(ValidationError) as err:
        tok.decode([2, 999])
    assert err.value.key == "ids[1]" and "999" in str(err.value)
    with pytest.raises(ValidationError) as err:
        tok.encode("the", max_length=0)
    assert err.value.key == "max_length"
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValidationError) as err:
        SimpleWordTokenizer.load(tmp_path / "bad.json")
    assert err.value.key == "path"
    with pytest.raises(FileNotFoundError):
        SimpleWordTokenizer.load(tmp_path / "missing.json")


# -- embedder --------------------------------------------------------------------------------------


def test_embeddings_are_sines_and_cosines_at_base_frequencies():
    emb = SineTokenEmbedder(6, base=100.0, pad_id=None)
    expected_freqs = torch.tensor([100.0 ** (-2 * i / 6) for i in range(3)])
    assert torch.allclose(emb.frequencies, expected_freqs)
    out = emb(torch.tensor([[5, 7]]))
    assert out.shape == (1, 6, 2)
    for i, w in enumerate(expected_freqs.tolist()):
        assert out[0, 2 * i, 0].item() == pytest.approx(np.sin(5 * w), abs=1e-6)
        assert out[0, 2 * i + 1, 1].item() == pytest.approx(np.cos(7 * w), abs=1e-6)


def test_pad_positions_embed_to_zero_and_pooling_skips_them():
    emb = SineTokenEmbedder(4, pad_id=0)
    ids = torch.tensor([[3, 5, 0, 0]])
    seq = emb(ids)
    assert torch.equal(seq[0, :, 2:], torch.zeros(4, 2))
    pooled = SineTokenEmbedder(4, pad_id=0, pool=True)(ids)
    assert pooled.shape == (1, 4) and torch.allclose(pooled[0], seq[0, :, :2].mean(dim=1))


def test_learnable_frequencies_are_a_parameter():
    assert [n for n, _ in SineTokenEmbedder(4, learnable=True).named_parameters()] == ["frequencies"]
    assert list(SineTokenEmbedder(4).parameters()) == []


def test_embedder_errors_name_the_field():
    with pytest.raises(ValidationError) as err:
        SineTokenEmbedder(5)
    assert err.value.key == "dim" and "even" in str(err.value)
    with pytest.raises(ValidationError) as err:
        SineTokenEmbedder(4, base=1.0)
    assert err.value.key == "base"
    with pytest.raises(ValidationError) as err:
        SineTokenEmbedder.coerce({"dim": 4, "bse": 10.0})
    assert err.value.key == "embedder.bse" and "did you mean 'base'" in str(err.value)
    with pytest.raises(ValidationError) as err:
        SineTokenEmbedder(4, vocab_size=10, pad_id=10)
    assert err.value.key == "pad_id"


# -- estimators fed token ids ----------------------------------------------------------------------

RNG = np.random.default_rng(0)
IDS = RNG.integers(0, 12, size=(48, 6))
Y = (IDS == 3).sum(axis=1).astype(np.float32)
SMALL = dict(epochs=2, device="cpu", random_state=0)


@pytest.mark.parametrize(
    "make, width",
    [
        (lambda: PSANNRegressor(hidden_layers=1, hidden_units=8, embedder={"dim": 4}, **SMALL), 24),
        (lambda: WaveResNetRegressor(hidden_units=8, depth=1, embedder={"dim": 4}, **SMALL), 24),
        (lambda: ResConvPSANNRegressor(conv_channels=4, depth=1, embedder={"dim": 4}, **SMALL), 4),
        (lambda: PSANNRegressor(hidden_layers=1, hidden_units=8, embedder={"dim": 4, "pool": True}, **SMALL), 4),
    ],
)
def test_estimators_take_token_ids_and_see_the_embeddings(make, width):
    est = make().fit(IDS, Y)
    assert est.model_.net.dim_in == width  # (N, d, L) flattened, (N, d, L) channels, or pooled (N, d)
    assert est.n_features_in_ == 6 and est.predict(IDS).shape == (48,)
    assert float(est.model_.mean.abs().sum()) == 0.0  # ids are never standardised


def test_channels_last_and_per_position_outputs_with_an_embedder():
    y = np.stack([(IDS == 3), (IDS == 5)], axis=-1).astype(np.float32)  # (N, L, 2): channels last
    est = WaveResNetRegressor(hidden_units=8, depth=1, preserve_shape=True, data_format="channels_last",
                              embedder={"dim": 4}, **SMALL).fit(IDS, y)
    assert est.model_.net.dim_in == 4 and est.predict(IDS).shape == (48, 6, 2)


def test_a_learnable_embedder_trains_with_the_network():
    est = ResConvPSANNRegressor(conv_channels=4, depth=1, embedder=SineTokenEmbedder(4, learnable=True), **SMALL)
    est.fit(IDS, Y)
    assert not torch.equal(est.model_.embedder.frequencies.detach(), SineTokenEmbedder(4).frequencies)
    assert torch.equal(est.embedder.frequencies.detach(), SineTokenEmbedder(4).frequencies)  # the param is untouched


def test_token_id_inputs_are_checked_naming_x_and_its_shape():
    est = PSANNRegressor(hidden_layers=1, hidden_units=8, embedder={"dim": 4, "vocab_size": 10}, **SMALL)
    with pytest.raises(ValidationError) as err:
        est.fit(IDS.astype(np.float32), Y)
    assert err.value.key == "X" and "integer token ids" in str(err.value) and "float32" in str(err.value)
    with pytest.raises(ValidationError) as err:
        est.fit(IDS, Y)  # ids up to 11 with vocab_size 10
    assert err.value.key == "X" and "[0, 9]" in str(err.value) and "[0, 11]" in str(err.value)
    with pytest.raises(ValidationError) as err:
        est.fit(IDS[:, :, None] % 10, Y)
    assert err.value.key == "X" and "(48, 6, 1)" in str(err.value)
    with pytest.raises(ValidationError) as err:
        est.fit(torch.tensor(IDS % 10, dtype=torch.float32), Y)
    assert err.value.key == "X" and "torch.float32" in str(err.value)
    est.fit(IDS % 10, Y)
    with pytest.raises(ValidationError) as err:
        est.predict(IDS[:, :4] % 10)
    assert err.value.key == "X" and "length 6" in str(err.value) and "(48, 4)" in str(err.value)
    assert est.predict(torch.tensor(IDS % 10)).shape == (48,)  # an integer tensor is fine


def test_a_pooled_embedder_cannot_feed_a_convolution_or_per_position_outputs():
    with pytest.raises(ValidationError) as err:
        ResConvPSANNRegressor(conv_channels=4, depth=1, embedder={"dim": 4, "pool": True}, **SMALL).fit(IDS, Y)
    assert err.value.key == "embedder.pool"
    with pytest.raises(ValidationError) as err:
        WaveResNetRegressor(depth=1, preserve_shape=True, embedder={"dim": 4, "pool": True}, **SMALL).fit(IDS, Y)
    assert err.value.key == "embedder.pool"
    with pytest.raises(ValidationError) as err:
        PSANNRegressor(embedder={"dim": 3}, **SMALL).fit(IDS, Y)
    assert err.value.key == "embedder.dim"


def test_worked_text_regression_learns_a_word_count():
    """The docs' example, small: count the word 'good' minus 'bad' in short reviews."""
    rng = np.random.default_rng(1)
    words = ["good", "bad", "film", "plot", "actor", "long", "fine", "music"]
    texts = [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(192)]
    y = np.array([t.split().count("good") - t.split().count("bad") for t in texts], dtype=np.float32)
    tok = SimpleWordTokenizer().fit(texts)
    X = tok.encode_batch(texts, max_length=10)
    est = ResConvPSANNRegressor(conv_channels=16, depth=1, kernel_size=1, w0=1.0, epochs=20, batch_size=80,
                                lr=2e-2, device="cpu", random_state=0,
                                embedder={"dim": 8, "base": 10.0, "pad_id": tok.pad_id, "vocab_size": tok.vocab_size})
    est.fit(X[:160], y[:160])
    assert est.score(X[160:], y[160:]) > 0.5
