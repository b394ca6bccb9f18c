"""Names and numbers copied through translation, by placeholders (issue 21).

A subword model that saw "Anna" a few times and "555-0199" never garbles them ("Rufe 255019 am
Montag."). Instead, the source's numbers and the names the target language keeps as they are
become numbered placeholders that the model learned to carry to the right place, and the
translation gets the original strings back:

    Call Anna at 555-0199 on Monday.  ->  Call ⟦X0⟧ at ⟦N0⟧ on Monday.
    Ruf ⟦X0⟧ am Montag unter ⟦N0⟧ an.  ->  Ruf Anna am Montag unter 555-0199 an.

(the technique of Crego et al., "SYSTRAN's Pure Neural Machine Translation Systems", 2016, and
of Luong et al., 2015, for unknown words). Shared by training and the service, so that both mask
the same way:

- training (`mask_pair`): a number, or a capitalized word the lexicon says to copy, that also
  appears verbatim in the reference becomes the same placeholder on both sides;
- serving (`mask`): the same candidates, without a reference to check against;
- `unmask`: placeholders back to their strings; one the source did not have is dropped.

Which capitalized words are names is learned from the training pairs (`CopyLexicon`): "Tom" and
"Anna" appear unchanged in German references, "Monday" ("Montag") and "I" ("ich") do not. A
capitalized word the training text never had is taken for a name inside a sentence and left to
the model at its start ("Invoices must be paid." is not a name).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LEXICON_FILE = "copythrough.json"
SLOTS = 8  # placeholders per kind; a sentence's ninth name is left to the model
NUMBER, NAME = "N", "X"
PLACEHOLDERS = [f"⟦{kind}{i}⟧" for kind in (NUMBER, NAME) for i in range(SLOTS)]
_PLACEHOLDER = re.compile(r"⟦([NX])([0-9])⟧")
_BRACKETS = str.maketrans({"⟦": "[", "⟧": "]"})  # input cannot forge a placeholder

# A number: digits with inner separators ("555-0199", "3.5", "10:30", "1,000"), not glued to
# letters ("3rd", "v2" and "COVID19" are words). A word: letters, inner hyphens ("Jean-Pierre").
_NUMBER = re.compile(r"(?<!\w)\d+(?:[.,:/-]\d+)*(?!\w)")
_WORD = re.compile(r"(?<![\w-])[^\W\d_]+(?:-[^\W\d_]+)*(?![\w])")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s)[\W_]*$")
MIN_COPY_RATE = 0.5


def _capitalized(word: str) -> bool:
    return word[0].isupper()


def _initial(text: str, start: int) -> bool:
    """Whether the word at `start` begins a sentence (only quotes, brackets, dashes before it)."""
    return _SENTENCE_START.search(text[max(0, start - 200) : start]) is not None


def _occurs(s: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(s)}(?![\w])", text) is not None


@dataclass
class CopyLexicon:
    """For each capitalized word of the training sources: how often it occurred, and how often
    the reference had it verbatim. `copies(word, initial)` is the masking rule."""

    counts: dict[str, list[int]] = field(default_factory=dict)  # word -> [copied, seen]

    @classmethod
    def build(cls, sources: Iterable[str], targets: Iterable[str]) -> CopyLexicon:
        seen: Counter[str] = Counter()
        copied: Counter[str] = Counter()
        for s, t in zip(sources, targets, strict=True):
            words = {m.group() for m in _WORD.finditer(s) if _capitalized(m.group())}
            for w in words:
                seen[w] += 1
                copied[w] += _occurs(w, t)
        return cls({w: [copied[w], n] for w, n in sorted(seen.items())})

    def copies(self, word: str, initial: bool) -> bool:
        c = self.counts.get(word)
        if c is None:
            return not initial
        return c[0] >= MIN_COPY_RATE * c[1]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"min_copy_rate": MIN_COPY_RATE, "counts": self.counts}, ensure_ascii=False))

    @classmethod
    def load(cls, path: Path) -> CopyLexicon:
        return cls(json.loads(path.read_text(encoding="utf-8"))["counts"])


def _candidates(text: str, lexicon: CopyLexicon) -> list[tuple[int, int, str]]:
    """(start, end, kind) of every number and every capitalized word the lexicon copies, in order."""
    found = [(m.start(), m.end(), NUMBER) for m in _NUMBER.finditer(text)]
    for m in _WORD.finditer(text):
        w = m.group()
        if _capitalized(w) and lexicon.copies(w, _initial(text, m.start())):
            found.append((m.start(), m.end(), NAME))
    return sorted(found)


def _assign(text: str, spans: list[tuple[int, int, str]]) -> tuple[str, dict[str, str]]:
    """Replace the spans by placeholders, numbered by kind in order of first appearance (the same
    string twice gets the same one); spans past SLOTS of a kind stay as they are."""
    slots: dict[str, str] = {}
    by_string: dict[tuple[str, str], str] = {}
    used = {NUMBER: 0, NAME: 0}
    out, pos = [], 0
    for start, end, kind in spans:
        s = text[start:end]
        ph = by_string.get((kind, s))
        if ph is None:
            if used[kind] == SLOTS:
                continue
            ph = f"⟦{kind}{used[kind]}⟧"
            used[kind] += 1
            by_string[(kind, s)] = ph
            slots[ph] = s
        out += [text[pos:start], ph]
        pos = end
    out.append(text[pos:])
    return "".join(out), slots


def mask(text: str, lexicon: CopyLexicon) -> tuple[str, dict[str, str]]:
    """A source sentence as the model sees it, and {placeholder: original string}."""
    text = text.translate(_BRACKETS)
    return _assign(text, _candidates(text, lexicon))


def mask_batch(texts: Sequence[str], lexicon: CopyLexicon | None) -> tuple[list[str], list[dict[str, str]]]:
    """mask() over a batch; without a lexicon (a model trained without placeholders), unchanged."""
    if lexicon is None:
        return list(texts), [{} for _ in texts]
    done = [mask(t, lexicon) for t in texts]
    return [d[0] for d in done], [d[1] for d in done]


def mask_pair(src: str, tgt: str, lexicon: CopyLexicon) -> tuple[str, str]:
    """A training pair: only candidates the reference has verbatim become placeholders, on both
    sides (every occurrence in the reference)."""
    src, tgt = src.translate(_BRACKETS), tgt.translate(_BRACKETS)
    spans = [(a, b, k) for a, b, k in _candidates(src, lexicon) if _occurs(src[a:b], tgt)]
    masked, slots = _assign(src, spans)
    for ph, s in sorted(slots.items(), key=lambda kv: -len(kv[1])):  # "Anna-Lena" before "Anna"
        tgt = re.sub(rf"(?<![\w-]){re.escape(s)}(?![\w])", ph, tgt)
    return masked, tgt


def unmask(text: str, slots: dict[str, str] | None) -> str:
    """Placeholders back to their strings; any the source did not have is dropped."""
    if "⟦" not in text:
        return text
    out = _PLACEHOLDER.sub(lambda m: (slots or {}).get(m.group(), ""), text)
    return " ".join(out.split())
