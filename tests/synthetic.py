"""Small synthetic datasets in the real on-disk formats, so tests run anywhere in seconds.

IMDB: `imdb/imdb_{train,test}.jsonl.xz` with reviews whose label follows their words.
Short texts: `sentiment/<source>/<split>.jsonl.gz` for three of the real sources, one-liners likewise.
Multi30k: `multi30k/{train,val,test_2016_flickr}.{en,de,fr}.gz`, captions translated word by word.
"""

from __future__ import annotations

import gzip
import json
import lzma
import random
from pathlib import Path

POS = ["great", "wonderful", "moving", "superb", "brilliant", "funny", "beautiful", "loved"]
NEG = ["awful", "boring", "dull", "terrible", "waste", "stupid", "bad", "hated"]
FILL = [
    "the",
    "film",
    "movie",
    "acting",
    "story",
    "plot",
    "was",
    "and",
    "a",
    "it",
    "really",
    "i",
    "this",
    "<br /><br />",
]

LEX = {  # en -> (de, fr)
    "a": ("ein", "un"),
    "man": ("mann", "homme"),
    "dog": ("hund", "chien"),
    "woman": ("frau", "femme"),
    "child": ("kind", "enfant"),
    "runs": ("rennt", "court"),
    "sits": ("sitzt", "assis"),
    "plays": ("spielt", "joue"),
    "in": ("im", "dans"),
    "park": ("park", "parc"),
    "snow": ("schnee", "neige"),
    "street": ("straße", "rue"),
    "red": ("roter", "rouge"),
    "big": ("großer", "grand"),
    "small": ("kleiner", "petit"),
    "water": ("wasser", "eau"),
}
SUBJ, VERB, PLACE, ADJ = (
    ["man", "dog", "woman", "child"],
    ["runs", "sits", "plays"],
    ["park", "snow", "street", "water"],
    ["red", "big", "small"],
)


def review(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILL) for _ in range(rng.randint(5, 60))]
    for _ in range(rng.randint(1, 4)):
        words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label else NEG))
    return " ".join(words).capitalize() + "."


def write_imdb(root: Path, n_train: int = 400, n_test: int = 200, seed: int = 0) -> None:
    rng = random.Random(seed)
    (root / "imdb").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = [{"id": i, "rating": 9 if i % 2 else 2, "label": i % 2, "text": review(rng, i % 2)} for i in range(n)]
        with lzma.open(root / "imdb" / f"imdb_{split}.jsonl.xz", "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


SHORT_SETS = {  # source -> {split file: rows}
    "sst2": {"train": 300, "dev": 60},
    "yelp_shen_sentences": {"dev": 300, "test": 300},
    "semeval_twitter": {"train": 500},
}


def one_liner(rng: random.Random, label: int) -> str:
    words = [rng.choice(FILL[:-1]) for _ in range(rng.randint(1, 8))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(POS if label else NEG))
    return " ".join(words)


def write_short_sets(root: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    for source, splits in SHORT_SETS.items():
        (root / "sentiment" / source).mkdir(parents=True, exist_ok=True)
        for split, n in splits.items():
            with gzip.open(root / "sentiment" / source / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
                f.writelines(json.dumps({"text": one_liner(rng, i % 2), "label": i % 2}) + "\n" for i in range(n))


def caption(rng: random.Random) -> tuple[str, str, str]:
    en = ["a"]
    if rng.random() < 0.5:
        en.append(rng.choice(ADJ))
    en += [rng.choice(SUBJ), rng.choice(VERB), "in", rng.choice(PLACE)]
    de = [LEX[w][0] for w in en]
    fr = [LEX[w][1] for w in en]
    return " ".join(en).capitalize() + ".", " ".join(de).capitalize() + ".", " ".join(fr).capitalize() + "."


def write_multi30k(root: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> None:
    rng = random.Random(seed)
    sizes = sizes or {"train": 600, "val": 40, "test_2016_flickr": 40}
    (root / "multi30k").mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        rows = [caption(rng) for _ in range(n)]
        for k, lang in enumerate(("en", "de", "fr")):
            with gzip.open(root / "multi30k" / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.writelines(r[k] + "\n" for r in rows)


def write_general(root: Path, n_tatoeba: int = 500, n_news: int = 80, n_dev: int = 40, seed: int = 1) -> None:
    """translation/ as staged for issue 21: Tatoeba (some English sentences with two
    translations, as in the real set), news (two captions a line) and newstest2013, per pair."""
    rng = random.Random(seed)
    base = root / "translation"

    def write(path: Path, lines: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(x + "\n" for x in lines)

    tat = [caption(rng) for _ in range(n_tatoeba)]
    tat += [(en, de.replace(".", "!"), fr.replace(".", "!")) for en, de, fr in tat[: n_tatoeba // 10]]
    news = [tuple(f"{a} {b}" for a, b in zip(caption(rng), caption(rng), strict=True)) for _ in range(n_news)]
    dev = [tuple(f"{a} {b}" for a, b in zip(caption(rng), caption(rng), strict=True)) for _ in range(n_dev)]
    for k, tgt in ((1, "de"), (2, "fr")):
        pair = f"en-{tgt}"
        for lang, col in (("en", 0), (tgt, k)):
            write(base / "tatoeba" / f"train.{pair}.{lang}.gz", [r[col] for r in tat])
            write(base / "news" / pair / f"train.{lang}.gz", [r[col] for r in news])
            write(base / "dev" / f"newstest2013.{pair}.{lang}.gz", [r[col] for r in dev])
