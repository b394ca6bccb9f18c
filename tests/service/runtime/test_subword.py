"""The translation tokenizer shared by training and the service (service.runtime.subword):
SentencePiece with fixed special ids."""

from __future__ import annotations

import pytest
import sentencepiece as spm

from service.runtime.subword import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Subword, clean, train_sentencepiece
from tests.synthetic import caption

# --- subword (SentencePiece) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    import random as _r

    rng = _r.Random(0)
    rows = [caption(rng) for _ in range(400)]
    texts = [r[0] for r in rows] + [r[1] for r in rows]
    return train_sentencepiece(texts, tmp_path_factory.mktemp("spm") / "joint", vocab_size=60)


def test_subword_clean():
    assert clean("  A\tdog\x00runs\n\n in ﬁelds ") == "A dog runs in fields"
    assert clean("") == ""


def test_subword_special_ids_and_roundtrip(spm_model):
    sw = Subword(spm_model)
    assert (sw.sp.pad_id(), sw.sp.unk_id(), sw.sp.bos_id(), sw.sp.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    assert 10 < len(sw) <= 60
    for text in ["A man runs in the park.", "Ein großer hund spielt im schnee.", "  A   dog\tsits in water. "]:
        ids = sw.encode(text)
        assert ids and all(i > EOS_ID for i in ids)  # no specials, no unknowns: all seen in training
        assert sw.decode(ids) == clean(text)
        assert "".join(sw.pieces(ids)).replace("\u2581", " ").strip() == clean(text)
    assert sw.encode_batch(["A dog.", "Ein mann."]) == [sw.encode("A dog."), sw.encode("Ein mann.")]


def test_subword_decode_drops_specials_keeps_unknowns(spm_model):
    sw = Subword(spm_model)
    ids = sw.encode("A child plays.")
    assert sw.decode([BOS_ID, *ids, EOS_ID, PAD_ID, PAD_ID]) == "A child plays."
    unk = sw.encode("A ✓ plays.")  # never seen in training
    assert UNK_ID in unk
    assert "\u2047" in sw.decode(unk)  # SentencePiece's visible unknown mark, not silently dropped


def test_subword_refuses_a_model_with_other_special_ids(tmp_path):
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a man runs in the park"] * 50 + ["a dog sits"] * 50),
        model_prefix=str(tmp_path / "default"),
        vocab_size=20,
        hard_vocab_limit=False,
        minloglevel=2,
    )  # sentencepiece defaults: unk=0 bos=1 eos=2, no pad
    with pytest.raises(ValueError, match="special ids"):
        Subword(tmp_path / "default.model")
