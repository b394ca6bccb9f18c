"""Sentence splitting for translation (service.runtime.sentences) and its use by the translator
(TranslationModel.translate_texts): a paragraph is translated sentence by sentence and joined,
not cut; names and numbers come through."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.runtime.sentences import MAX_UNITS, Unit, split_text, split_texts
from service.runtime.translation import TranslationModel

SHIPPED = Path(__file__).resolve().parents[3] / "models"


def test_one_sentence_is_one_unit_stripped():
    assert split_text("  Please send me the invoice by Friday. ") == [Unit("Please send me the invoice by Friday.", "")]
    assert split_text("no final stop") == [Unit("no final stop", "")]


def test_sentences_split_and_abbreviations_kept():
    units = split_text("Call Anna at 555-0199 on Monday. Dr. Smith will see you at 5 p.m. Thanks!")
    assert [u.text for u in units] == [
        "Call Anna at 555-0199 on Monday.",
        "Dr. Smith will see you at 5 p.m.",
        "Thanks!",
    ]
    assert [u.separator for u in units] == [" ", " ", ""]


def test_line_and_paragraph_breaks_are_kept_as_separators():
    units = split_text("First line.\nSecond line.\n\nNew paragraph. Its second sentence.")
    assert [(u.text, u.separator) for u in units] == [
        ("First line.", "\n"),
        ("Second line.", "\n\n"),
        ("New paragraph.", " "),
        ("Its second sentence.", ""),
    ]


def test_lone_surrogates_become_spaces_as_the_tokenizer_reads_them():
    assert split_text("\ud800 awful \udfff") == [Unit("awful", "")]


def test_whitespace_only_text_is_one_empty_unit():
    assert split_text("   ") == [Unit("", "")]


def test_a_text_of_very_many_sentences_is_cut_into_at_most_max_units_runs():
    text = " ".join(f"S{i}." for i in range(100))
    units = split_text(text, max_units=8)
    assert len(units) == 8 and [u.separator for u in units] == [" "] * 7 + [""]
    assert " ".join(u.text for u in units) == text  # nothing lost, order kept
    assert len(split_text(text)) == MAX_UNITS


def test_split_texts_spans_and_join_round_trip():
    texts = ["One. Two.", "Three.", "Four!\n\nFive?"]
    split = split_texts(texts)
    assert split.sentences == ["One.", "Two.", "Three.", "Four!", "Five?"]
    assert [split.sentences[s] for s in split.spans] == [["One.", "Two."], ["Three."], ["Four!", "Five?"]]
    assert split.join(split.sentences) == texts  # joining the sentences themselves gives the texts back
    assert split.join(["1", "2", "3", "4", "5"]) == ["1 2", "3", "4\n\n5"]
    with pytest.raises(ValueError, match="4 translations for 5"):
        split.join(["1", "2", "3", "4"])


# --- with the shipped translators ---------------------------------------------------------------


@pytest.fixture(scope="module", params=["en-de", "en-fr"])
def shipped(request):
    folder = SHIPPED / f"translate-{request.param}"
    if not (folder / "metadata.json").exists():
        pytest.skip(f"no shipped model in {folder}")
    return TranslationModel(folder, precision="auto")


def test_paragraph_is_translated_sentence_by_sentence(shipped):
    first, second = "A man is riding a bicycle down the street.", "Two dogs play in the snow."
    alone = [shipped.detok(h[0]) for h in shipped.translate([first, second])]
    [joined] = shipped.translate_texts([f"{first} {second}"])
    assert joined.text == f"{alone[0]} {alone[1]}"
    assert len(joined.best) == 2 and joined.score == pytest.approx(min(h.score for h in joined.best))
    # one sentence: exactly what translate() gives
    [single] = shipped.translate_texts([first], n_best=3)
    ref = shipped.translate([first], n_best=3)[0]
    assert single.text == shipped.detok(ref[0]) and single.score == ref[0].score
    assert single.alternatives == [(shipped.detok(h), h.score) for h in ref[1:]]


def test_text_alignment_is_block_diagonal_over_sentences(shipped):
    [t] = shipped.translate_texts(["A dog runs. A child sits."])
    a = shipped.text_alignment(t)
    n0 = len(t.source_ids[0])
    rows0 = len(t.best[0].tokens)
    assert len(a["weights"]) == len(a["target_tokens"]) == sum(len(h.tokens) for h in t.best)
    assert all(len(r) == len(a["source_tokens"]) for r in a["weights"])
    assert all(w == 0.0 for r in a["weights"][:rows0] for w in r[n0:])
    assert all(w == 0.0 for r in a["weights"][rows0:] for w in r[:n0])


def test_names_and_numbers_are_copied_through(shipped):
    """Issue 21's check. The caption-only models shipped before issue 21 fail it (they have never
    seen a phone number): it is expected to fail until a general-domain model ships."""
    [t] = shipped.translate_texts(["Call Anna at 555-0199 on Monday."])
    if "general" not in shipped.name:
        pytest.xfail(f"{shipped.name} is a caption-only model: {t.text!r}")
    assert "Anna" in t.text and "555-0199" in t.text, t.text
