"""Choose the pooling over time by validation: the same short training for each choice.

    python -m training.sentiment.select_pooling --out runs/pooling --epochs 2

Every pooling (last / max / mean / attention) gets the same data, seed, epochs and budget;
the validation accuracy of each is written to `<out>/pooling.json` and plotted in
`<out>/pooling.png`. The shipped config uses the winner (see SentimentConfig.pooling).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from training.data import default_data_dir
from training.sentiment.model import POOLINGS, SentimentConfig
from training.sentiment.train import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/pooling"))
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-len", type=int, default=256, help="shorter than the shipped model, to keep the study cheap")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    results = {}
    for pooling in POOLINGS:
        cfg = SentimentConfig(pooling=pooling, max_len=a.max_len, head_len=min(64, a.max_len))
        tcfg = TrainConfig(epochs=a.epochs, patience=a.epochs, limit=a.limit)
        rep = train(a.out / pooling, a.data_dir or default_data_dir(), cfg, tcfg)
        results[pooling] = {
            "best_val_acc": rep["best_val_acc"],
            "train_seconds": rep["train_seconds"],
            "history": rep["history"],
        }
        print(pooling, results[pooling]["best_val_acc"], flush=True)
    best = max(results, key=lambda k: results[k]["best_val_acc"])
    summary = {
        "winner": best,
        "epochs": a.epochs,
        "max_len": a.max_len,
        "config": dataclasses.asdict(SentimentConfig(max_len=a.max_len, head_len=min(64, a.max_len))),
        "results": results,
    }
    (a.out / "pooling.json").write_text(json.dumps(summary, indent=2))
    from training.plots import plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    accs = [100 * results[k]["best_val_acc"] for k in POOLINGS]
    ax.bar(POOLINGS, accs, color=["C2" if k == best else "C0" for k in POOLINGS])
    ax.set_ylim(min(accs) - 2, max(accs) + 1)
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"IMDB pooling over time ({a.epochs} epochs each)")
    for i, v in enumerate(accs):
        ax.text(i, v + 0.1, f"{v:.2f}", ha="center")
    fig.tight_layout()
    fig.savefig(a.out / "pooling.png", dpi=110)
    print(f"winner: {best}")


if __name__ == "__main__":
    main()
