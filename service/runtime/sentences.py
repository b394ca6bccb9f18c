"""Sentence splitting for translation: a text of several sentences is translated sentence by
sentence and the translations joined, so a paragraph is translated rather than cut or squeezed
into a model trained on single sentences.

The splitting is sentencex's (Wikimedia's sentence segmenter: rule-based, abbreviation lists per
language, compiled; a few microseconds a text), not rules of our own. What this module adds is
the bookkeeping: which units belong to which text, and the whitespace between them, so that a
translation keeps the text's line and paragraph breaks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import sentencex

_SURROGATES = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Unit:
    """One sentence of a text, and the whitespace that followed it in the text ("" after the
    last one; a single space between sentences of a line; the newlines between lines)."""

    text: str
    separator: str


def _separator(ws: str) -> str:
    """Line and paragraph breaks are kept (newlines only); anything else becomes one space."""
    return "\n" * ws.count("\n") if "\n" in ws else " "


# A text of 1,000 characters (the request limit) holds about 15 ordinary sentences. Hostile text
# ("a. a. a. ...") could hold hundreds, each costing a search with its own minimum output length;
# past this many, neighbouring sentences are translated together so a text never costs more than
# this many searches.
MAX_UNITS = 32


def _merge(units: list[Unit], n: int) -> list[Unit]:
    """`units` grouped into n runs of neighbours (as even as possible), each run one unit."""
    out = []
    for k in range(n):
        run = units[k * len(units) // n : (k + 1) * len(units) // n]
        text = "".join(u.text + u.separator for u in run[:-1]) + run[-1].text
        out.append(Unit(text, run[-1].separator))
    return out


def split_text(text: str, lang: str = "en", max_units: int = MAX_UNITS) -> list[Unit]:
    """The sentences of `text`, in order, each with the separator that followed it (at most
    `max_units`: beyond that, neighbouring sentences share a unit). A text with nothing to split
    (one sentence, or only whitespace) is one unit, stripped."""
    # Lone surrogates cannot cross into sentencex (UTF-8 only); the tokenizer reads them as spaces
    # anyway (service.runtime.subword.clean), so they become spaces here.
    text = _SURROGATES.sub(" ", text)
    units: list[Unit] = []
    pending_ws = ""
    for seg in sentencex.segment(lang, text):
        core = seg.strip()
        if not core:  # sentencex returns blank lines between paragraphs as segments of their own
            pending_ws += seg
            continue
        lead = seg[: len(seg) - len(seg.lstrip())]
        if units:
            units[-1] = Unit(units[-1].text, _separator(pending_ws + lead))
        pending_ws = seg[len(seg.rstrip()) :]
        units.append(Unit(core, ""))
    if len(units) > max_units:
        units = _merge(units, max_units)
    return units or [Unit(text.strip(), "")]


@dataclass(frozen=True)
class Split:
    """The units of a batch of texts: `units` flat, in order; `spans[i]` the slice of `units`
    that belongs to text i."""

    units: list[Unit]
    spans: list[slice]

    @property
    def sentences(self) -> list[str]:
        return [u.text for u in self.units]

    def join_span(self, span: slice, translations: Sequence[str]) -> str:
        """The translations of one text's units (`span`), with the text's separators between them."""
        parts = []
        for u, t in zip(self.units[span], translations, strict=True):
            parts += [t, u.separator]
        return "".join(parts).strip()

    def join(self, translations: Sequence[str]) -> list[str]:
        """One translated text per input text, from one translation per unit."""
        if len(translations) != len(self.units):
            raise ValueError(f"{len(translations)} translations for {len(self.units)} sentences")
        return [self.join_span(span, translations[span]) for span in self.spans]


def split_texts(texts: Sequence[str], lang: str = "en") -> Split:
    units: list[Unit] = []
    spans = []
    for t in texts:
        u = split_text(t, lang)
        spans.append(slice(len(units), len(units) + len(u)))
        units += u
    return Split(units, spans)
