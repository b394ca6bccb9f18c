"""Train an attention seq2seq translator: on the general-domain union (`--corpus general`: Tatoeba,
WMT news and Multi30k; the recipe `make train-translation` runs) or on Multi30k alone (the default
of this module, and of the models trained before issue 21).

    python -m training.translation.train --pair en-de --corpus general --out runs/translate-en-de
    python -m training.translation.train --pair en-de --out runs/translate-en-de   # Multi30k only
    python -m training.translation.train --pair en-de --no-attention --out runs/baseline-en-de
    python -m training.translation.train --pair en-de --out /tmp/t --limit 300 --epochs 1   # smoke run
    python -m training.translation.train ... --workers 2   # data-parallel: one process per core

Resumes from `<out>/last.pt` when present, also from within an epoch when `--checkpoint-minutes`
saved one there. Each epoch: teacher-forced training with label smoothing, validation loss, and
greedy BLEU (sacreBLEU) on each validation set; their mean selects `best.pt` and drives early
stopping (and the learning rate under `--schedule plateau`). Writes `history.json`, `report.json` and
`curve.png`. Export with `training.export translation`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sacrebleu
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from service.runtime.copythrough import LEXICON_FILE, PLACEHOLDERS, CopyLexicon, mask_batch, mask_pair, unmask
from service.runtime.subword import BOS_ID, EOS_ID, PAD_ID, Subword, train_sentencepiece
from training.cross_cpu import has_bf16_matmul
from training.data import default_data_dir
from training.parallel import Group, spawn
from training.plots import plot_curves
from training.sentiment.data import bucketed_batches
from training.translation.data import Corpus, evenly, load_general, load_pair
from training.translation.deadline_probe import deadline_split
from training.translation.model import Seq2Seq, TranslationConfig
from training.translation.translate import TorchStepper, translate_ids


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 25
    batch_size: int = 64  # sentences per batch; with token_budget, the most a batch may hold
    token_budget: int = 0  # >0: batches of at most this many padded target tokens (batch x longest target)
    lr: float = 1e-3
    schedule: str = "plateau"  # "plateau": halve on a flat epoch; "cosine": warmup, then cosine to lr*min_lr_frac
    warmup_steps: int = 0  # cosine only: linear warmup over this many batches
    min_lr_frac: float = 0.05  # cosine only: the last batch's learning rate, as a fraction of lr
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    patience: int = 4  # epochs without a better validation BLEU before stopping
    lr_patience: int = 1  # epochs without improvement before halving the learning rate
    max_train_len: int = 80  # drop training pairs longer than this (subwords), rare outliers
    seed: int = 7
    limit: int = 0  # train on only this many pairs (smoke runs, tests); 0 = all
    corpus: str = "multi30k"  # "multi30k" or "general" (Tatoeba + WMT news + Multi30k, issue 21)
    weights: str = "tatoeba=1,news=1,multi30k=1"  # general: each source's repeats per epoch
    byte_fallback: bool = False  # SentencePiece: unknown characters as bytes, never <unk>
    split_digits: bool = False  # SentencePiece: one piece per digit
    character_coverage: float = 1.0  # SentencePiece (with byte_fallback, rarer characters become bytes)
    val_max: int = 0  # per-epoch greedy BLEU on at most this many sentences of each validation set; 0 = all
    checkpoint_minutes: float = 0.0  # >0: also save last.pt within an epoch this often (resume mid-epoch)
    workers: int = 1  # data-parallel processes (training.parallel): each step takes one batch per worker
    copy_through: bool = False  # names and numbers as placeholders (service.runtime.copythrough)
    # "bf16": training's matrix products in bfloat16 (torch.autocast); weights, loss, validation fp32.
    # "auto": bf16 where the CPU multiplies bfloat16 in hardware (AMX, AVX512_BF16), else "off"
    amp: str = "off"
    # a run's best.pt (or last.pt) to start from, a run on the same data and vocabulary: its weights
    # and its run's tokenizers, a fresh optimizer and schedule (a second stage)
    init: str = ""
    # >0: training's softmax over each batch's target subwords and this many most frequent ones
    # (summed_loss); 0: over the whole vocabulary
    softmax_subset: int = 0
    # >0: focal loss, each target subword's cross-entropy weighted by (1 - p)^focal_gamma (summed_loss)
    focal_gamma: float = 0.0


def parse_weights(spec: str) -> dict[str, float]:
    """ "tatoeba=1,news=2" -> {"tatoeba": 1.0, "news": 2.0}."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, w = part.partition("=")
        out[name.strip()] = float(w)
    return out


def token_batches(
    lengths: list[int], budget: int, max_batch: int, *, shuffle: bool, seed: int = 0, pool: int = 20000
) -> list[list[int]]:
    """Index batches of similar length holding at most `budget` padded tokens (batch size x the
    longest length in it) and at most `max_batch` sentences, so short sentences come in large
    batches and long ones in small batches, and each batch costs about the same. Shuffled:
    sorted within random pools of `pool` sentences, batch order shuffled."""
    idx = list(range(len(lengths)))
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(idx)
    else:
        pool = len(idx) or 1
    batches: list[list[int]] = []
    for s in range(0, len(idx), pool):
        cur: list[int] = []
        longest = 0
        for i in sorted(idx[s : s + pool], key=lambda i: lengths[i]):
            m = max(longest, lengths[i])
            if cur and ((len(cur) + 1) * m > budget or len(cur) >= max_batch):
                batches.append(cur)
                cur, m = [], lengths[i]
            cur.append(i)
            longest = m
        if cur:
            batches.append(cur)
    if shuffle:
        rng.shuffle(batches)
    return batches


def encode_pairs(
    src_tok: Subword, tgt_tok: Subword, src: list[str], tgt: list[str], max_len: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Training pairs as ids, those empty or longer than `max_len` subwords on either side left out."""
    pairs = [
        (s, t)
        for s, t in zip(src_tok.encode_batch(src), tgt_tok.encode_batch(tgt), strict=True)
        if 0 < len(s) <= max_len and 0 < len(t) <= max_len
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def budget_lengths(src: list[list[int]], tgt: list[list[int]]) -> list[int]:
    """Per pair, the length token_batches budgets: the source's or the decoder's (target + EOS)."""
    return [max(len(s), len(t) + 1) for s, t in zip(src, tgt, strict=True)]


def worker_steps(batches: list[list[int]], lengths: list[int], world: int, seed: int) -> list[list[list[int]]]:
    """Batches in steps of one batch per worker. With several workers, each step's batches are
    of about the same cost, since every worker waits for the slowest at the gradient sum: the
    batches are ordered by their longest length, then their size (token_batches's batches of the
    same longest length hold about the same sentences and tokens), cut into steps of `world`,
    and the steps shuffled. Consecutive batches of the shuffled list, as before, left a worker
    idle for a sizeable part of each step."""
    if world <= 1:
        return [[b] for b in batches]
    ordered = sorted(batches, key=lambda b: (max(lengths[i] for i in b), len(b)))
    steps = [ordered[i : i + world] for i in range(0, len(ordered), world)]
    random.Random(seed).shuffle(steps)
    return steps


def with_deadline_source(corpus: Corpus, tgt_lang: str) -> None:
    """A "deadline" training source for `--weights ...,deadline=K`: the Tatoeba training pairs
    with a deadline "by" whose reference marks it (training.translation.deadline_probe), to be
    repeated K times; every pair of the probe's held-out third leaves the Tatoeba source too."""
    s, t = corpus.train["tatoeba"]
    kept, held = deadline_split(s, t, tgt_lang)
    drop = {x for x, _ in held}
    keep = [i for i, x in enumerate(s) if x not in drop]
    corpus.train["tatoeba"] = ([s[i] for i in keep], [t[i] for i in keep])
    corpus.train["deadline"] = ([x for x, _ in kept], [y for _, y in kept])


def load_corpus(
    data_dir: Path, cfg: TranslationConfig, tcfg: TrainConfig
) -> tuple[list[str], list[str], list[str], list[str], dict[str, tuple[list[str], list[str]]]]:
    """Training pairs (weighted mixture), the distinct training text the vocabulary learns from
    (source side, target side), and the validation sets by name."""
    src, tgt = cfg.src_lang, cfg.tgt_lang
    if tcfg.corpus == "multi30k":
        src_tr, tgt_tr = load_pair(data_dir, "train", src, tgt)
        valid = {"multi30k": load_pair(data_dir, "val", src, tgt)}
        if tcfg.limit:
            src_tr, tgt_tr = src_tr[: tcfg.limit], tgt_tr[: tcfg.limit]
        vocab_src, vocab_tgt = src_tr, tgt_tr
    elif tcfg.corpus == "general":
        corpus = load_general(data_dir, src, tgt)
        weights = parse_weights(tcfg.weights)
        if weights.get("deadline"):
            with_deadline_source(corpus, tgt)
        src_tr, tgt_tr, _ = corpus.mixture(weights, seed=tcfg.seed)
        # the distinct text: the deadline source repeats pairs Tatoeba already holds
        text = [pair for name, pair in corpus.train.items() if name != "deadline"]
        vocab_src = [x for s, _ in text for x in s]
        vocab_tgt = [x for _, t in text for x in t]
        valid = dict(corpus.valid)
        if tcfg.limit:
            pick = sorted(random.Random(tcfg.seed).sample(range(len(src_tr)), min(tcfg.limit, len(src_tr))))
            src_tr, tgt_tr = [src_tr[i] for i in pick], [tgt_tr[i] for i in pick]
            vocab_src, vocab_tgt = src_tr, tgt_tr
    else:
        raise ValueError(f"corpus must be 'multi30k' or 'general', not {tcfg.corpus!r}")
    if tcfg.limit:
        n = max(20, tcfg.limit // 10)
        valid = {k: (s[:n], t[:n]) for k, (s, t) in valid.items()}
    return src_tr, tgt_tr, vocab_src, vocab_tgt, valid


def build_tokenizers(
    out: Path, cfg: TranslationConfig, src_train: list[str], tgt_train: list[str], **spm_options
) -> tuple[Subword, Subword]:
    """`spm_options`: byte_fallback, split_digits, character_coverage (train_sentencepiece)."""
    src_model, tgt_model = out / "spm.src.model", out / "spm.tgt.model"
    if not (src_model.exists() and tgt_model.exists()):
        if cfg.joint_vocab:
            m = train_sentencepiece(src_train + tgt_train, out / "spm.joint", cfg.src_vocab, **spm_options)
            shutil.copy(m, src_model)
            shutil.copy(m, tgt_model)
        else:
            shutil.copy(train_sentencepiece(src_train, out / "spm.src_", cfg.src_vocab, **spm_options), src_model)
            shutil.copy(train_sentencepiece(tgt_train, out / "spm.tgt_", cfg.tgt_vocab, **spm_options), tgt_model)
    return Subword(src_model), Subword(tgt_model)


MAX_VAL_LEN = 256  # validation loss: sources and references cut here (the service cuts sources at 256)


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


def summed_loss(
    model: Seq2Seq,
    batch,
    bf16: bool = False,
    label_smoothing: float = 0.0,
    frequent: torch.Tensor | None = None,
    focal_gamma: float = 0.0,
) -> torch.Tensor:
    """The forward pass (under bfloat16 autocast if asked) and the cross-entropy summed over the
    non-pad targets of `batch`, make_batch's (src, src_lengths, tgt_in, tgt_out): the loss of
    training, validation and training.translation.speed alike.

    With `frequent` (target ids), the softmax runs over a subset of the vocabulary: the batch's
    own target subwords and these (Jean et al., 2015, with their uniform proposal over the subset,
    where the importance weights cancel), and only at the non-pad positions. The output layer and
    its softmax are the dearest part of a training step (about 40% of it with the 10k vocabulary,
    fp32), and a 4,000-subword batch holds about 1,000 distinct targets. Validation and the
    exported model keep the whole vocabulary.

    With `focal_gamma` > 0, each target's cross-entropy is weighted by (1 - p)^gamma, p the
    model's probability of that target (Lin et al., 2017's focal loss, per subword): subwords the
    model already predicts well weigh less, the ones it gets wrong (a rare sense of a word) more.

    A model with an adaptive softmax (`TranslationConfig.adaptive_cutoffs`) takes its own loss,
    `Decoder.adaptive_loss`: the exact cross-entropy of its whole-vocabulary distribution, which
    multiplies the head's rows for every target and a tail cluster's only for its own targets."""
    src, src_len, tgt_in, tgt_out = batch
    if model.cfg.adaptive_cutoffs:  # the head for every target, a tail cluster's rows for the rest
        if frequent is not None or focal_gamma:
            raise ValueError("the adaptive softmax is not combined with a softmax subset or focal loss")
        real = tgt_out != PAD_ID
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            r = model.readouts(src, src_len, tgt_in)[real]
            return model.decoder.adaptive_loss(r, tgt_out[real], label_smoothing)
    if frequent is None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(src, src_len, tgt_in)
        if focal_gamma:
            real = tgt_out != PAD_ID
            return focal_sum(logits[real], tgt_out[real], label_smoothing, focal_gamma)
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            tgt_out.reshape(-1),
            ignore_index=PAD_ID,
            label_smoothing=label_smoothing,
            reduction="sum",
        )
    real = tgt_out != PAD_ID
    targets = tgt_out[real]
    classes = torch.unique(torch.cat([frequent, targets]))  # sorted
    out = model.decoder.out
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        r = model.readouts(src, src_len, tgt_in)[real]  # [N, E]
        logits = F.linear(r, out.weight[classes], out.bias[classes])
    if focal_gamma:
        return focal_sum(logits, torch.searchsorted(classes, targets), label_smoothing, focal_gamma)
    return F.cross_entropy(
        logits, torch.searchsorted(classes, targets), label_smoothing=label_smoothing, reduction="sum"
    )


def focal_sum(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float, gamma: float) -> torch.Tensor:
    """sum over targets of (1 - p)^gamma x cross-entropy (label-smoothed as asked); logits [N, V],
    targets [N], p = softmax(logits)[target]. The weight is part of the graph, as in Lin et al."""
    logits = logits.float()
    ce = F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction="none")
    p = torch.exp(logits.log_softmax(-1).gather(1, targets[:, None])[:, 0])
    return ((1 - p).pow(gamma) * ce).sum()


def target_counts(tgt: list[list[int]], vocab: int) -> torch.Tensor:
    """How often each target id occurs in `tgt` [V], with the EOS that ends each target: the
    adaptive softmax's frequency order (Decoder.set_vocab_order)."""
    counts = torch.bincount(torch.tensor([i for t in tgt for i in t], dtype=torch.long), minlength=vocab)
    counts[EOS_ID] += len(tgt)
    return counts


def frequent_targets(tgt: list[list[int]], vocab: int, n: int) -> torch.Tensor:
    """The `n` most frequent target ids of the training pairs, with EOS (summed_loss's subset)."""
    counts = torch.bincount(torch.tensor([i for t in tgt for i in t], dtype=torch.long), minlength=vocab)
    counts[PAD_ID] = -1
    top = torch.topk(counts, min(n, vocab - 1)).indices
    return torch.unique(torch.cat([top, torch.tensor([EOS_ID])]))


def bleu_of(
    model: Seq2Seq,
    src_tok: Subword,
    tgt_tok: Subword,
    src: list[str],
    refs: list[str],
    beam: int = 1,
    lexicon: CopyLexicon | None = None,
    group: Group | None = None,
) -> tuple[float, list[str]]:
    """BLEU of the model's translations against the raw references; with a `lexicon`, sources
    are masked and translations unmasked as the service does. With a `group`, each worker
    translates every world-th sentence and all get the whole result."""
    group = group or Group()
    mine = src[group.rank :: group.world]
    masked, slots = mask_batch(mine, lexicon)
    hyps = translate_ids(TorchStepper(model), src_tok.encode_batch(masked), beam_size=beam, batch_size=128)
    parts = group.gather([unmask(tgt_tok.decode(h[0].tokens), sl) for h, sl in zip(hyps, slots, strict=True)])
    out = [parts[i % group.world][i // group.world] for i in range(len(src))]
    return sacrebleu.corpus_bleu(out, [refs]).score, out


def mask_pairs(src: list[str], tgt: list[str], lexicon: CopyLexicon | None) -> tuple[list[str], list[str]]:
    if lexicon is None:
        return src, tgt
    done = [mask_pair(s, t, lexicon) for s, t in zip(src, tgt, strict=True)]
    return [d[0] for d in done], [d[1] for d in done]


def make_scheduler(opt: torch.optim.Optimizer, tcfg: TrainConfig, steps_per_epoch: int):
    if tcfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=tcfg.lr_patience)
    if tcfg.schedule == "cosine":
        total = max(1, tcfg.epochs * steps_per_epoch)
        warm = max(0, tcfg.warmup_steps)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            p = min(1.0, (step - warm) / max(1, total - warm))
            return tcfg.min_lr_frac + (1 - tcfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor)
    raise ValueError(f"schedule must be 'plateau' or 'cosine', not {tcfg.schedule!r}")


def validate(
    model: Seq2Seq,
    src_tok: Subword,
    tgt_tok: Subword,
    valid: dict,
    val_max: int,
    lexicon: CopyLexicon | None = None,
    group: Group | None = None,
) -> dict:
    """Validation loss over every set, and greedy BLEU on each (at most val_max sentences of
    each); `val_bleu_greedy` is the mean of the sets' BLEU, the selection figure. With a
    `lexicon`, the loss is of the masked pairs and BLEU of the unmasked translations. With a
    `group`, the workers share the batches and sentences (a worker no longer idles while the
    lead validates) and every worker gets the same figures."""
    group = group or Group()
    model.eval()
    row: dict = {}
    vl, vn = 0.0, 0
    bleus = []
    with torch.no_grad():
        for name, (src, ref) in valid.items():
            va_s, va_t = (tok.encode_batch(x) for tok, x in zip((src_tok, tgt_tok), mask_pairs(src, ref, lexicon)))
            va_s = [x[:MAX_VAL_LEN] or [EOS_ID] for x in va_s]
            va_t = [x[:MAX_VAL_LEN] for x in va_t]
            batches = list(bucketed_batches([len(s) for s in va_s], 64, shuffle=False))
            for idx in batches[group.rank :: group.world]:
                batch = make_batch(va_s, va_t, idx)
                vl += float(summed_loss(model, batch))
                vn += int((batch[3] != PAD_ID).sum())
            sub_s, sub_r = evenly((src, ref), val_max)
            b, _ = bleu_of(model, src_tok, tgt_tok, sub_s, sub_r, beam=1, lexicon=lexicon, group=group)
            bleus.append(b)
            if len(valid) > 1:
                row[f"val_bleu_{name}"] = b
    vl, vn = group.sum_scalars(vl, vn)
    row = {"val_loss": vl / vn, "val_ppl": float(np.exp(vl / vn)), "val_bleu_greedy": float(np.mean(bleus)), **row}
    return row


def bf16_lstm_runs() -> bool:
    """Whether torch runs an LSTM under bfloat16 autocast on this CPU. oneDNN emulates bfloat16 on
    AVX-512 CPUs without bfloat16 units (slower than fp32) and has no LSTM kernel for it on AVX2-only
    ones (torch 2.13 on an AMD EPYC: "could not create a primitive descriptor"). A two-step probe."""
    lstm = nn.LSTM(4, 4, batch_first=True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            lstm(torch.zeros(1, 2, 4))[0].float().sum().backward()
    except RuntimeError:
        return False
    return True


def resolve_amp(
    tcfg: TrainConfig, announce: bool = False, flags: str | None = None, probe: Callable[[], bool] = bf16_lstm_runs
) -> TrainConfig:
    """The one place that judges `--amp` for a CPU (`flags`: its /proc/cpuinfo flags, default this
    one's; `probe`: whether torch runs a bfloat16 LSTM there). `auto` becomes bf16 with AMX or
    AVX512_BF16 (1.4x the tokens/s of fp32 on an AMX CPU), off elsewhere. An explicit bf16 that the
    CPU cannot run is refused here, with what to pass instead, rather than by oneDNN at the first
    batch; one it runs only emulated (no bfloat16 units) is warned about. The report records the
    mode that ran."""
    if tcfg.amp not in ("off", "bf16", "auto"):
        raise ValueError(f"amp must be 'off', 'bf16' or 'auto', not {tcfg.amp!r}")
    if tcfg.amp == "bf16":
        if not probe():
            raise ValueError(
                "--amp bf16: this CPU cannot run torch's LSTM in bfloat16 (no AVX-512); pass --amp auto or off"
            )
        if announce and not has_bf16_matmul(flags):
            print(
                "warning: --amp bf16 on a CPU without AMX or AVX512_BF16 is emulated, slower than fp32 (--amp auto)",
                flush=True,
            )
    if tcfg.amp != "auto":
        return tcfg
    mode = "bf16" if has_bf16_matmul(flags) else "off"
    if announce:
        print(f"--amp auto: {mode} on this CPU ({'has' if mode == 'bf16' else 'no'} bfloat16 matrix units)", flush=True)
    return dataclasses.replace(tcfg, amp=mode)


def train(out: Path, data_dir: Path, cfg: TranslationConfig, tcfg: TrainConfig, group: Group | None = None) -> dict:
    """One process, or (with `group`, from `spawn`) one of `tcfg.workers` data-parallel workers:
    then each optimizer step sums the gradients of one batch per worker over all their target
    tokens (the step one process would take on the union of the batches), the workers share the
    validation, and the lead alone checkpoints and writes the run's files. Returns the report (the lead's).
    The command line resolves `tcfg.amp` once, before spawning; a direct call, or `auto` left for
    the workers, is resolved here."""
    if group is None or tcfg.amp == "auto":
        tcfg = resolve_amp(tcfg, announce=group is None or group.lead)
    group = group or Group()
    lead = group.lead
    out.mkdir(parents=True, exist_ok=True)
    random.seed(tcfg.seed)
    np.random.seed(tcfg.seed)
    torch.manual_seed(tcfg.seed)
    src_tr, tgt_tr, vocab_src, vocab_tgt, valid = load_corpus(data_dir, cfg, tcfg)
    spm_options = {
        "byte_fallback": tcfg.byte_fallback,
        "split_digits": tcfg.split_digits,
        "character_coverage": tcfg.character_coverage,
    }
    lexicon = None
    if tcfg.copy_through:  # learned from the training pairs (each once), applied to every text the model sees
        lexicon = CopyLexicon.build(vocab_src, vocab_tgt)
        if lead:
            lexicon.save(out / LEXICON_FILE)
        src_tr, tgt_tr = mask_pairs(src_tr, tgt_tr, lexicon)
        vocab_src, vocab_tgt = mask_pairs(vocab_src, vocab_tgt, lexicon)
        spm_options["user_symbols"] = PLACEHOLDERS
    if lead and tcfg.init:  # the first stage's tokenizers, as they are
        for name in ("spm.src.model", "spm.tgt.model"):
            if not (out / name).exists():
                shutil.copy(Path(tcfg.init).parent / name, out / name)
    if lead:  # the others wait, then load what the lead trained
        build_tokenizers(out, cfg, vocab_src, vocab_tgt, **spm_options)
    group.barrier()
    src_tok, tgt_tok = build_tokenizers(out, cfg, vocab_src, vocab_tgt, **spm_options)
    cfg = dataclasses.replace(cfg, src_vocab=len(src_tok), tgt_vocab=len(tgt_tok))
    tr_s, tr_t = encode_pairs(src_tok, tgt_tok, src_tr, tgt_tr, tcfg.max_train_len)
    frequent = frequent_targets(tr_t, cfg.tgt_vocab, tcfg.softmax_subset) if tcfg.softmax_subset else None
    if lead:
        print(
            f"{len(tr_s)} training pairs ({len(src_tr) - len(tr_s)} longer than {tcfg.max_train_len} left out)"
            + (f", {group.world} workers" if group.world > 1 else ""),
            flush=True,
        )

    lengths = budget_lengths(tr_s, tr_t)

    def epoch_steps(epoch: int) -> list[list[list[int]]]:
        """The epoch's batches in steps of one batch per worker."""
        if tcfg.token_budget:
            b = token_batches(lengths, tcfg.token_budget, tcfg.batch_size, shuffle=True, seed=tcfg.seed + epoch)
        else:
            b = list(bucketed_batches([len(s) for s in tr_s], tcfg.batch_size, shuffle=True, seed=tcfg.seed + epoch))
        return worker_steps(b, lengths, group.world, seed=tcfg.seed + epoch)

    model = Seq2Seq(cfg)
    if cfg.adaptive_cutoffs:  # the frequency order of the targets (an --init or resumed run loads its own)
        model.decoder.set_vocab_order(target_counts(tr_t, cfg.tgt_vocab))
    if tcfg.init:
        first = torch.load(tcfg.init, weights_only=False)
        # read through the config class: a checkpoint from before a field has its default
        shape = {k: v for k, v in TranslationConfig.from_dict(first["config"]).to_dict().items() if k != "dropout"}
        if shape != {k: v for k, v in cfg.to_dict().items() if k != "dropout"}:
            raise ValueError(f"--init {tcfg.init}: its model {first['config']} is not this run's {cfg.to_dict()}")
        model.load_state_dict(first["model"])  # a resumed run loads last.pt over it below
    if group.rank:  # the same initial weights (seeded above), different dropout masks
        torch.manual_seed(tcfg.seed + 1000 * group.rank)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    sched = make_scheduler(opt, tcfg, len(epoch_steps(1)))
    state = {"epoch": 0, "history": [], "best_bleu": -1.0, "bad_epochs": 0, "train_seconds": 0.0}
    # Progress within the epoch being trained, saved by the mid-epoch checkpoints.
    partial = {"step": 0, "loss_sum": 0.0, "tokens": 0, "src_tokens": 0, "seconds": 0.0}
    last = out / "last.pt"
    if last.exists():
        ck = torch.load(last, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        state = ck["state"]
        partial = ck.get("partial") or partial
        if lead:
            torch.set_rng_state(ck["torch_rng"])
            unit = "batches" if group.world == 1 else f"steps of {group.world} batches"
            where = f", {partial['step']} {unit} into epoch {state['epoch'] + 1}" if partial["step"] else ""
            print(f"resumed from {last} after epoch {state['epoch']}{where}", flush=True)
        else:
            torch.manual_seed(tcfg.seed + 1000 * group.rank + 7919 * state["epoch"] + partial["step"])
    group.broadcast_params(model)

    def checkpoint(*, improved: bool = False) -> None:
        ck = {
            "model": model.state_dict(),
            "config": cfg.to_dict(),
            "train_config": dataclasses.asdict(tcfg),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "state": state,
            "partial": partial,
            "torch_rng": torch.get_rng_state(),
        }
        if improved:
            torch.save({k: ck[k] for k in ("model", "config", "train_config", "state")}, out / "best.pt")
        torch.save(ck, out / "last.pt.tmp")
        (out / "last.pt.tmp").replace(last)

    while True:
        # the lead's state decides, for every worker: go on?, which epoch, from which step
        go, epoch, done = group.broadcast_ints(
            state["epoch"] < tcfg.epochs and state["bad_epochs"] < tcfg.patience, state["epoch"] + 1, partial["step"]
        )
        if not go:
            break
        t0 = time.time() - partial["seconds"]
        last_save = time.time()
        model.train()
        batches = epoch_steps(epoch)
        unit = "batch" if group.world == 1 else f"step of {group.world} batches"
        bar = tqdm(
            batches,
            desc=f"epoch {epoch}/{tcfg.epochs}",
            unit=unit,
            mininterval=10,
            initial=done,
            disable=not lead,
        )
        bar.update(0)
        for step, step_batches in enumerate(batches[done:], start=done + 1):
            idx = step_batches[group.rank] if group.rank < len(step_batches) else None
            opt.zero_grad(set_to_none=True)
            if idx is not None:
                s, sl, ti, to = make_batch(tr_s, tr_t, idx)
                n, n_src = int((to != PAD_ID).sum()), int(sl.sum())
            else:  # the epoch's last step, when the batches do not divide evenly among the workers
                n, n_src = 0, 0
            n_all, n_src_all = group.sum_scalars(n, n_src)
            loss_value = 0.0
            if idx is not None:
                # the sum over this worker's tokens, divided by the step's tokens over all workers:
                # summed over the workers, the mean loss of the union of their batches
                loss = (
                    summed_loss(
                        model, (s, sl, ti, to), tcfg.amp == "bf16", tcfg.label_smoothing, frequent, tcfg.focal_gamma
                    )
                    / n_all
                )
                loss.backward()
                loss_value = loss.item()
            group.sum_grads(model.parameters())
            (loss_value,) = group.sum_scalars(loss_value)
            nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_norm)
            opt.step()
            if tcfg.schedule != "plateau":
                sched.step()
            partial["loss_sum"] += loss_value * n_all
            partial["tokens"] += int(n_all)
            partial["src_tokens"] += int(n_src_all)
            partial["step"] = step
            bar.update(1)
            elapsed = time.time() - t0
            bar.set_postfix(
                loss=f"{partial['loss_sum'] / partial['tokens']:.3f}",
                tgt_tok_s=f"{partial['tokens'] / elapsed:.0f}",
                refresh=False,
            )
            if (
                lead
                and tcfg.checkpoint_minutes
                and time.time() - last_save >= 60 * tcfg.checkpoint_minutes
                and step < len(batches)
            ):
                partial["seconds"] = time.time() - t0
                checkpoint()
                last_save = time.time()
                print(f"\ncheckpoint: epoch {epoch}, batch {step}/{len(batches)}, "
                      f"{partial['tokens'] / partial['seconds']:.0f} target tokens/s", flush=True)  # fmt: skip
        bar.close()
        train_seconds = time.time() - t0
        v0 = time.time()
        val = validate(model, src_tok, tgt_tok, valid, tcfg.val_max, lexicon, group)
        if not lead:  # the lead saves; its state decides at the top of the loop
            state["epoch"] = epoch
            partial = {"step": 0, "loss_sum": 0.0, "tokens": 0, "src_tokens": 0, "seconds": 0.0}
            continue
        bleu = val["val_bleu_greedy"]
        if tcfg.schedule == "plateau":
            sched.step(bleu)
        state["train_seconds"] += time.time() - t0
        row = {
            "epoch": epoch,
            "train_loss": partial["loss_sum"] / partial["tokens"],
            **val,
            "lr": opt.param_groups[0]["lr"],
            "seconds": round(time.time() - t0, 1),
            "train_tokens_per_s": round(partial["tokens"] / train_seconds, 1),
            "train_src_tokens_per_s": round(partial["src_tokens"] / train_seconds, 1),
            "validation_seconds": round(time.time() - v0, 1),
        }
        state["history"].append(row)
        print(json.dumps(row), flush=True)
        state["epoch"] = epoch
        improved = bleu > state["best_bleu"]
        state["best_bleu"], state["bad_epochs"] = (
            (bleu, 0) if improved else (state["best_bleu"], state["bad_epochs"] + 1)
        )
        partial = {"step": 0, "loss_sum": 0.0, "tokens": 0, "src_tokens": 0, "seconds": 0.0}
        checkpoint(improved=improved)
        # each epoch's weights, for averaging the last few at export (model.load_checkpoint)
        torch.save({"model": model.state_dict()}, out / f"epoch{epoch}.pt")
        (out / "history.json").write_text(json.dumps(state["history"], indent=2))
        bleu_keys = [k for k in state["history"][-1] if k.startswith("val_bleu")]
        corpus = "Multi30k" if tcfg.corpus == "multi30k" else "Tatoeba + news + Multi30k"
        plot_curves(
            state["history"],
            out / "curve.png",
            title=f"{corpus} {cfg.src_lang}-{cfg.tgt_lang} ({'attention' if cfg.attention else 'no attention'})",
            panels=[("loss", ["train_loss", "val_loss"]), ("greedy validation BLEU", bleu_keys)],
        )
    if not lead:
        return {}
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
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: leaves a core to other work)")
    p.add_argument("--no-attention", action="store_true", help="train the no-attention baseline")
    p.add_argument("--separate-vocab", action="store_true", help="one SentencePiece model per language")
    p.add_argument(
        "--adaptive-cutoffs",
        type=lambda v: tuple(int(x) for x in v.split(",") if x),
        default=(),
        help="an adaptive softmax: head size and the tail clusters' starts in frequency rank, e.g. 2000,5000",
    )
    for f in dataclasses.fields(TranslationConfig):
        if f.type in ("int", "float", "str") and f.name not in ("src_lang", "tgt_lang"):
            p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    for f in dataclasses.fields(TrainConfig):
        if isinstance(f.default, bool):
            p.add_argument(f"--{f.name.replace('_', '-')}", action=argparse.BooleanOptionalAction, default=f.default)
        else:
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
    tcfg = resolve_amp(
        TrainConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig)}), announce=True
    )
    out, data_dir = a.out or Path(f"runs/translate-{a.pair}"), a.data_dir or default_data_dir()
    spawn(_train_and_report, tcfg.workers, out, data_dir, cfg, tcfg, threads=a.threads or 1)


def _train_and_report(group: Group, out: Path, data_dir: Path, cfg: TranslationConfig, tcfg: TrainConfig) -> None:
    report = train(out, data_dir, cfg, tcfg, group)
    if group.lead:
        print(
            f"best greedy val BLEU {report['best_val_bleu_greedy']:.2f} after {report['epochs_run']} epochs, "
            f"{report['train_seconds']:.0f}s"
        )


if __name__ == "__main__":
    main()
