"""Names and numbers copied through translation (service.runtime.copythrough): the lexicon's
rule, masking for serving and for training, and the strings put back."""

from __future__ import annotations

from service.runtime.copythrough import PLACEHOLDERS, SLOTS, CopyLexicon, mask, mask_batch, mask_pair, unmask
from service.runtime.subword import Subword, train_sentencepiece

PAIRS = [
    ("Tom is here.", "Tom ist hier."),
    ("I saw Tom on Monday.", "Ich habe Tom am Montag gesehen."),
    ("Monday is a holiday.", "Montag ist ein Feiertag."),
    ("The dog sleeps.", "Der Hund schläft."),
    ("London is big.", "London ist groß."),
    ("I live in London.", "Ich wohne in London."),
    ("I like London.", "Ich mag Londres."),  # a reference that does not keep it, once
]


def lexicon() -> CopyLexicon:
    return CopyLexicon.build([s for s, _ in PAIRS], [t for _, t in PAIRS])


def test_lexicon_counts_how_often_the_reference_keeps_a_capitalized_word():
    lex = lexicon()
    assert lex.counts["Tom"] == [2, 2] and lex.counts["Monday"] == [0, 2] and lex.counts["I"] == [0, 3]
    assert lex.counts["London"] == [2, 3] and "dog" not in lex.counts
    assert lex.copies("Tom", initial=True) and lex.copies("London", initial=False)
    assert not lex.copies("Monday", initial=False) and not lex.copies("I", initial=False)
    # never seen: a name inside a sentence, left to the model at its start
    assert lex.copies("Anna", initial=False) and not lex.copies("Invoices", initial=True)


def test_lexicon_round_trips_through_its_file(tmp_path):
    lex = lexicon()
    lex.save(tmp_path / "copythrough.json")
    assert CopyLexicon.load(tmp_path / "copythrough.json") == lex


def test_mask_turns_names_and_numbers_into_placeholders_and_unmask_puts_them_back():
    masked, slots = mask("Call Anna at 555-0199 on Monday.", lexicon())
    assert masked == "Call ⟦X0⟧ at ⟦N0⟧ on Monday."
    assert slots == {"⟦X0⟧": "Anna", "⟦N0⟧": "555-0199"}
    assert unmask("Ruf ⟦X0⟧ am Montag unter ⟦N0⟧ an.", slots) == "Ruf Anna am Montag unter 555-0199 an."
    # a placeholder the source did not have is dropped, not shown
    assert unmask("Ruf ⟦X0⟧ ⟦X3⟧ an.", slots) == "Ruf Anna an."
    assert unmask("Nichts zu tun.", {}) == "Nichts zu tun."


def test_mask_leaves_words_glued_to_digits_and_sentence_initial_unknowns_alone():
    lex = lexicon()
    masked, slots = mask("Invoices for 3rd-quarter v2 sales grew 12% in 2020.", lex)
    assert masked == "Invoices for 3rd-quarter v2 sales grew ⟦N0⟧% in ⟦N1⟧."
    assert slots == {"⟦N0⟧": "12", "⟦N1⟧": "2020"}
    # the same string twice is one placeholder; numbers with separators stay whole
    masked, slots = mask('"Tom?" Tom paid 1,000.50 at 10:30, not 1,000.50.', lex)
    assert masked == '"⟦X0⟧?" ⟦X0⟧ paid ⟦N0⟧ at ⟦N1⟧, not ⟦N0⟧.'
    assert slots == {"⟦X0⟧": "Tom", "⟦N0⟧": "1,000.50", "⟦N1⟧": "10:30"}


def test_input_cannot_forge_a_placeholder():
    masked, slots = mask("Print ⟦N0⟧ and 7 please", lexicon())
    assert masked == "Print [N0] and ⟦N0⟧ please" and slots == {"⟦N0⟧": "7"}


def test_a_sentence_past_the_slots_keeps_its_extra_numbers_as_they_are():
    text = " ".join(str(10 + i) for i in range(SLOTS + 2))
    masked, slots = mask(text, lexicon())
    assert len(slots) == SLOTS and masked.split()[-2:] == [str(10 + SLOTS), str(11 + SLOTS)]
    assert unmask(masked, slots) == text


def test_mask_pair_masks_only_what_the_reference_keeps_on_both_sides():
    lex = lexicon()
    src, tgt = mask_pair("I called Tom and Anna at 555-0199 and 42.", "Ich rief Tom und Anne unter 555-0199 an.", lex)
    assert src == "I called ⟦X0⟧ and Anna at ⟦N0⟧ and 42."
    assert tgt == "Ich rief ⟦X0⟧ und Anne unter ⟦N0⟧ an."
    # every occurrence in the reference, the longer string first
    src, tgt = mask_pair("Then Anna-Lena met Anna.", "Dann traf Anna-Lena Anna. Anna lachte.", lex)
    assert src == "Then ⟦X0⟧ met ⟦X1⟧." and tgt == "Dann traf ⟦X0⟧ ⟦X1⟧. ⟦X1⟧ lachte."


def test_mask_batch_without_a_lexicon_changes_nothing():
    assert mask_batch(["Call Anna at 555-0199."], None) == (["Call Anna at 555-0199."], [{}])
    masked, slots = mask_batch(["Call Anna.", "7 dogs."], lexicon())
    assert masked == ["Call ⟦X0⟧.", "⟦N0⟧ dogs."] and slots == [{"⟦X0⟧": "Anna"}, {"⟦N0⟧": "7"}]


def test_sentencepiece_keeps_each_placeholder_one_piece(tmp_path):
    texts = [mask_pair(s, t, lexicon())[k] for s, t in PAIRS * 20 for k in (0, 1)]
    model = train_sentencepiece(texts, tmp_path / "spm", 400, user_symbols=PLACEHOLDERS, byte_fallback=True)
    tok = Subword(model)
    masked, slots = mask("Call Anna at 555-0199 on Monday.", lexicon())
    ids = tok.encode(masked)
    assert "⟦X0⟧" in tok.pieces(ids) and "⟦N0⟧" in tok.pieces(ids)
    assert unmask(tok.decode(ids), slots) == "Call Anna at 555-0199 on Monday."
    assert all(len(tok.encode(p)) <= 2 for p in PLACEHOLDERS)  # the piece, maybe after a lone "▁"
