"""Greedy validation BLEU by epoch of the general-domain en-de runs of 2026-12-05 (2 workers):
4 epochs without and with names and numbers copied through, and 6 epochs with copy-through and
bfloat16 matrix products in the same wall time (docs/history.md). Reads the history files beside
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
    "4 epochs": "en-de-2workers-history.json",
    "4 epochs + copy-through": "en-de-copythrough-history.json",
    "6 epochs bf16 + copy-through": "en-de-bf16-6epochs-history.json",
}
SETS = {
    "val_bleu_tatoeba": "Tatoeba slice",
    "val_bleu_newstest2013": "newstest2013",
    "val_bleu_multi30k": "Multi30k val",
}


def main() -> None:
    fig, axes = plt.subplots(1, len(SETS), figsize=(12, 3.6))
    for (label, name), style in zip(RUNS.items(), ("o--", "s-", "^-"), strict=True):
        history = json.loads((HERE / name).read_text())
        epochs = [r["epoch"] for r in history]
        for ax, (key, title) in zip(axes, SETS.items(), strict=True):
            ax.plot(epochs, [r[key] for r in history], style, label=label)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.set_xticks(epochs)
    axes[0].set_ylabel("greedy validation BLEU")
    axes[0].legend()
    fig.suptitle("General-domain en-de, 2 data-parallel workers (Intel Xeon, AMX, 2 cores)")
    fig.tight_layout()
    fig.savefig(HERE / "compare.png", dpi=100)


if __name__ == "__main__":
    main()
