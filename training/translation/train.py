"""Train an attention seq2seq translator on Multi30k.

    python -m training.translation.train --pair en-de --out runs/translate-en-de
    python -m training.translation.train --pair en-de --no-attention --out runs/baseline-en-de
    python -m training.translation.train --pair en-de --out /tmp/t --limit 300 --epochs 1   # smoke run

Resumes from `<out>/last.pt` when present. Each epoch: teacher-forced training with label
smoothing, validation loss, and greedy validation BLEU (sacreBLEU) which selects `best.pt` and
drives the learning-rate schedule and early stopping. Writes `history.json`, `report.json` and
`curve.png`. Export with `training.export translation`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import time
from pathlib import Path

import numpy as np
import sacrebleu
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from service.runtime.subword import BOS_ID, EOS_ID, PAD_ID, Subword, train_sentencepiece
from training.data import default_data_dir
from training.plots import plot_curves
from training.sentiment.data import bucketed_batches
from training.translation.data import load_pair
from training.translation.model import Seq2Seq, TranslationConfig
from training.translation.translate import TorchStepper, translate_ids


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 25
    batch_size: int = 64
    lr: float = 1e-3
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    patience: int = 4  # epochs without a better validation BLEU before stopping
    lr_patience: int = 1  # epochs without improvement before halving the learning rate
    max_train_len: int = 80  # drop training pairs longer than this (subwords), rare outliers
    seed: int = 7
    limit: int = 0  # train on only this many pairs (smoke runs, tests); 0 = all


def build_tokenizers(
    out: Path, cfg: TranslationConfig, src_train: list[str], tgt_train: list[str]
) -> tuple[Subword, Subword]:
    src_model, tgt_model = out / "spm.src.model", out / "spm.tgt.model"
    if not (src_model.exists() and tgt_model.exists()):
        if cfg.joint_vocab:
            m = train_sentencepiece(src_train + tgt_train, out / "spm.joint", cfg.src_vocab)
            shutil.copy(m, src_model)
            shutil.copy(m, tgt_model)
        else:
            shutil.copy(train_sentencepiece(src_train, out / "spm.src_", cfg.src_vocab), src_model)
            shutil.copy(train_sentencepiece(tgt_train, out / "spm.tgt_", cfg.tgt_vocab), tgt_model)
    return Subword(src_model), Subword(tgt_model)


def make_batch(src: list[list[int]], tgt: list[list[int]], idx: list[int]):
    s_len = torch.tensor([len(src[i]) for i in idx])
    t_len = max(len(tgt[i]) for i in idx) + 1
    s = torch.full((len(idx), int(s_len.max())), PAD_ID, dtype=torch.long)
    t_in = torch.full((len(idx), t_len), PAD_ID, dtype=torch.long)
    t_out = torch.full((len(idx), t_len), PAD_ID, dtype=torch.long)
    for r, i in enumerate(idx):
        s[r, : len(src[i])] = torch.tensor(src[i])
        t_in[r, : len(tgt[i]) + 1] = torch.tensor([BOS_ID, *tgt[i]])
        t_out[r, : len(tgt[i]) + 1] = torch.tensor([*tgt[i], EOS_ID])
    return s, s_len, t_in, t_out


def bleu_of(
    model: Seq2Seq, src_tok: Subword, tgt_tok: Subword, src: list[str], refs: list[str], beam: int = 1
) -> tuple[float, list[str]]:
    hyps = translate_ids(TorchStepper(model), src_tok.encode_batch(src), beam_size=beam, batch_size=128)
    out = [tgt_tok.decode(h[0].tokens) for h in hyps]
    return sacrebleu.corpus_bleu(out, [refs]).score, out


def train(out: Path, data_dir: Path, cfg: TranslationConfig, tcfg: TrainConfig) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    random.seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    torch.manual_seed(tcfg.seed)
    src_tr, tgt_tr = load_pair(data_dir, "train", cfg.src_lang, cfg.tgt_lang)
    src_va, tgt_va = load_pair(data_dir, "val", cfg.src_lang, cfg.tgt_lang)
    if tcfg.limit:
        src_tr, tgt_tr = src_tr[: tcfg.limit], tgt_tr[: tcfg.limit]
        src_va, tgt_va = src_va[: max(20, tcfg.limit // 10)], tgt_va[: max(20, tcfg.limit // 10)]
    src_tok, tgt_tok = build_tokenizers(out, cfg, src_tr, tgt_tr)
    cfg = dataclasses.replace(cfg, src_vocab=len(src_tok), tgt_vocab=len(tgt_tok))
    pairs = [
        (s, t)
        for s, t in zip(src_tok.encode_batch(src_tr), tgt_tok.encode_batch(tgt_tr), strict=True)
        if 0 < len(s) <= tcfg.max_train_len and 0 < len(t) <= tcfg.max_train_len
    ]
    tr_s, tr_t = [p[0] for p in pairs], [p[1] for p in pairs]
    va_s, va_t = src_tok.encode_batch(src_va), tgt_tok.encode_batch(tgt_va)

    model = Seq2Seq(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=tcfg.lr_patience)
    state = {"epoch": 0, "history": [], "best_bleu": -1.0, "bad_epochs": 0, "train_seconds": 0.0}
    last = out / "last.pt"
    if last.exists():
        ck = torch.load(last, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        state = ck["state"]
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed from {last} after epoch {state['epoch']}", flush=True)
    lengths = [len(s) for s in tr_s]
    while state["epoch"] < tcfg.epochs and state["bad_epochs"] < tcfg.patience:
        epoch = state["epoch"] + 1
        t0 = time.time()
        model.train()
        tot, ntok = 0.0, 0
        batches = list(bucketed_batches(lengths, tcfg.batch_size, shuffle=True, seed=tcfg.seed + epoch))
        bar = tqdm(batches, desc=f"epoch {epoch}/{tcfg.epochs}", unit="batch", mininterval=5)
        for idx in bar:
            s, sl, ti, to = make_batch(tr_s, tr_t, idx)
            logits = model(s, sl, ti)
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                to.reshape(-1),
                ignore_index=PAD_ID,
                label_smoothing=tcfg.label_smoothing,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_norm)
            opt.step()
            n = int((to != PAD_ID).sum())
            tot += loss.item() * n
            ntok += n
            bar.set_postfix(loss=f"{tot / ntok:.3f}")
        model.eval()
        with torch.no_grad():
            vl, vn = 0.0, 0
            for idx in bucketed_batches([len(s) for s in va_s], 128, shuffle=False):
                s, sl, ti, to = make_batch(va_s, va_t, idx)
                lg = model(s, sl, ti)
                vl += float(
                    F.cross_entropy(lg.reshape(-1, lg.shape[-1]), to.reshape(-1), ignore_index=PAD_ID, reduction="sum")
                )
                vn += int((to != PAD_ID).sum())
        bleu, _ = bleu_of(model, src_tok, tgt_tok, src_va, tgt_va, beam=1)
        sched.step(bleu)
        state["train_seconds"] += time.time() - t0
        row = {
            "epoch": epoch,
            "train_loss": tot / ntok,
            "val_loss": vl / vn,
            "val_ppl": float(np.exp(vl / vn)),
            "val_bleu_greedy": bleu,
            "lr": opt.param_groups[0]["lr"],
            "seconds": round(time.time() - t0, 1),
        }
        state["history"].append(row)
        print(json.dumps(row), flush=True)
        state["epoch"] = epoch
        improved = bleu > state["best_bleu"]
        state["best_bleu"], state["bad_epochs"] = (
            (bleu, 0) if improved else (state["best_bleu"], state["bad_epochs"] + 1)
        )
        ck = {
            "model": model.state_dict(),
            "config": cfg.to_dict(),
            "train_config": dataclasses.asdict(tcfg),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "state": state,
            "torch_rng": torch.get_rng_state(),
        }
        if improved:
            torch.save({k: ck[k] for k in ("model", "config", "train_config", "state")}, out / "best.pt")
        torch.save(ck, out / "last.pt.tmp")
        (out / "last.pt.tmp").replace(last)
        (out / "history.json").write_text(json.dumps(state["history"], indent=2))
        plot_curves(
            state["history"],
            out / "curve.png",
            title=f"Multi30k {cfg.src_lang}-{cfg.tgt_lang} ({'attention' if cfg.attention else 'no attention'})",
            panels=[("loss", ["train_loss", "val_loss"]), ("BLEU", ["val_bleu_greedy"])],
        )
    report = {
        "config": cfg.to_dict(),
        "train_config": dataclasses.asdict(tcfg),
        "history": state["history"],
        "best_val_bleu_greedy": state["best_bleu"],
        "train_seconds": round(state["train_seconds"], 1),
        "epochs_run": state["epoch"],
        "train_pairs": len(tr_s),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="en-de", help="source-target, e.g. en-de or en-fr")
    p.add_argument("--out", type=Path, default=None, help="default: runs/translate-<pair>")
    p.add_argument("--data-dir", type=Path, default=None, help="default: ../shared/data if present, else ./data")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-attention", action="store_true", help="train the no-attention baseline")
    p.add_argument("--separate-vocab", action="store_true", help="one SentencePiece model per language")
    for f in dataclasses.fields(TranslationConfig):
        if f.type in ("int", "float", "str") and f.name not in ("src_lang", "tgt_lang"):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    for f in dataclasses.fields(TrainConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    src, tgt = a.pair.split("-")
    kw = {f.name: getattr(a, f.name) for f in dataclasses.fields(TranslationConfig) if hasattr(a, f.name)}
    cfg = TranslationConfig(
        src_lang=src,
        tgt_lang=tgt,
        attention=not a.no_attention,
        joint_vocab=not a.separate_vocab,
        share_embeddings=not a.separate_vocab,
        **kw,
    )
    tcfg = TrainConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)})
    report = train(a.out or Path(f"runs/translate-{a.pair}"), a.data_dir or default_data_dir(), cfg, tcfg)
    print(
        f"best greedy val BLEU {report['best_val_bleu_greedy']:.2f} after {report['epochs_run']} epochs, {report['train_seconds']:.0f}s"
    )


if __name__ == "__main__":
    main()
