"""Multi30k task 1 (Elliott et al., 2016; French: 2017): reading and downloading.

Files are `{split}.{lang}.gz`, one sentence a line, aligned across languages, under
`<data-dir>/multi30k/`. Missing files are fetched from the official repository's raw data.
"""

from __future__ import annotations

import gzip
import random
from dataclasses import dataclass
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


# --- the general-domain corpus (issue 21) -------------------------------------------------------
#
# Staged under `<data-dir>/translation/` (README and PROVENANCE*.md there): Tatoeba everyday
# sentence pairs, WMT news sentences from past years as training text, newstest2013 as a
# development set. Not downloaded for you: they were assembled (and cleaned of test-set overlap)
# once, and the README names their sources.

TATOEBA_VAL_PAIRS = 2000  # the held-out Tatoeba slice: validation only, never trained on
TATOEBA_VAL_SEED = 21


def _read_gz(path: Path) -> list[str]:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the general-domain translation data are staged in <data-dir>/translation/ "
            "(see its README.md); they are not downloaded automatically"
        )
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def _aligned(src_path: Path, tgt_path: Path) -> tuple[list[str], list[str]]:
    s, t = _read_gz(src_path), _read_gz(tgt_path)
    if len(s) != len(t):
        raise ValueError(f"{src_path.name}: {len(s)} lines but {tgt_path.name} has {len(t)}")
    return s, t


def tatoeba_split(
    data_dir: Path, src: str, tgt: str, *, n_val: int = TATOEBA_VAL_PAIRS, seed: int = TATOEBA_VAL_SEED
) -> dict[str, tuple[list[str], list[str]]]:
    """Tatoeba split into train and a held-out validation slice of about `n_val` pairs.

    Tatoeba often has several translations of one English sentence, so the split is by source
    sentence (case- and space-normalised): every pair of a held-out sentence is held out, and no
    validation source is ever seen in training. Deterministic: a seeded shuffle of the distinct
    sources, taken in that order until `n_val` pairs are held out."""
    pair = f"{src}-{tgt}"
    s, t = _aligned(data_dir / "translation" / "tatoeba" / f"train.{pair}.{src}.gz",
                    data_dir / "translation" / "tatoeba" / f"train.{pair}.{tgt}.gz")  # fmt: skip
    key = [" ".join(x.lower().split()) for x in s]
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(key):
        groups.setdefault(k, []).append(i)
    order = sorted(groups)
    random.Random(seed).shuffle(order)
    held: set[int] = set()
    for k in order:
        if len(held) >= n_val:
            break
        held.update(groups[k])
    val = sorted(held)
    train = [i for i in range(len(s)) if i not in held]
    return {"train": ([s[i] for i in train], [t[i] for i in train]), "val": ([s[i] for i in val], [t[i] for i in val])}


def load_news(data_dir: Path, src: str, tgt: str) -> tuple[list[str], list[str]]:
    d = data_dir / "translation" / "news" / f"{src}-{tgt}"
    return _aligned(d / f"train.{src}.gz", d / f"train.{tgt}.gz")


def load_newstest2013(data_dir: Path, src: str, tgt: str) -> tuple[list[str], list[str]]:
    d = data_dir / "translation" / "dev"
    return _aligned(d / f"newstest2013.{src}-{tgt}.{src}.gz", d / f"newstest2013.{src}-{tgt}.{tgt}.gz")


@dataclass(frozen=True)
class Corpus:
    """The training sources (each with its own mixture weight) and the validation sets of a pair."""

    train: dict[str, tuple[list[str], list[str]]]
    valid: dict[str, tuple[list[str], list[str]]]

    def mixture(self, weights: dict[str, float], seed: int = 0) -> tuple[list[str], list[str], list[str]]:
        """The training pairs repeated by weight (2.0: twice; 0.5: a seeded half), with each
        pair's source name. Weights apply to the whole epoch; a source with weight 0 is left out."""
        rng = random.Random(seed)
        src, tgt, names = [], [], []
        for name, (s, t) in self.train.items():
            w = float(weights.get(name, 1.0))
            whole, frac = int(w), w - int(w)
            idx = list(range(len(s))) * whole
            if frac:
                idx += sorted(rng.sample(range(len(s)), round(frac * len(s))))
            src += [s[i] for i in idx]
            tgt += [t[i] for i in idx]
            names += [name] * len(idx)
        return src, tgt, names


def load_general(data_dir: Path, src: str, tgt: str) -> Corpus:
    """The union corpus of a pair: Tatoeba (minus its held-out slice), WMT news, Multi30k train;
    validation: the Tatoeba slice, newstest2013, Multi30k val. Multi30k test2016 is not read."""
    tat = tatoeba_split(data_dir, src, tgt)
    return Corpus(
        train={"tatoeba": tat["train"], "news": load_news(data_dir, src, tgt), "multi30k": load_pair(data_dir, "train", src, tgt)},
        valid={"tatoeba": tat["val"], "newstest2013": load_newstest2013(data_dir, src, tgt), "multi30k": load_pair(data_dir, "val", src, tgt)},
    )  # fmt: skip


def evaluation_sets(data_dir: Path, src: str, tgt: str, corpus: str = "multi30k") -> dict[str, dict]:
    """{"validation": {name: (sources, references)}, "test": {...}} for a model trained on `corpus`:
    Multi30k val (the caption recipe), or the Tatoeba slice, newstest2013 and Multi30k val (the
    general recipe); the test set is Multi30k test2016 for both, only ever reported."""
    if corpus == "general":
        validation = {
            "tatoeba": tatoeba_split(data_dir, src, tgt)["val"],
            "newstest2013": load_newstest2013(data_dir, src, tgt),
            "multi30k": load_pair(data_dir, "val", src, tgt),
        }
    elif corpus == "multi30k":
        validation = {"multi30k": load_pair(data_dir, "val", src, tgt)}
    else:
        raise ValueError(f"corpus must be 'multi30k' or 'general', not {corpus!r}")
    return {"validation": validation, "test": {"multi30k": load_pair(data_dir, "test", src, tgt)}}


def evenly(pair: tuple[list[str], list[str]], n: int) -> tuple[list[str], list[str]]:
    """At most n pairs of a set, evenly spaced through it (the Tatoeba slice is ordered by length)."""
    s, t = pair
    if not n or len(s) <= n:
        return s, t
    idx = [round(k * (len(s) - 1) / (n - 1)) for k in range(n)] if n > 1 else [0]
    return [s[i] for i in idx], [t[i] for i in idx]


# What the model card says of the general-domain data (the staged README's and PROVENANCE's words).
GENERAL_DATA = {
    "dataset": "Tatoeba + WMT news + Multi30k task 1",
    "sources": {
        "tatoeba": "Tatoeba sentence pairs via manythings.org (en-de 2018-05-13, en-fr 2019-04-07), cleaned of "
        "public Tatoeba test-set overlap; CC-BY 2.0 (credit tatoeba.org and manythings.org)",
        "news": "WMT news test sets 2008-2012 and 2015-2020 as training text (not 2013, 2014, 2019), "
        "deduplicated, via Helsinki-NLP/OPUS-MT-testsets; WMT terms, research use",
        "multi30k": "Multi30k task 1 (Elliott et al., 2016; French: 2017), image captions; as released by the "
        "multi30k/dataset repository",
    },
    "validation": "a held-out slice of Tatoeba (about 2,000 pairs, split by English sentence, seed 21), "
    "newstest2013 (3,000), Multi30k val (1,014)",
    "test": "Multi30k test_2016_flickr (1,000)",
}
