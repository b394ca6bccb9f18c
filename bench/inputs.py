"""The texts the benchmarks send: real test data, chosen the same way on every run."""

from __future__ import annotations

import random
from pathlib import Path

from loadgen.data import default_data_dir, read_texts

__all__ = ["default_data_dir", "imdb_reviews", "multi30k_sentences"]


def imdb_reviews(data_dir: Path, n: int, seed: int) -> list[str]:
    """n IMDB test reviews, a fixed random sample (the file is ordered negatives first)."""
    texts = read_texts(data_dir / "imdb" / "imdb_test.jsonl.xz")
    return random.Random(seed).sample(texts, min(n, len(texts)))


def multi30k_sentences(data_dir: Path, lang: str, n: int) -> list[str]:
    """The first n sentences of the Multi30k 2016 Flickr test set in `lang`."""
    return read_texts(data_dir / "multi30k" / f"test_2016_flickr.{lang}.gz")[:n]
