"""Train the sentiment classifier on the multi-domain corpus (IMDB + short texts).

    python -m training.sentiment.train --out runs/sentiment                 # full run, resumes if interrupted
    python -m training.sentiment.train --out /tmp/s --limit 500 --epochs 1  # a smoke run

Each epoch draws a fresh *mixture*: every domain contributes at most `domain_cap` training texts
(rotating through its data over epochs, so large sets are seen in full eventually and small ones
every epoch), and batches are cut by a token budget from length-sorted pools, so three-word phrases
travel in wide batches and 400-token reviews in narrow ones. Validation is per domain; the best
epoch is the one with the best mean per-domain validation accuracy.

Writes to --out: `last.pt` (every epoch; resume point), `best.pt`, `history.json`, `report.json`,
`curve.png` (loss and mean accuracy) and `domains.png` (validation accuracy per domain).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from service.runtime.text import PAD_ID, Vocab, encode_tokens, tokenize
from training.data import default_data_dir
from training.plots import plot_curves
from training.sentiment.corpus import Corpus, load_corpus
from training.sentiment.data import Review, bucketed_batches
from training.sentiment.model import SentimentClassifier, SentimentConfig

# Labels that come from emoticons (distant supervision) are noisy: smooth their targets.
NOISY_DOMAINS = ("sentiment140_100k",)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5  # the cosine schedule ends here; validation still rose at epoch 5 in every run
    domain_cap: int = 12_000  # training texts drawn per domain per epoch ...
    domain_caps: str = "imdb=22500,sst2=67171"  # ... except these ("name=n,..."): all of IMDB, all of SST-2
    token_budget: int = 32_768  # padded tokens per batch
    max_batch: int = 512  # texts per batch, however short
    lr: float = 2e-3
    weight_decay: float = 1e-4
    clip_norm: float = 1.0  # LSTMs explode now and then; clip the global gradient norm
    label_smoothing: float = 0.1  # on NOISY_DOMAINS only
    patience: int = 5  # epochs without validation improvement before stopping: with 5 cosine epochs, none
    seed: int = 13
    limit: int = 0  # keep only this many train texts per domain (tests, smoke runs); 0 = all
    vectors: str = ""  # word2vec file (training.sentiment.vectors) to initialize embeddings; "" = random
    contrast_pairs: int = 8_000  # composed two-clause texts per epoch (see compose_pairs); 0 = none
    negations: int = 4_000  # composed negated phrases per epoch (see compose_negations); 0 = none


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def encode_reviews(reviews: list[Review], vocab: Vocab, cfg: SentimentConfig) -> list[list[int]]:
    return [encode_tokens(tokenize(r.text), vocab, cfg.max_len, cfg.head_len) for r in reviews]


def make_batch(seqs: list[list[int]], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = [max(1, len(seqs[i])) for i in idx]
    ids = torch.zeros(len(idx), max(lens), dtype=torch.long)
    for row, i in enumerate(idx):
        ids[row, : len(seqs[i])] = torch.tensor(seqs[i], dtype=torch.long)
    return ids, torch.tensor(lens, dtype=torch.long)


def token_budget_batches(
    lengths: list[int], budget: int, max_batch: int, rng: random.Random, pool: int = 20_000
) -> list[list[int]]:
    """Shuffled index batches of similar length whose padded size stays within `budget` tokens."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    batches = []
    for s in range(0, len(idx), pool):
        chunk = sorted(idx[s : s + pool], key=lambda i: lengths[i])
        cur: list[int] = []
        for i in chunk:
            if (cur and (len(cur) + 1) * lengths[i] > budget) or len(cur) == max_batch:
                batches.append(cur)
                cur = []
            cur.append(i)
        if cur:
            batches.append(cur)
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def predict_logits(model: nn.Module, seqs: list[list[int]], batch_size: int = 256) -> np.ndarray:
    model.eval()
    out = np.zeros((len(seqs), model.cfg.num_classes), dtype=np.float32)
    for idx in bucketed_batches([len(s) for s in seqs], batch_size, shuffle=False):
        ids, lens = make_batch(seqs, idx)
        out[idx] = model(ids, lens).numpy()
    return out


@dataclasses.dataclass
class Encoded:
    """A domain's texts as ids, with labels."""

    ids: list[list[int]]
    labels: list[int]


def prepare(
    data_dir: Path, cfg: SentimentConfig, tcfg: TrainConfig, cache: Path | None
) -> tuple[Vocab, dict[str, Encoded], dict[str, Encoded]]:
    """Tokenize once; cache the ids so a resumed run starts at once."""
    if cache and cache.exists():
        blob = torch.load(cache, weights_only=False)
        tr, va = ({d: Encoded(*e) for d, e in blob[k].items()} for k in ("train", "val"))
        return Vocab(blob["vocab"]), tr, va
    corpus: Corpus = load_corpus(data_dir, limit=tcfg.limit)
    toks = {
        d: [tokenize(r.text) for r in tqdm(rows, desc=f"tokenize {d}", unit="text", leave=False)]
        for d, rows in corpus.train.items()
    }
    vocab = Vocab.build((t for ts in toks.values() for t in ts), cfg.vocab_size, cfg.min_freq)

    def enc(tok_lists: list[list[str]]) -> list[list[int]]:
        return [encode_tokens(t, vocab, cfg.max_len, cfg.head_len) for t in tok_lists]

    train = {d: Encoded(enc(toks[d]), [r.label for r in corpus.train[d]]) for d in corpus.train}
    val = {d: Encoded(encode_reviews(rows, vocab, cfg), [r.label for r in rows]) for d, rows in corpus.val.items()}
    if cache:
        plain = {k: {d: (e.ids, e.labels) for d, e in v.items()} for k, v in (("train", train), ("val", val))}
        torch.save({"vocab": vocab.itos, **plain}, cache)  # plain lists: loadable from any module
    return vocab, train, val


def parse_caps(default: int, overrides: str) -> dict[str, int]:
    """ "imdb=22500,sst2=67171" -> {"imdb": 22500, "sst2": 67171}; other domains get `default` (key "")."""
    caps = {"": default}
    for item in filter(None, (s.strip() for s in overrides.split(","))):
        name, _, n = item.partition("=")
        caps[name.strip()] = int(n)
    return caps


def draw_mixture(
    train: dict[str, Encoded], caps: dict[str, int], epoch: int, seed: int
) -> list[tuple[list[int], int, str]]:
    """This epoch's (ids, label, domain) rows: up to a cap per domain, rotating through each domain."""
    rows = []
    for d, enc in train.items():
        cap = caps.get(d, caps[""])
        order = list(range(len(enc.ids)))
        random.Random(f"{seed}-{d}").shuffle(order)  # one fixed permutation per domain ...
        n = min(cap, len(order))
        start = ((epoch - 1) * n) % len(order)  # ... walked in windows, epoch after epoch
        take = [order[(start + k) % len(order)] for k in range(n)]
        rows += [(enc.ids[i], enc.labels[i], d) for i in take]
    return rows


# Review sentences (not tweets, not long reviews) to compose two-clause texts from.
PAIR_SOURCES = ("yelp_shen_sentences", "amazon_li_sentences", "semeval_absa", "pros_cons", "sst2")
PAIR_MAX_LEN = 16  # tokens per clause
CONTRASTIVE = (",but", "but", ",however,", ",yet", ",but honestly")  # the clause after these dominates
JUXTAPOSED = (",", "and", ";", ",and")  # neither clause dominates: the text is mixed


def compose_pairs(
    train: dict[str, Encoded], vocab: Vocab, n: int, epoch: int, seed: int
) -> list[tuple[list[int], int, str, float]]:
    """`n` two-clause texts made of a positive and a negative training sentence, as people write them.

    "A, but B" takes B's label (the clause after a contrastive conjunction carries the verdict);
    "A, B" and "A and B" are mixed: their target is 50/50 (label smoothing 1.0), so the model learns to
    say it is unsure instead of picking a side with confidence. Rows: (ids, label, domain, smoothing).
    """
    rng = random.Random(f"{seed}-pairs-{epoch}")
    end = {vocab.stoi.get(t) for t in (".", "!", "?")} - {None}
    pools: dict[int, list[list[int]]] = {0: [], 1: []}
    for d in PAIR_SOURCES:
        if d in train:
            for ids, y in zip(train[d].ids, train[d].labels, strict=True):
                if 3 <= len(ids) <= PAIR_MAX_LEN:
                    pools[y].append(ids)
    if not n or not pools[0] or not pools[1]:
        return []

    contrastive = [vocab.encode(tokenize(c)) for c in CONTRASTIVE]
    juxtaposed = [vocab.encode(tokenize(c)) for c in JUXTAPOSED]
    rows = []
    for k in range(n):
        a_label = rng.randrange(2)
        a, b = rng.choice(pools[a_label]), rng.choice(pools[1 - a_label])
        while a and a[-1] in end:
            a = a[:-1]
        if k % 2 == 0:
            rows.append((a + rng.choice(contrastive) + b, 1 - a_label, "pairs: contrast", 0.0))
        else:
            rows.append((a + rng.choice(juxtaposed) + b, a_label, "pairs: mixed", 1.0))
    return rows


COPULAS = ("was", "is", "are", "were", "so", "very", "too", "really")  # a word after these is likely an adjective
NEGATORS = ("not", "it was not", "it's not", "this is not", "that was not", "definitely not", "it is not", "never")
NEGATION_TAILS = ([], ["at", "all"], ["."], ["at", "all", "."], ["!"])


def polar_adjectives(
    train: dict[str, Encoded], vocab: Vocab, min_count: int = 30, min_adj: int = 10, purity: float = 0.75
) -> dict[int, int]:
    """Words the training data itself marks as polar adjectives: {token id: label}.

    A word is kept when it follows a copula or an intensifier at least `min_adj` times (a cheap test
    for an adjective), occurs in `min_count` texts, and at least `purity` of its weight is on one label,
    where each domain's texts are weighted by 1 / (its texts of that label): a skewed set (airline
    tweets are 80% negative) does not make "flight" a negative word.
    """
    cop = {vocab.stoi[w] for w in COPULAS if w in vocab.stoi}
    weight: dict[int, list[float]] = {}
    seen: dict[int, int] = {}
    adj: dict[int, int] = {}
    for d, enc in train.items():
        if d == "imdb":  # long reviews hold every word with both labels
            continue
        per_label = [max(1, enc.labels.count(0)), max(1, enc.labels.count(1))]
        for ids, y in zip(enc.ids, enc.labels, strict=True):
            for t in set(ids):
                weight.setdefault(t, [0.0, 0.0])[y] += 1 / per_label[y]
                seen[t] = seen.get(t, 0) + 1
            for a, b in itertools.pairwise(ids):
                if a in cop:
                    adj[b] = adj.get(b, 0) + 1
    lex = {}
    for t, (neg, pos) in weight.items():
        if t > 1 and seen[t] >= min_count and adj.get(t, 0) >= min_adj and max(neg, pos) >= purity * (neg + pos):
            lex[t] = int(pos > neg)
    return lex


def compose_negations(
    lexicon: dict[int, int], vocab: Vocab, n: int, epoch: int, seed: int
) -> list[tuple[list[int], int, str, float]]:
    """`n` short negated phrases, "it was not <adjective> (at all)", labelled against the adjective.

    The data holds few negated short phrases, and a model trained on it reads "not bad at all" by its
    loudest word. The adjectives come from `polar_adjectives`, so nothing here is hand-picked.
    """
    if not n or not lexicon:
        return []
    rng = random.Random(f"{seed}-negations-{epoch}")
    words = sorted(lexicon)
    negators = [vocab.encode(tokenize(t)) for t in NEGATORS]
    tails = [vocab.encode(t) for t in NEGATION_TAILS]
    rows = []
    for _ in range(n):
        w = rng.choice(words)
        tail = rng.choice(tails)
        ids = [*rng.choice(negators), w, *tail]
        rows.append((ids, 1 - lexicon[w], "negations", 0.0))
    return rows


def accuracy(logits: np.ndarray, labels: list[int]) -> float:
    return float((logits.argmax(1) == np.asarray(labels)).mean())


def evaluate_domains(model: nn.Module, val: dict[str, Encoded]) -> tuple[dict[str, float], float, dict]:
    """Per-domain validation accuracy, their mean, and the pooled logits and labels."""
    accs, all_logits, all_labels = {}, [], []
    for d, enc in val.items():
        logits = predict_logits(model, enc.ids)
        accs[d] = round(accuracy(logits, enc.labels), 5)
        all_logits.append(logits)
        all_labels += enc.labels
    return accs, float(np.mean(list(accs.values()))), {"logits": np.concatenate(all_logits), "labels": all_labels}


def init_embeddings(model: SentimentClassifier, vocab: Vocab, path: Path) -> int:
    """Copy pre-trained vectors into the embedding table; returns how many words were found."""
    vecs = torch.load(path, weights_only=False)  # {"words": [...], "vectors": float32 [N, D]}
    table = dict(zip(vecs["words"], range(len(vecs["words"])), strict=True))
    w = torch.as_tensor(vecs["vectors"])
    if w.shape[1] != model.cfg.embed_dim:
        raise ValueError(f"vectors have {w.shape[1]} dimensions, the model's embed_dim is {model.cfg.embed_dim}")
    found = 0
    with torch.no_grad():
        for i, tok in enumerate(vocab.itos):
            j = table.get(tok)
            if j is not None and i != PAD_ID:
                model.embed.weight[i] = w[j]
                found += 1
    return found


def train(out: Path, data_dir: Path, cfg: SentimentConfig, tcfg: TrainConfig) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(tcfg.seed)
    vocab, tr, va = prepare(data_dir, cfg, tcfg, out / "data_cache.pt")
    cfg = dataclasses.replace(cfg, vocab_size=len(vocab))
    model = SentimentClassifier(cfg)
    if tcfg.vectors:
        found = init_embeddings(model, vocab, Path(tcfg.vectors))
        print(f"embeddings: {found} of {len(vocab)} words from {tcfg.vectors}")
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tcfg.epochs)
    state = {"epoch": 0, "history": [], "best_acc": -1.0, "bad_epochs": 0, "train_seconds": 0.0}
    lexicon = polar_adjectives(tr, vocab) if tcfg.negations else {}
    last = out / "last.pt"
    if last.exists():
        ck = torch.load(last, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        state = ck["state"]
        torch.set_rng_state(ck["torch_rng"])
        print(f"resumed from {last} after epoch {state['epoch']}")
    while state["epoch"] < tcfg.epochs and state["bad_epochs"] < tcfg.patience:
        epoch = state["epoch"] + 1
        t0 = time.time()
        model.train()
        rows = [
            (ids, y, d, tcfg.label_smoothing if d in NOISY_DOMAINS else 0.0)
            for ids, y, d in draw_mixture(tr, parse_caps(tcfg.domain_cap, tcfg.domain_caps), epoch, tcfg.seed)
        ]
        rows += compose_pairs(tr, vocab, tcfg.contrast_pairs, epoch, tcfg.seed)
        rows += compose_negations(lexicon, vocab, tcfg.negations, epoch, tcfg.seed)
        smooth = torch.tensor([eps for *_, eps in rows])
        labels = torch.tensor([y for _, y, _, _ in rows])
        seqs = [ids for ids, *_ in rows]
        rng = random.Random(tcfg.seed + epoch)
        batches = token_budget_batches([len(s) for s in seqs], tcfg.token_budget, tcfg.max_batch, rng)
        tot_loss = tot_ok = seen = 0
        bar = tqdm(batches, desc=f"epoch {epoch}/{tcfg.epochs}", unit="batch", mininterval=5)
        for idx in bar:
            ids, lens = make_batch(seqs, idx)
            y, eps = labels[idx], smooth[idx]
            logits = model(ids, lens)
            logp = torch.log_softmax(logits, dim=1)
            nll = -logp.gather(1, y.unsqueeze(1)).squeeze(1)
            loss = ((1 - eps) * nll - eps * logp.mean(1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip_norm)
            opt.step()
            tot_loss += loss.item() * len(idx)
            tot_ok += (logits.argmax(1) == y).sum().item()
            seen += len(idx)
            bar.set_postfix(loss=f"{tot_loss / seen:.4f}", acc=f"{tot_ok / seen:.4f}")
        sched.step()
        accs, mean_acc, pooled = evaluate_domains(model, va)
        va_loss = float(nn.functional.cross_entropy(torch.from_numpy(pooled["logits"]), torch.tensor(pooled["labels"])))
        state["train_seconds"] += time.time() - t0
        row = {
            "epoch": epoch,
            "train_loss": tot_loss / seen,
            "train_acc": tot_ok / seen,
            "val_loss": va_loss,
            "val_acc": mean_acc,  # mean over domains
            "val_acc_by_domain": accs,
            "seconds": round(time.time() - t0, 1),
        }
        state["history"].append(row)
        print(json.dumps(row), flush=True)
        state["epoch"] = epoch
        improved = mean_acc > state["best_acc"]
        if improved:
            state["best_acc"], state["bad_epochs"] = mean_acc, 0
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
        plot_history(state["history"], out, cfg)
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
    return report


def plot_history(history: list[dict], out: Path, cfg: SentimentConfig) -> None:
    plot_curves(
        history,
        out / "curve.png",
        title=f"sentiment ({cfg.cell}, {cfg.pooling} pooling)",
        panels=[("loss", ["train_loss", "val_loss"]), ("accuracy", ["train_acc", "val_acc"])],
    )
    flat = [{"epoch": h["epoch"], **h["val_acc_by_domain"]} for h in history]
    plot_curves(
        flat, out / "domains.png", title="validation accuracy by domain", panels=[("accuracy", sorted(flat[0])[:-1])]
    )


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
        f"best mean val acc {report['best_val_acc']:.4f} after {report['epochs_run']} epochs, "
        f"{report['train_seconds']:.0f}s"
    )


if __name__ == "__main__":
    main()
