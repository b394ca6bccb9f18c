"""How long two training workers wait for each other, with the two ways of cutting an epoch's
batches into steps, side by side in one run.

Every step of `make train-translation` gives one batch to each of its two workers, and both wait
at the gradient sum for the slower one. Consecutive batches of the shuffled list (the old way)
pair a batch of 256 short sentences with one of 50 long ones; `worker_steps` (the new way) pairs
batches of the same longest length. This draws `--steps` steps of each way from the same epoch of
the real general-domain mixture (the recipe's token budget and batch cap), times every batch's
training step alone in CPU time (training.translation.speed.step, one torch thread, as each
worker runs; the two ways' batches interleaved), and prices a step at its slower batch: target
subwords per second of a two-worker step, each way, against the ideal of no waiting.

    python -m bench.worker_balance --spm models/translate-en-de/spm.src.model --out bench/results/worker_balance.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from bench.cost_model import cpu_name
from training.cross_cpu import isa
from training.translation.model import Seq2Seq
from training.translation.speed import add_mixture_args, recipe_mixture, step
from training.translation.train import make_batch, worker_steps

WAYS = ("consecutive", "paired")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mixture_args(p)
    p.add_argument("--steps", type=int, default=40, help="steps of each way to time")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    mix = recipe_mixture(a)
    cfg, tr_s, tr_t, lengths, batches = mix.cfg, mix.src, mix.tgt, mix.lengths, mix.batches
    ways = {
        "consecutive": [batches[i : i + 2] for i in range(0, len(batches) - 1, 2)],
        "paired": [s for s in worker_steps(batches, lengths, 2, seed=a.seed) if len(s) == 2],
    }
    rng = random.Random(a.seed)
    drawn = {w: rng.sample(steps, a.steps) for w, steps in ways.items()}

    torch.manual_seed(0)
    model = Seq2Seq(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    step(model, opt, make_batch(tr_s, tr_t, batches[0]))  # warm-up
    seconds: dict[str, list[list[float]]] = {w: [] for w in WAYS}
    tokens = dict.fromkeys(WAYS, 0)
    t_start = time.time()
    for k in range(a.steps):
        for w in WAYS if k % 2 == 0 else WAYS[::-1]:
            times = []
            for idx in drawn[w][k]:
                batch = make_batch(tr_s, tr_t, idx)
                t0 = time.process_time()
                tokens[w] += step(model, opt, batch)
                times.append(time.process_time() - t0)
            seconds[w].append(times)
        print(f"step {k + 1}/{a.steps} of each way, {time.time() - t_start:.0f} s", flush=True)

    res: dict = {"cpu": cpu_name(), "isa": isa(), "torch": torch.__version__, "steps_per_way": a.steps,
                 "budget": a.budget, "max_batch": a.max_batch, "ways": {}}  # fmt: skip
    for w in WAYS:
        waited = sum(max(t) for t in seconds[w])
        ideal = sum(sum(t) / len(t) for t in seconds[w])
        res["ways"][w] = {
            "target_subwords": tokens[w],
            "step_seconds": round(waited, 2),
            "target_subwords_per_s": round(tokens[w] / waited, 1),
            "idle_share": round(1 - ideal / waited, 4),
            "batch_seconds": seconds[w],
        }
    c, q = (res["ways"][w]["target_subwords_per_s"] for w in WAYS)
    res["paired_over_consecutive"] = round(q / c, 3)
    print(f"{res['cpu']} ({res['isa']}), {a.steps} two-worker steps each way, priced at the slower batch:")
    for w in WAYS:
        r = res["ways"][w]
        print(f"  {w:12s} {r['target_subwords_per_s']:8,.0f} target subwords/s, workers idle {r['idle_share']:.1%}")
    print(f"  paired / consecutive: {res['paired_over_consecutive']:.2f}x")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
