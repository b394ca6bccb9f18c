"""Train the IMDB sentiment classifier.

    python -m training.sentiment.train --out runs/sentiment            # full run, resumes if interrupted
    python -m training.sentiment.train --out /tmp/s --limit 500 --epochs 1  # a smoke run

Writes to --out: `last.pt` (every epoch; resume point), `best.pt` (best validation accuracy),
`history.json`, `report.json` and `curve.png`. Export to ONNX with `training.export`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from service.runtime.text import PAD_ID, Vocab, tokenize, truncate_head_tail
from training.data import default_data_dir
from training.plots import plot_curves
from training.sentiment.data import Review, bucketed_batches, load_split, stratified_split
from training.sentiment.model import SentimentClassifier, SentimentConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    clip_norm: float = 1.0  # LSTMs explode now and then; clip the global gradient norm
    patience: int = 2  # epochs without validation improvement before stopping
    val_fraction: float = 0.1
    seed: int = 13
    limit: int = 0  # use only this many train reviews (tests, smoke runs); 0 = all


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode_reviews(reviews: list[Review], vocab: Vocab, cfg: SentimentConfig) -> list[list[int]]:
    return [truncate_head_tail(vocab.encode(tokenize(r.text)), cfg.max_len, cfg.head_len) or [PAD_ID] for r in reviews]


def make_batch(seqs: list[list[int]], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = [max(1, len(seqs[i])) for i in idx]
    ids = torch.zeros(len(idx), max(lens), dtype=torch.long)
    for row, i in enumerate(idx):
        ids[row, : len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
    return ids, torch.tensor(lens, dtype=torch.long)


@torch.no_grad()
def predict_logits(model: nn.Module, seqs: list[list[int]], batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = np.zeros((len(seqs), model.cfg.num_classes), dtype=np.float32)
    for idx in bucketed_batches([len(s) for s in seqs], batch_size, shuffle=False):
        ids, lens = make_batch(seqs, idx)
        out[idx] = model(ids, lens).numpy()
    return out


def prepare(data_dir: Path, cfg: SentimentConfig, tcfg: TrainConfig, cache: Path | None):
    """Tokenize once; cache the ids so a resumed run starts at once."""
    if cache and cache.exists():
        blob = torch.load(cache, weights_only=False)
        return Vocab(blob["vocab"]), blob["train"], blob["val"]
    reviews = load_split(data_dir, "train")
    if tcfg.limit:
        reviews = stratified_split(reviews, tcfg.limit / len(reviews), tcfg.seed)[1]
    train, val = stratified_split(reviews, tcfg.val_fraction, tcfg.seed)
    toks = [tokenize(r.text) for r in tqdm(train, desc="tokenize train", unit="review")]
    vocab = Vocab.build(toks, cfg.vocab_size, cfg.min_freq)

    def enc(rs):
        ids = [truncate_head_tail(vocab.encode(tokenize(r.text)), cfg.max_len, cfg.head_len) or [PAD_ID] for r in rs]
        return ids, [r.label for r in rs]

    tr, va = enc(train), enc(val)
    if cache:
        torch.save({"vocab": vocab.itos, "train": tr, "val": va}, cache)
    return vocab, tr, va


def accuracy(logits: np.ndarray, labels: list[int]) -> float:
    return float((logits.argmax(1) == np.asarray(labels)).mean())


def train(out: Path, data_dir: Path, cfg: SentimentConfig, tcfg: TrainConfig) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(tcfg.seed)
    vocab, (tr_x, tr_y), (va_x, va_y) = prepare(data_dir, cfg, tcfg, out / "data_cache.pt")
    cfg = dataclasses.replace(cfg, vocab_size=len(vocab))
    model = SentimentClassifier(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tcfg.epochs)
    state = {"epoch": 0, "history": [], "best_acc": -1.0, "bad_epochs": 0, "train_seconds": 0.0}
    last = out / "last.pt"
    if last.exists():
        ck = torch.load(last, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        state = ck["state"]
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed from {last} after epoch {state['epoch']}")
    loss_fn = nn.CrossEntropyLoss()
    lengths = [len(s) for s in tr_x]
    tr_labels = torch.tensor(tr_y)
    while state["epoch"] < tcfg.epochs and state["bad_epochs"] < tcfg.patience:
        epoch = state["epoch"] + 1
        t0 = time.time()
        model.train()
        batches = list(bucketed_batches(lengths, tcfg.batch_size, shuffle=True, seed=tcfg.seed + epoch))
        tot_loss = tot_ok = seen = 0
        bar = tqdm(batches, desc=f"epoch {epoch}/{tcfg.epochs}", unit="batch")
        for idx in bar:
            ids, lens = make_batch(tr_x, idx)
            y = tr_labels[idx]
            logits = model(ids, lens)
            loss = loss_fn(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_norm)
            opt.step()
            tot_loss += loss.item() * len(idx)
            tot_ok += (logits.argmax(1) == y).sum().item()
            seen += len(idx)
            bar.set_postfix(loss=f"{tot_loss / seen:.4f}", acc=f"{tot_ok / seen:.4f}")
        sched.step()
        va_logits = predict_logits(model, va_x)
        va_loss = float(loss_fn(torch.from_numpy(va_logits), torch.tensor(va_y)))
        va_acc = accuracy(va_logits, va_y)
        state["train_seconds"] += time.time() - t0
        row = {
            "epoch": epoch,
            "train_loss": tot_loss / seen,
            "train_acc": tot_ok / seen,
            "val_loss": va_loss,
            "val_acc": va_acc,
            "seconds": round(time.time() - t0, 1),
        }
        state["history"].append(row)
        print(json.dumps(row), flush=True)
        state["epoch"] = epoch
        improved = va_acc > state["best_acc"]
        if improved:
            state["best_acc"], state["bad_epochs"] = va_acc, 0
        else:
            state["bad_epochs"] += 1
        ck = {
            "model": model.state_dict(),
            "config": cfg.to_dict(),
            "train_config": dataclasses.asdict(tcfg),
            "vocab": vocab.itos,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "state": state,
            "torch_rng": torch.get_rng_state(),
        }
        if improved:
            torch.save({k: ck[k] for k in ("model", "config", "train_config", "vocab", "state")}, out / "best.pt")
        torch.save(ck, out / "last.pt.tmp")
        (out / "last.pt.tmp").replace(last)
        (out / "history.json").write_text(json.dumps(state["history"], indent=2))
    report = {
        "config": cfg.to_dict(),
        "train_config": dataclasses.asdict(tcfg),
        "history": state["history"],
        "best_val_acc": state["best_acc"],
        "train_seconds": round(state["train_seconds"], 1),
        "epochs_run": state["epoch"],
        "vocab_size": len(vocab),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    plot_curves(
        state["history"],
        out / "curve.png",
        title=f"IMDB sentiment ({cfg.cell}, {cfg.pooling} pooling)",
        panels=[("loss", ["train_loss", "val_loss"]), ("accuracy", ["train_acc", "val_acc"])],
    )
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/sentiment"))
    p.add_argument("--data-dir", type=Path, default=None, help="default: ../shared/data if present, else ./data")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    for f in dataclasses.fields(SentimentConfig):
        if f.name not in ("labels", "num_classes"):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    for f in dataclasses.fields(TrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = SentimentConfig(
        **{f.name: getattr(a, f.name) for f in dataclasses.fields(SentimentConfig) if hasattr(a, f.name)}
    )
    tcfg = TrainConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)})
    report = train(a.out, a.data_dir or default_data_dir(), cfg, tcfg)
    print(
        f"best val acc {report['best_val_acc']:.4f} after {report['epochs_run']} epochs, {report['train_seconds']:.0f}s"
    )


if __name__ == "__main__":
    main()
