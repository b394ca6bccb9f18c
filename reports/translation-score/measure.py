"""What `score` says about a translation: its distribution on image captions (Multi30k test2016,
in the training data of every translator) against English of other kinds (hotel review sentences
from SemEval ABSA and sentences from IMDB test reviews: out of the domain of a caption-only model,
nearer that of a general-domain one), through the service's own TranslationModel with the shipped
artifacts, as served on CPU (precision auto, beam 5). The set names keep the caption models' view.

    .venv/bin/python reports/translation-score/measure.py [--data-dir ../shared/data] [--n 500]

Writes reports/translation-score/scores.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import lzma
import random
import re
from pathlib import Path

import numpy as np

from service.runtime.translation import TranslationModel
from training.cross_cpu import cpu_name, isa

ROOT = Path(__file__).resolve().parents[2]


def lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [s.strip() for s in f]


def sentences(texts: list[str], rng: random.Random, n: int) -> list[str]:
    out = []
    for t in texts:
        for s in re.split(r"(?<=[.!?])\s+", t.replace("<br />", " ")):
            if 5 <= len(s.split()) <= 25 and s[:1].isupper() and s[-1:] in ".!?":
                out.append(s)
    rng.shuffle(out)
    return out[:n]


def summary(scores: list[float]) -> dict:
    a = np.array(scores)
    return {
        "n": len(a),
        "median": round(float(np.median(a)), 2),
        "p10": round(float(np.percentile(a, 10)), 2),
        "p90": round(float(np.percentile(a, 90)), 2),
        "share_below": {str(t): round(float((a < t).mean()), 3) for t in (-2, -5, -8, -10)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=500)
    args = ap.parse_args()
    rng = random.Random(14)
    hotels = [json.loads(x)["text"] for x in lines(args.data_dir / "sentiment/semeval_absa/hotels.jsonl.gz")]
    with lzma.open(args.data_dir / "imdb/imdb_test.jsonl.xz", "rt", encoding="utf-8") as f:
        imdb = [json.loads(x)["text"] for x in f]
    sets = {
        "in-domain: Multi30k test2016 (image captions)": lines(args.data_dir / "multi30k/test_2016_flickr.en.gz"),
        "out-of-domain: hotel review sentences (SemEval ABSA)": sentences(hotels, rng, args.n),
        "out-of-domain: IMDB test review sentences": sentences(imdb[:5000], rng, args.n),
    }
    report: dict = {
        "cpu": cpu_name(),
        "isa": isa(),
        "beam_size": 5,
        "precision": "auto (CPU: int8 decoder)",
        "pairs": {},
    }
    for pair in ("en-de", "en-fr"):
        m = TranslationModel(ROOT / "models" / f"translate-{pair}", precision="auto", threads=1)
        report["pairs"][pair] = {"model": m.version, "decoder": m.decoder_file, "sets": {}}
        for name, texts in sets.items():
            hyps = m.translate(texts, beam_size=5, attention=False)
            report["pairs"][pair]["sets"][name] = summary([h[0].score for h in hyps])
            print(pair, name, report["pairs"][pair]["sets"][name], flush=True)
    out = Path(__file__).with_name("scores.json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
