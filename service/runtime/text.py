"""Word tokenizer and vocabulary for the sentiment model.

One source of truth: training builds the vocabulary with this module and the service encodes
requests with it, so the two cannot drift.

    >>> tokenize("It's <br /><br />GREAT!!")
    ["it's", 'great', '!', '!']
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1

_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_HTML_TAG = re.compile(r"</?[a-z][^>]{0,40}>", re.IGNORECASE)
# Words keep inner apostrophes and hyphens ("don't", "well-made"); digits group; any other
# visible character (punctuation, emoji, CJK ideograph) becomes a token of its own.
_TOKEN = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*|[^\w\s]|_", re.UNICODE)
_APOSTROPHES = re.compile("[\u2019\u2018`\u00b4]")  # a regex scan is ~10x faster than str.translate
_CONTROL_WHITESPACE = re.compile("[\t\n\r\v\f]")
_VARIATION_SELECTORS = re.compile("[\ufe00-\ufe0f]")
_MAX_REPEAT = re.compile(r"(\W)\1{3,}")  # "!!!!!!!" carries no more than "!!!!"
# Tweets: a link or a handle says nothing about sentiment by its letters; one token stands for all.
_URL = re.compile(r"\b(?:https?://|www\.)\S+", re.IGNORECASE)
_HANDLE = re.compile(r"(?<!\w)@\w+")
# CJK ideographs are word characters to `re`, but the script puts no spaces between words: split them.
_CJK = re.compile(r"([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f])")


def normalize(text: str) -> str:
    """NFKC-normalize, drop HTML breaks/tags and control characters, mask links and handles, lowercase."""
    text = _APOSTROPHES.sub("'", text)  # before NFKC, which turns "\u00b4" into " \u0301"
    text = _APOSTROPHES.sub("'", unicodedata.normalize("NFKC", text))  # and after: NFKC makes "`" of "\uff40"
    text = _HTML_BREAK.sub(" ", text)
    text = _HTML_TAG.sub(" ", text)
    # Control/format characters separate words; emoji variation selectors (invisible) go.
    # Fast path: ASCII whitespace is the only control character most texts hold, and a printable
    # str has no character of category C at all, so the per-character loop is needed only for the rest.
    text = _VARIATION_SELECTORS.sub("", _CONTROL_WHITESPACE.sub(" ", text))
    if not text.isprintable():
        text = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in text)
    text = _MAX_REPEAT.sub(r"\1\1\1\1", text)
    text = _HANDLE.sub("@user", _URL.sub("http", text))
    return text.lower()


def tokenize(text: str) -> list[str]:
    """Split normalized text into word and punctuation tokens."""
    return _TOKEN.findall(_CJK.sub(r" \1 ", normalize(text)))


class Vocab:
    """Token <-> id mapping; id 0 is padding, id 1 stands for unknown words."""

    def __init__(self, tokens: Sequence[str]):
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"vocabulary must start with {PAD!r}, {UNK!r}")
        self.itos: list[str] = list(tokens)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary has duplicate tokens")

    @classmethod
    def build(cls, texts: Iterable[Sequence[str]], max_size: int, min_freq: int = 2) -> Vocab:
        """Most frequent tokens first (ties broken alphabetically, so builds are reproducible)."""
        counts: Counter[str] = Counter()
        for toks in texts:
            counts.update(toks)
        ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        return cls([PAD, UNK, *ranked[: max_size - 2]])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        get = self.stoi.get
        return [get(t, UNK_ID) for t in tokens]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.itos, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocab:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def sha256(self) -> str:
        return hashlib.sha256("\n".join(self.itos).encode("utf-8")).hexdigest()


def truncate_head_tail(ids: Sequence[int], max_len: int, head: int) -> list[int]:
    """Keep the first `head` and the last `max_len - head` ids of an over-long sequence.

    Reviews put their verdict at the start or the end; keeping both beats a plain cut
    (Sun et al., 2019, "How to Fine-Tune BERT for Text Classification", table 3).
    """
    if len(ids) <= max_len:
        return list(ids)
    return list(ids[:head]) + list(ids[len(ids) - (max_len - head) :])


def encode_tokens(tokens: Sequence[str], vocab: Vocab, max_len: int, head: int) -> list[int]:
    """A text's tokens as the sentiment model reads them: ids, head and tail kept, never empty.

    The one encoding both the service and training use (an empty text becomes one padding id)."""
    return truncate_head_tail(vocab.encode(tokens), max_len, head) or [PAD_ID]
