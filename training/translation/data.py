"""Multi30k task 1 (Elliott et al., 2016; French: 2017): reading and downloading.

Files are `{split}.{lang}.gz`, one sentence a line, aligned across languages, under
`<data-dir>/multi30k/`. Missing files are fetched from the official repository's raw data.
"""

from __future__ import annotations

import gzip
from pathlib import Path

from training.data import download

MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}


def load_lines(data_dir: Path, split: str, lang: str, *, base_url: str = MULTI30K_URL) -> list[str]:
    name = f"{SPLITS[split]}.{lang}.gz"
    path = data_dir / "multi30k" / name
    if not path.exists():
        download(f"{base_url}/{name}", path, desc=f"Multi30k {name}")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def load_pair(data_dir: Path, split: str, src: str, tgt: str, **kw) -> tuple[list[str], list[str]]:
    s, t = load_lines(data_dir, split, src, **kw), load_lines(data_dir, split, tgt, **kw)
    if len(s) != len(t):
        raise ValueError(f"{split}: {len(s)} {src} lines but {len(t)} {tgt} lines")
    return s, t
