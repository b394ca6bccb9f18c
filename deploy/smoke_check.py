"""Is this plausibly a translation into the target language? The smoke checks' test of an answer,
beyond status 200: deploy/smoke.sh (on the image) and tests/test_smoke_server.py (on the server).

    python3 deploy/smoke_check.py de "A man is riding a bicycle." "Ein Mann fährt Fahrrad."   # exit 0
    python3 deploy/smoke_check.py --no-marks de "A dog runs." "Einin hin h ."  # a tiny model: exit 0

A translation passes when it is non-empty; written in Latin letters (no other script, mostly letters);
not an echo of the English source (not the source itself, at most half its words copied from it); and
carries the target language's marks: one of its common short words (articles, prepositions,
conjunctions) or one of its letters (ä ö ü ß; é è ê à ç ...). It does not judge quality: a fluent
German sentence about something else passes.

Standard library only: smoke.sh runs it with the host's python3, outside the project's venv.
"""

from __future__ import annotations

import re
import sys
import unicodedata

# Short words a sentence of the language nearly always has (as in Multi30k's captions), lowercase,
# leaving out those English has too (in, an, am): an English answer must not pass for German.
MARKS: dict[str, tuple[frozenset[str], str]] = {
    "de": (
        frozenset(
            [
                "der",
                "die",
                "das",
                "den",
                "dem",
                "des",
                "ein",
                "eine",
                "einer",
                "einem",
                "einen",
                "eines",
                "und",
                "oder",
                "mit",
                "auf",
                "im",
                "ist",
                "sind",
                "zwei",
                "drei",
                "vor",
                "von",
                "vom",
                "zu",
                "zum",
                "zur",
                "bei",
                "beim",
                "aus",
                "nach",
                "neben",
                "hinter",
                "unter",
                "über",
                "sich",
                "nicht",
                "für",
            ]
        ),
        "äöüß",
    ),
    "fr": (
        frozenset(
            [
                "le",
                "la",
                "les",
                "l",
                "un",
                "une",
                "des",
                "du",
                "de",
                "d",
                "et",
                "ou",
                "sur",
                "dans",
                "avec",
                "est",
                "sont",
                "en",
                "au",
                "aux",
                "à",
                "deux",
                "trois",
                "qui",
                "pour",
                "par",
                "devant",
                "derrière",
                "sous",
                "près",
                "se",
                "ne",
                "pas",
            ]
        ),
        "éèêëàâçùûüôîïœ",
    ),
}
WORD = re.compile(r"[^\W\d_]+", re.UNICODE)  # runs of letters; apostrophes split (l'homme -> l, homme)


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def problems(source: str, translation: str, target_lang: str, *, marks: bool = True) -> list[str]:
    """What makes `translation` implausible as `source` put into `target_lang` (empty: nothing).
    `marks=False` skips the last check, for models too small to have learned the language's words."""
    if target_lang not in MARKS:
        raise ValueError(f"no marks known for {target_lang!r}; known: {', '.join(MARKS)}")
    text = translation.strip()
    if not text:
        return ["the translation is empty"]
    out: list[str] = []
    letters = [c for c in text if c.isalpha()]
    foreign = sorted({c for c in letters if not unicodedata.name(c, "").startswith("LATIN ")})
    if foreign:
        out.append(f"letters outside the Latin script: {''.join(foreign)}")
    if len(letters) < 0.6 * len(text.replace(" ", "")):
        out.append(f"mostly not letters: {text!r}")
    got, src = words(text), words(source)
    common, letters_of = MARKS[target_lang]
    if got == src:
        out.append("the translation is the source, echoed")
    else:
        copied = [w for w in got if w in set(src) and w not in common]
        if got and len(copied) > len(got) / 2:
            out.append(f"more than half its words are the source's: {copied}")
    if marks and not (set(got) & common or set(text.lower()) & set(letters_of)):
        out.append(f"no mark of {target_lang} (none of its common words, nor {letters_of})")
    return out


def main(argv: list[str]) -> int:
    marks = "--no-marks" not in argv
    argv = [a for a in argv if a != "--no-marks"]
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    lang, source, translation = argv
    found = problems(source, translation, lang, marks=marks)
    for p in found:
        print(f"{lang}: {p}: {translation!r}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
