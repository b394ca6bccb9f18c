"""Greedy validation BLEU by epoch of the general-domain runs (2 workers): en-de of 2026-12-05,
4 epochs without and with names and numbers copied through, and 6 epochs with copy-through and
bfloat16 matrix products in the same wall time; en-fr, 4 epochs with copy-through (2026-12-05) and
the 6-epoch bf16 recipe (2026-12-06, shipped) (docs/history.md). Reads the history files beside
this script, writes compare.png.

    python reports/translation-general/compare.py
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

HERE = Path(__file__).parent
RUNS = {
    "en-de": {
        "4 epochs": "en-de-2workers-history.json",
        "4 epochs + copy-through": "en-de-copythrough-history.json",
        "6 epochs bf16 + copy-through": "en-de-bf16-6epochs-history.json",
        "6-epoch recipe, 10k vocabulary, fp32": "en-de-10k-fp32-history.json",
    },
    "en-fr": {
        "4 epochs + copy-through": "en-fr-copythrough-history.json",
        "6 epochs bf16 + copy-through": "en-fr-bf16-6epochs-history.json",
    },
}
STYLES = {  # one look per recipe in both rows
    "4 epochs": ("o--", "C0"),
    "4 epochs + copy-through": ("s-", "C1"),
    "6 epochs bf16 + copy-through": ("^-", "C2"),
    "6-epoch recipe, 10k vocabulary, fp32": ("D:", "C3"),
}
SETS = {
    "val_bleu_tatoeba": "Tatoeba slice",
    "val_bleu_newstest2013": "newstest2013",
    "val_bleu_multi30k": "Multi30k val",
}


def main() -> None:
    fig, grid = plt.subplots(len(RUNS), len(SETS), figsize=(12, 3.4 * len(RUNS)))
    for axes, (pair, runs) in zip(grid, RUNS.items(), strict=True):
        for label, name in runs.items():
            history = json.loads((HERE / name).read_text())
            epochs = [r["epoch"] for r in history]
            for ax, (key, title) in zip(axes, SETS.items(), strict=True):
                style, color = STYLES[label]
                ax.plot(epochs, [r[key] for r in history], style, color=color, label=label)
                ax.set_title(f"{pair}: {title}")
                ax.set_xlabel("epoch")
                ax.set_xticks(range(1, 7))
        axes[0].set_ylabel("greedy validation BLEU")
        axes[0].legend(loc="lower right", fontsize="small")
    fig.suptitle(
        "General-domain translators, 2 data-parallel workers on 2 cores (Intel Xeon with AMX; the 10k run: AMD EPYC, AVX2)"
    )
    fig.tight_layout()
    fig.savefig(HERE / "compare.png", dpi=100)


if __name__ == "__main__":
    main()
