"""The sentiment tokenizer shared by training and the service (service.runtime.text): words,
the vocabulary, head+tail truncation."""

from __future__ import annotations

import random
import re

import pytest

from service.runtime.text import PAD, UNK, Vocab, normalize, tokenize, truncate_head_tail
from service.runtime.text import UNK_ID as WORD_UNK_ID

# --- word tokenizer ----------------------------------------------------------------------------


def test_module_example():
    assert tokenize("It's <br /><br />GREAT!!") == ["it's", "great", "!", "!"]


@pytest.mark.parametrize(
    "text",
    [
        "Great<br />film",
        "Great<br/>film",
        "Great<BR>film",
        "Great<br >film",
        "Great <br /><br /> film",
        "Great<i>film</i>",
        "<p>Great</p> <b>film</b>",
    ],
)
def test_html_breaks_and_tags_become_separators(text):
    assert tokenize(text) == ["great", "film"]


def test_html_like_text_that_is_not_a_tag_is_kept():
    assert tokenize("a < b > c") == ["a", "<", "b", ">", "c"]
    assert tokenize("I <3 it") == ["i", "<", "3", "it"]


def test_case_is_folded():
    assert tokenize("GREAT Great gReAt great") == ["great"] * 4


def test_punctuation_is_split_and_long_runs_capped():
    assert tokenize("Bad, bad movie. Why?") == ["bad", ",", "bad", "movie", ".", "why", "?"]
    assert tokenize("Wow!!!!!!!!!!") == ["wow", "!", "!", "!", "!"]  # runs capped at four
    assert tokenize("Wow!!") == ["wow", "!", "!"]
    assert tokenize("A well-made, low-budget film") == ["a", "well-made", ",", "low-budget", "film"]
    assert tokenize("3.5/10") == ["3", ".", "5", "/", "10"]
    assert tokenize("snake_case") == ["snake", "_", "case"]


def test_unicode_is_nfkc_normalized():
    assert tokenize("ＧＲＥＡＴ ﬁlm") == ["great", "film"]  # fullwidth letters, the "fi" ligature
    composed, decomposed = "café", "cafe\u0301"
    assert composed != decomposed and tokenize(composed) == tokenize(decomposed) == ["café"]
    assert tokenize("Ünïcödé") == ["ünïcödé"]


@pytest.mark.parametrize("apostrophe", ["'", "\u2019", "\u2018", "`", "\u00b4", "\uff40"])
def test_apostrophe_variants_make_the_same_word(apostrophe):
    # "\u00b4" (acute accent, 141 IMDB reviews use it so) needs mapping before NFKC, which would
    # turn it into a space and a combining accent and split the word in three; the fullwidth
    # grave "\uff40" becomes "`" only through NFKC, so the mapping is also needed after it.
    assert tokenize(f"Don{apostrophe}t miss it{apostrophe}s end") == ["don't", "miss", "it's", "end"]


def test_links_and_handles_become_one_token_each():
    # Tweets: the letters of a link or a user name say nothing about sentiment.
    assert tokenize("@united lost my bag https://t.co/x1Y www.example.com/a?b=1 ugh") == [
        "@",
        "user",
        "lost",
        "my",
        "bag",
        "http",
        "http",
        "ugh",
    ]
    assert tokenize("mail me@example.com") == ["mail", "me", "@", "example", ".", "com"]  # not a handle


def test_quotes_around_words_are_separate_tokens():
    assert tokenize("'Quoted' rock'n'roll") == ["'", "quoted", "'", "rock'n'roll"]


def test_control_characters_separate_words():
    # NUL, tab, newline, NEL (\x85, common in IMDB as a cp1252 leftover), zero-width space
    assert tokenize("good\x00bad\tugly\nnice\x85fine\u200bzero\x1b") == ["good", "bad", "ugly", "nice", "fine", "zero"]
    assert all(ch.isprintable() for ch in normalize("a\x00b\x07c\r\nd"))


def _reference_normalize(text: str) -> str:
    """normalize() written the plain way, one character at a time: the fast path must agree with it."""
    import unicodedata

    apostrophes = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'", "\u00b4": "'"})
    text = unicodedata.normalize("NFKC", text.translate(apostrophes)).translate(apostrophes)
    text = re.sub(r"<br\s*/?>", " ", text, flags=re.IGNORECASE)
    text = re.sub(r"</?[a-z][^>]{0,40}>", " ", text, flags=re.IGNORECASE)
    text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text if not "\ufe00" <= ch <= "\ufe0f")
    text = re.sub(r"(\W)\1{3,}", r"\1\1\1\1", text)
    text = re.sub(r"\b(?:https?://|www\.)\S+", "http", text, flags=re.IGNORECASE)
    return re.sub(r"(?<!\w)@\w+", "@user", text).lower()


def test_fast_normalize_matches_the_per_character_reference():
    rng = random.Random(7)
    pools = [(0, 0x7F), (0x80, 0x3000), (0xFE00, 0xFE10), (0x2000, 0x206F), (0, 0x10FFFF)]
    texts = ["tab\there\nnew line\r\x0b\x0c", "e\u0301\ufe0f\u200b\u2028x\u00a0y", "\ud800 lone surrogate"]
    for _ in range(3000):
        texts.append("".join(chr(rng.randint(*rng.choice(pools))) for _ in range(rng.randint(0, 30))))
    for t in texts:
        assert normalize(t) == _reference_normalize(t), repr(t)


def test_emoji_are_tokens_of_their_own():
    assert tokenize("Great😀film 👍") == ["great", "😀", "film", "👍"]
    assert tokenize("I ❤️ it") == tokenize("I ❤ it") == ["i", "❤", "it"]  # the variation selector is invisible


def test_cjk_ideographs_are_tokens_of_their_own():
    assert tokenize("这部电影很好看 great") == ["这", "部", "电", "影", "很", "好", "看", "great"]
    assert tokenize("映画great") == ["映", "画", "great"]


def test_empty_and_blank_text():
    assert tokenize("") == []
    assert tokenize("  <br /> \n\t ") == []


# --- vocabulary --------------------------------------------------------------------------------

CORPUS = [tokenize(t) for t in ["the film was great", "the plot was dull", "great acting, great film", "a dull film"]]


def test_vocab_order_counts_then_alphabet():
    v = Vocab.build(CORPUS, max_size=100, min_freq=1)
    assert v.itos[:2] == [PAD, UNK]
    # film 3, great 3, the 2, was 2, dull 2, then singletons alphabetically
    assert v.itos[2:7] == ["film", "great", "dull", "the", "was"]
    assert v.itos[7:] == sorted(v.itos[7:])


def test_vocab_min_freq_and_max_size():
    v = Vocab.build(CORPUS, max_size=100, min_freq=2)
    assert v.itos == [PAD, UNK, "film", "great", "dull", "the", "was"]
    assert Vocab.build(CORPUS, max_size=4, min_freq=1).itos == [PAD, UNK, "film", "great"]


def test_vocab_build_is_reproducible():
    shuffled = CORPUS[:]
    random.Random(0).shuffle(shuffled)
    a, b = Vocab.build(CORPUS, 50, 1), Vocab.build(shuffled[::-1], 50, 1)
    assert a.itos == b.itos and a.sha256() == b.sha256()
    assert Vocab.build(CORPUS, 5, 1).sha256() != a.sha256()


def test_unknown_words_map_to_unk():
    v = Vocab.build(CORPUS, 50, 1)
    ids = v.encode(tokenize("The film was SPLENDIFEROUS"))
    assert ids[:3] == [v.stoi["the"], v.stoi["film"], v.stoi["was"]]
    assert ids[3] == WORD_UNK_ID == 1
    assert 0 not in v.encode(tokenize("anything at all, even <pad>"))  # padding is never produced


def test_vocab_save_load_roundtrip(tmp_path):
    v = Vocab.build(CORPUS + [["ünïcödé", "😀", "电"]] * 2, 50, 2)
    v.save(tmp_path / "vocab.json")
    w = Vocab.load(tmp_path / "vocab.json")
    assert w.itos == v.itos and w.sha256() == v.sha256()
    assert w.encode(["😀", "电", "nope"]) == [v.stoi["😀"], v.stoi["电"], 1]


def test_vocab_rejects_bad_tables():
    with pytest.raises(ValueError, match="must start with"):
        Vocab(["the", PAD, UNK])
    with pytest.raises(ValueError, match="duplicate"):
        Vocab([PAD, UNK, "a", "a"])


# --- head + tail truncation --------------------------------------------------------------------


def test_truncate_keeps_head_and_tail():
    ids = list(range(100))
    assert truncate_head_tail(ids, 10, 4) == [0, 1, 2, 3, 94, 95, 96, 97, 98, 99]
    assert truncate_head_tail(ids, 10, 10) == list(range(10))  # head only
    assert truncate_head_tail(ids, 100, 4) == ids  # fits: untouched
    assert truncate_head_tail(ids[:5], 10, 4) == [0, 1, 2, 3, 4]
    assert truncate_head_tail([], 10, 4) == []
    for n in (11, 37, 400):
        out = truncate_head_tail(list(range(n)), 10, 3)
        assert len(out) == 10 and out[:3] == [0, 1, 2] and out[3:] == list(range(n - 7, n))
