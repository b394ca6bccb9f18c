"""Training cost of smaller translators against the recipe's, side by side in one run.

On an AVX2-only CPU the recipe's six epochs do not fit the issue's 100 minutes per pair, and four
epochs of it miss the quality lines (docs/history.md), so the lever left is a cheaper model
trained as long. This measures what each size costs per target subword: full training steps
(`training.translation.speed.step`: forward, loss, backward, clipping, Adam) on one synthetic
batch of the recipe's token budget, one torch thread as each training worker runs, the sizes
alternating round by round, in CPU seconds of this process (`time.process_time`). Targets are
drawn from a Zipf distribution over the vocabulary (frequency rank = id, the order an adaptive
softmax is given), so an adaptive softmax's tail clusters are as rarely active as on real text.
It says nothing about what a size scores: that takes a training run.

    python -m bench.model_sizes --out bench/results/model_sizes.json
    python -m bench.model_sizes --size "dec 320:dec_hidden=320,adaptive_cutoffs=2000+5000"
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from bench.cost_model import cpu_name
from bench.training_speed import step_seconds, synthetic_batch
from training.cross_cpu import isa
from training.translation.model import Seq2Seq, TranslationConfig
from training.translation.speed import step

ADAPTIVE = "adaptive_cutoffs=2000+5000"
SIZES = (  # name: TranslationConfig fields changed from the recipe's (the first is the reference)
    "recipe:",
    f"recipe, adaptive:{ADAPTIVE}",
    f"dec 384, adaptive:dec_hidden=384,{ADAPTIVE}",
    f"enc 192 dec 384, adaptive:enc_hidden=192,dec_hidden=384,{ADAPTIVE}",
    f"emb/enc/attn 192 dec 384, adaptive:embed_dim=192,enc_hidden=192,attn_dim=192,dec_hidden=384,{ADAPTIVE}",
)


def parse_size(spec: str) -> tuple[str, dict]:
    """A spec "name:field=value,..." -> (name, fields); adaptive_cutoffs takes "2000+5000"."""
    name, _, fields = spec.partition(":")
    kw: dict = {}
    for item in filter(None, fields.split(",")):
        key, _, value = item.partition("=")
        if key == "adaptive_cutoffs":
            kw[key] = tuple(int(v) for v in value.split("+"))
        elif key in ("embed_dim", "enc_hidden", "dec_hidden", "attn_dim"):
            kw[key] = int(value)
        else:
            raise ValueError(f"{key!r}: a size sets embed_dim, enc_hidden, dec_hidden, attn_dim or adaptive_cutoffs")
    return name, kw


def measure(sizes: list[str], vocab: int, batch: int, src_len: int, tgt_len: int, steps: int, rounds: int,
            progress=print) -> dict:  # fmt: skip
    data = synthetic_batch(vocab, batch, src_len, tgt_len, zipf=True)
    runs = {}
    for spec in sizes:
        name, kw = parse_size(spec)
        torch.manual_seed(0)
        model = Seq2Seq(TranslationConfig(src_vocab=vocab, tgt_vocab=vocab, dropout=0.2, **kw)).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        step(model, opt, data)  # warm-up: allocator, kernel selection
        runs[name] = (model, opt, kw)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            model, opt, _ = runs[name]
            seconds[name].append(step_seconds(model, opt, data, False, steps))
            progress(f"round {r + 1}/{rounds} {name}: {seconds[name][-1]:.3f} CPU s/step")
    reference = statistics.median(seconds[next(iter(runs))])
    return {
        "cpu": cpu_name(),
        "isa": isa(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": {"sentences": batch, "src_len": src_len, "tgt_len": tgt_len, "vocab": vocab, "targets": "zipf"},
        "steps_per_round": steps,
        "sizes": {
            name: {
                "changes": {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()},
                "parameters": sum(p.numel() for p in model.parameters()),
                "cpu_seconds_per_step": seconds[name],
                "target_subwords_per_cpu_second": round(batch * tgt_len / statistics.median(seconds[name])),
                "speed_vs_first": round(reference / statistics.median(seconds[name]), 2),
            }
            for name, (model, _, kw) in runs.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.model_sizes", description=__doc__.split("\n\n")[0])
    p.add_argument("--size", action="append", help="name:field=value,... (repeatable; default: the five above)")
    p.add_argument("--vocab", type=int, default=10000, help="joint vocabulary (the en-de recipe's)")
    p.add_argument("--batch", type=int, default=160, help="sentences (160 x 25 is the recipe's 4,000-token budget)")
    p.add_argument("--src-len", type=int, default=22)
    p.add_argument("--tgt-len", type=int, default=24)
    p.add_argument("--steps", type=int, default=3, help="training steps per size and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here too")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    res = measure(a.size or list(SIZES), a.vocab, a.batch, a.src_len, a.tgt_len, a.steps, a.rounds)
    print(f"{'size':<40} {'parameters':>11} {'subwords/CPU s':>15} {'vs first':>9}")
    for name, r in res["sizes"].items():
        print(
            f"{name:<40} {r['parameters']:>11,} {r['target_subwords_per_cpu_second']:>15,} {r['speed_vs_first']:>8.2f}x"
        )
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
