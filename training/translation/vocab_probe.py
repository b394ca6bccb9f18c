"""How a joint SentencePiece vocabulary of each size cuts chosen words, trained on a pair's
general-domain text exactly as the recipe prepares it (each training pair once, copy-through
placeholders, byte fallback, split digits). A word the vocabulary cuts into short pieces is one the
model has to spell out; the en-de model on 8k dropped "invoice" (▁in vo ic e), which 10k keeps
whole, and en-de trains on 10k for that (docs/history.md).

    python -m training.translation.vocab_probe --pair en-de --sizes 8000 9000 10000 12000 \\
        --words invoice password revenue update
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import sentencepiece as spm

from service.runtime.copythrough import PLACEHOLDERS, CopyLexicon
from service.runtime.subword import train_sentencepiece
from training.translation.data import load_general
from training.translation.train import mask_pairs

WORDS = ("invoice", "password", "subscription", "meeting", "revenue", "quarterly", "cancel", "update")


def cuts(texts: list[str], sizes: list[int], words: list[str], folder: Path) -> dict[int, dict[str, list[str]]]:
    """{size: {word: pieces}} for a joint vocabulary of each size trained on `texts`."""
    opts = {"byte_fallback": True, "split_digits": True, "character_coverage": 0.9999, "user_symbols": PLACEHOLDERS}
    out = {}
    for n in sizes:
        model = train_sentencepiece(texts, folder / f"joint{n}", n, **opts)
        sp = spm.SentencePieceProcessor(model_file=str(model))
        out[n] = {w: sp.encode(w, out_type=str) for w in words}
    return out


def training_text(data_dir: Path, pair: str) -> list[str]:
    """Both sides of every general-domain training pair, once, masked as train.py masks them."""
    src, tgt = pair.split("-")
    corpus = load_general(data_dir, src, tgt)
    vs = [x for s, _ in corpus.train.values() for x in s]
    vt = [x for _, t in corpus.train.values() for x in t]
    vs, vt = mask_pairs(vs, vt, CopyLexicon.build(vs, vt))
    return vs + vt


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="en-de")
    p.add_argument("--sizes", type=int, nargs="+", default=[8000, 10000])
    p.add_argument("--words", nargs="+", default=list(WORDS))
    p.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    p.add_argument("--out", type=Path, default=None, help="also write the cuts as JSON here")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        found = cuts(training_text(a.data_dir, a.pair), a.sizes, a.words, Path(tmp))
    for n, by_word in found.items():
        print(f"joint {n}: " + ", ".join(f"{w} {' '.join(pieces)}" for w, pieces in by_word.items()), flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"pair": a.pair, "cuts": found}, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
