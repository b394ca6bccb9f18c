"""Choose joint vs per-language SentencePiece vocabularies by validation BLEU.

    python -m training.translation.select_vocab --pair en-de --epochs 3 --out runs/vocab-en-de

Trains the same model for the same few epochs with (a) one joint 8k vocabulary and shared,
tied embeddings and (b) separate 8k vocabularies per language (tied output embeddings only),
and records greedy validation BLEU per epoch in `<out>/vocab.json` (+ `vocab.png`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from training.data import default_data_dir
from training.plots import plot_curves
from training.translation.model import TranslationConfig
from training.translation.train import TrainConfig, train


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="en-de")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=0)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    src, tgt = a.pair.split("-")
    out = a.out or Path(f"runs/vocab-{a.pair}")
    variants = {
        "joint": TranslationConfig(src_lang=src, tgt_lang=tgt, joint_vocab=True, share_embeddings=True),
        "separate": TranslationConfig(src_lang=src, tgt_lang=tgt, joint_vocab=False, share_embeddings=False),
    }
    results = {}
    for name, cfg in variants.items():
        rep = train(
            out / name,
            a.data_dir or default_data_dir(),
            cfg,
            TrainConfig(epochs=a.epochs, patience=a.epochs, limit=a.limit),
        )
        results[name] = {"best_val_bleu_greedy": rep["best_val_bleu_greedy"], "history": rep["history"]}
        print(name, rep["best_val_bleu_greedy"], flush=True)
    winner = max(results, key=lambda k: results[k]["best_val_bleu_greedy"])
    (out / "vocab.json").write_text(json.dumps({"winner": winner, "epochs": a.epochs, "results": results}, indent=2))
    merged = [
        {"epoch": h["epoch"], **{f"{k}_val_bleu": results[k]["history"][i]["val_bleu_greedy"] for k in results}}
        for i, h in enumerate(results["joint"]["history"])
    ]
    plot_curves(
        merged,
        out / "vocab.png",
        title=f"{a.pair}: joint vs separate vocabularies",
        panels=[("greedy val BLEU", [f"{k}_val_bleu" for k in results])],
    )
    print(f"winner: {winner}")


if __name__ == "__main__":
    main()
