"""What a load run sends: real texts, read from the project's datasets or from a file.

    load_texts(dataset_file("sentiment", default_data_dir()), limit=2000, seed=0)

Sentiment bodies come from IMDB test reviews, translation bodies from Multi30k validation
sentences (`dataset_file`), or from any file of one text a line, or JSON lines with a "text"
field (.gz and .xz read as such). `load_texts` draws a seeded sample of the whole file;
`read_texts` returns every text in file order.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import lzma
import random
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from service.settings import PROJECT_ROOT


class LoadTestError(RuntimeError):
    """The load test cannot run (no data, server not serving): exit status 2."""


def default_data_dir() -> Path:
    shared = PROJECT_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else PROJECT_ROOT / "data"


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _lines(path: Path) -> Iterator[str]:
    """Non-empty texts of a file: JSON lines with a "text" field, or plain lines."""
    with _open_text(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                    line = str(json.loads(line)["text"])
            yield line


def _sample(texts: Iterator[str], k: int, rng: random.Random) -> list[str]:
    """Reservoir sample: k texts from a stream of unknown length (IMDB files are sorted by label)."""
    out: list[str] = []
    for i, t in enumerate(texts):
        if i < k:
            out.append(t)
        elif (j := rng.randrange(i + 1)) < k:
            out[j] = t
    return out


def dataset_file(endpoint: str, data_dir: Path, source_lang: str = "en") -> Path:
    if endpoint == "sentiment":
        candidates = [data_dir / "imdb" / f"imdb_{s}.jsonl.xz" for s in ("test", "train")]
    else:
        candidates = [data_dir / "multi30k" / f"{s}.{source_lang}.gz" for s in ("val", "test_2016_flickr", "train")]
    for c in candidates:
        if c.is_file():
            return c
    raise LoadTestError(
        f"no {endpoint} data under {data_dir} (looked for {', '.join(c.name for c in candidates)}); "
        "pass --data-dir or --texts-file"
    )


def load_texts(path: Path, *, limit: int = 2000, seed: int = 0, max_chars: int | None = None) -> list[str]:
    """Texts to send: a seeded sample of at most `limit` texts of `path` (see `_lines`)."""
    texts = _sample((t for t in _lines(path) if max_chars is None or len(t) <= max_chars), limit, random.Random(seed))
    if not texts:
        raise LoadTestError(f"{path} holds no usable text")
    return texts


def read_texts(path: Path) -> list[str]:
    """Every text of `path` (see `_lines`), in file order."""
    return list(_lines(path))
