"""How the shipped sentiment model does outside IMDB: accuracy on short labelled texts from other
domains (../shared/data/sentiment), through the service's own SentimentModel as served on CPU
(precision auto). None of these sets was used to train or choose the model.

    .venv/bin/python reports/sentiment-domains/measure.py [--data-dir ../shared/data] [--n 2000]

Writes reports/sentiment-domains/accuracy.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

import numpy as np

from service.runtime.sentiment import SentimentModel

ROOT = Path(__file__).resolve().parents[2]
SETS = {
    "sst2/dev.jsonl.gz": "movie-review sentences (SST-2 dev)",
    "amazon_blitzer_mdsd/titles.jsonl.gz": "Amazon review titles (one-liners)",
    "semeval_absa/hotels.jsonl.gz": "hotel review sentences",
    "tweeteval_sentiment/test.jsonl.gz": "tweets (TweetEval test)",
    "amazon_blitzer_mdsd/reviews.jsonl.gz": "Amazon reviews (books, DVD, electronics, kitchen)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    m = SentimentModel(ROOT / "models" / "sentiment", precision="auto", threads=1)
    report: dict = {"model": m.version, "sets": {}}
    for file, what in SETS.items():
        with gzip.open(args.data_dir / "sentiment" / file, "rt", encoding="utf-8") as f:
            rows = [json.loads(x) for x in f]
        random.Random(14).shuffle(rows)
        rows = rows[: args.n]
        probs = m.predict([r["text"] for r in rows])
        pred = probs.argmax(1)
        gold = np.array([r["label"] for r in rows])
        report["sets"][file] = {
            "what": what,
            "n": len(rows),
            "positive_share": round(float(gold.mean()), 3),
            "accuracy": round(float((pred == gold).mean()), 4),
            "wrong_with_p_over_0.9": round(float(((pred != gold) & (probs.max(1) > 0.9)).mean()), 4),
        }
        print(file, report["sets"][file], flush=True)
    out = Path(__file__).with_name("accuracy.json")
    out.write_text(json.dumps(report, indent=1) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
