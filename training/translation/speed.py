"""Measure training speed (target tokens per second) of translation configurations on real data.

    python -m training.translation.speed --spm runs/translate-en-de/spm.src.model --pair en-de \
        --variant base: --variant small:dec_hidden=256 --budget 4000 --budget 8000

Each variant trains from a fresh model on the same batches of the general-domain mixture (token
batches, `token_batches`) for `--seconds` after a warm-up, one torch thread by default, and prints
target tokens/s, sentences/s and the projected minutes per epoch. Training code is train.py's
own (make_batch, loss, Adam, clipping), so the figure is what a run gets, give or take validation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from torch import nn

from service.runtime.subword import PAD_ID, Subword
from training.data import default_data_dir
from training.translation.model import Seq2Seq, TranslationConfig
from training.translation.train import (
    TrainConfig,
    budget_lengths,
    encode_pairs,
    load_corpus,
    make_batch,
    summed_loss,
    token_batches,
)


def step(model: Seq2Seq, opt: torch.optim.Optimizer, batch, bf16: bool = False, frequent=None) -> int:
    """One training step of one process: train.py's loss (summed_loss, without label smoothing;
    over a subset of the vocabulary with `frequent`) over the batch's non-pad targets, backward,
    gradients clipped to norm 1.0, Adam. `batch` is make_batch's (src, src_lengths, tgt_in,
    tgt_out). Returns the target tokens."""
    n = int((batch[3] != PAD_ID).sum())
    loss = summed_loss(model, batch, bf16, frequent=frequent) / n
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return n


def mixture_ids(
    tok: Subword, cfg: TranslationConfig, data_dir: Path, weights: str, max_len: int = 80
) -> tuple[list[list[int]], list[list[int]]]:
    """The general-domain training mixture as a run sees it: source and target ids under the joint
    SentencePiece model `tok`, pairs longer than `max_len` on either side left out."""
    src_tr, tgt_tr, *_ = load_corpus(data_dir, cfg, TrainConfig(corpus="general", weights=weights))
    return encode_pairs(tok, tok, src_tr, tgt_tr, max_len)


RECIPE_WEIGHTS = "tatoeba=1,news=1,multi30k=3"  # the Makefile's TRANSLATION_RECIPE


@dataclasses.dataclass
class Mixture:
    """One epoch of the recipe's mixture as a run batches it, and the recipe's model for its vocabulary."""

    cfg: TranslationConfig
    src: list[list[int]]
    tgt: list[list[int]]
    lengths: list[int]  # budget_lengths
    batches: list[list[int]]


def add_mixture_args(p: argparse.ArgumentParser) -> None:
    """The options of the benches that train on real batches of the mixture (recipe_mixture)."""
    p.add_argument("--pair", default="en-de")
    p.add_argument("--spm", type=Path, required=True, help="the joint SentencePiece model of the pair")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--budget", type=int, default=4000, help="target tokens per batch (the recipe's)")
    p.add_argument("--max-batch", type=int, default=256, help="sentences per batch at most (the recipe's)")
    p.add_argument("--seed", type=int, default=8, help="of the epoch's shuffle")


def recipe_mixture(a: argparse.Namespace) -> Mixture:
    """From add_mixture_args's options: the general-domain mixture at the recipe's weights and
    length cap, in token_batches at `--budget`, and the recipe's model sizes (dropout 0.2)."""
    tok = Subword(a.spm)
    src, tgt = a.pair.split("-")
    cfg = TranslationConfig(src_lang=src, tgt_lang=tgt, src_vocab=len(tok), tgt_vocab=len(tok), dropout=0.2)
    tr_s, tr_t = mixture_ids(tok, cfg, a.data_dir or default_data_dir(), RECIPE_WEIGHTS, TrainConfig.max_train_len)
    lengths = budget_lengths(tr_s, tr_t)
    batches = token_batches(lengths, a.budget, a.max_batch, shuffle=True, seed=a.seed)
    return Mixture(cfg, tr_s, tr_t, lengths, batches)


def measure(cfg: TranslationConfig, tr_s, tr_t, budget: int, max_batch: int, seconds: float, lr: float) -> dict:
    torch.manual_seed(0)
    model = Seq2Seq(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lengths = budget_lengths(tr_s, tr_t)
    batches = token_batches(lengths, budget, max_batch, shuffle=True, seed=1)
    tokens_epoch = sum(len(t) + 1 for t in tr_t)
    tok = sents = 0
    t0 = None
    for i, idx in enumerate(batches):
        if i == 3:
            t0, tok, sents = time.time(), 0, 0
        tok += step(model, opt, make_batch(tr_s, tr_t, idx))
        sents += len(idx)
        if t0 is not None and time.time() - t0 >= seconds:
            break
    dt = time.time() - t0
    return {
        "tgt_tokens_per_s": round(tok / dt),
        "sentences_per_s": round(sents / dt, 1),
        "batches_per_epoch": len(batches),
        "minutes_per_epoch": round(tokens_epoch / (tok / dt) / 60, 1),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="en-de")
    p.add_argument("--spm", type=Path, required=True, help="a joint SentencePiece model for both sides")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--weights", default=TrainConfig.weights)
    p.add_argument("--variant", action="append", default=[], help="name:field=value,... (TranslationConfig)")
    p.add_argument("--budget", type=int, action="append", default=[])
    p.add_argument("--max-batch", type=int, default=256)
    p.add_argument("--max-train-len", type=int, default=80)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    src, tgt = a.pair.split("-")
    tok = Subword(a.spm)
    base = TranslationConfig(src_lang=src, tgt_lang=tgt, src_vocab=len(tok), tgt_vocab=len(tok))
    tr_s, tr_t = mixture_ids(tok, base, a.data_dir or default_data_dir(), a.weights, a.max_train_len)
    for v in a.variant or ["base:"]:
        name, _, spec = v.partition(":")
        kw = {}
        for item in filter(None, spec.split(",")):
            k, _, val = item.partition("=")
            kw[k] = type(getattr(base, k))(val)
        cfg = dataclasses.replace(base, **kw)
        for budget in a.budget or [4000]:
            r = measure(cfg, tr_s, tr_t, budget, a.max_batch, a.seconds, a.lr)
            print(json.dumps({"variant": name, **kw, "budget": budget, "max_batch": a.max_batch, **r}), flush=True)


if __name__ == "__main__":
    main()
