"""IMDB reviews (Maas et al., 2011): reading, downloading, the validation split, batching.

Two layouts are read: the project's shared copy (`imdb/imdb_{train,test}.jsonl.xz`) and the
official archive unpacked (`aclImdb/{train,test}/{pos,neg}/*.txt`). When neither is present the
official `aclImdb_v1.tar.gz` is downloaded and unpacked into the data directory.
"""

from __future__ import annotations

import json
import lzma
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.data import download, safe_extract

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"


@dataclass(frozen=True)
class Review:
    text: str
    label: int  # 1 = positive (rating 7-10), 0 = negative (rating 1-4)


def _read_jsonl(path: Path) -> list[Review]:
    with lzma.open(path, "rt", encoding="utf-8") as f:
        return [Review(r["text"], int(r["label"])) for r in map(json.loads, f)]


def _read_acl(split_dir: Path) -> list[Review]:
    out = []
    for name, label in (("neg", 0), ("pos", 1)):
        for p in sorted((split_dir / name).glob("*.txt")):
            out.append(Review(p.read_text(encoding="utf-8"), label))
    return out


def load_split(data_dir: Path, split: str, *, url: str = IMDB_URL) -> list[Review]:
    """All reviews of `split` ("train" or "test"), downloading the archive if needed."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    jsonl = data_dir / "imdb" / f"imdb_{split}.jsonl.xz"
    if jsonl.exists():
        return _read_jsonl(jsonl)
    acl = data_dir / "aclImdb" / split
    if not acl.is_dir():
        archive = data_dir / "aclImdb_v1.tar.gz"
        if not archive.exists():
            download(url, archive, desc="IMDB aclImdb_v1.tar.gz")
        safe_extract(archive, data_dir)
    reviews = _read_acl(acl)
    if not reviews:
        raise FileNotFoundError(f"no reviews found under {acl}")
    return reviews


def stratified_split(reviews: Sequence[Review], val_fraction: float, seed: int) -> tuple[list[Review], list[Review]]:
    """Carve a validation set out of train with the same label balance, reproducibly."""
    rng = random.Random(seed)
    train, val = [], []
    for label in (0, 1):
        group = [r for r in reviews if r.label == label]
        rng.shuffle(group)
        n_val = round(len(group) * val_fraction)
        val += group[:n_val]
        train += group[n_val:]
    rng.shuffle(train)
    rng.shuffle(val)
    return train, val


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, *, shuffle: bool, seed: int = 0, bucket_factor: int = 50
) -> Iterator[list[int]]:
    """Index batches of similar length, so a batch pads little.

    Shuffled mode sorts within random pools of `bucket_factor` batches and shuffles the batch
    order, keeping randomness while wasting little padding.
    """
    idx = list(range(len(lengths)))
    if not shuffle:
        idx.sort(key=lambda i: lengths[i])
        for s in range(0, len(idx), batch_size):
            yield idx[s : s + batch_size]
        return
    rng = random.Random(seed)
    rng.shuffle(idx)
    pool = batch_size * bucket_factor
    batches = []
    for s in range(0, len(idx), pool):
        chunk = sorted(idx[s : s + pool], key=lambda i: lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    yield from batches
