"""Training speed of the translator with the softmax over the whole vocabulary against the
softmax over a subset of it (`--softmax-subset`: each batch's own target subwords and the N most
frequent), side by side in one run.

The recipe's model (10k joint vocabulary for en-de), real batches of the general-domain mixture
at the recipe's token budget, full training steps (training.translation.speed.step: forward, loss,
backward, clipping, Adam), one torch thread as each training worker runs. Every batch is trained
once in each mode, the modes' order alternating from batch to batch, and timed in CPU seconds; the
table shows target subwords per CPU second and the ratio to the whole vocabulary. What the subset
does to the model's quality is a training run's question, not this one's.

`--adaptive 2000,5000` adds the adaptive softmax with those cutoffs (`--adaptive-cutoffs`, exact
over the whole vocabulary: the head's rows for every target, a tail cluster's for its own): a model
of its own, starting from the same weights, its frequency order counted on the mixture's targets.

    python -m bench.softmax_subset --spm models/translate-en-de/spm.src.model --adaptive 2000,5000 \
        --out bench/results/softmax_subset.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from bench.cost_model import cpu_name
from service.runtime.subword import PAD_ID
from training.cross_cpu import isa
from training.translation.model import Seq2Seq
from training.translation.speed import add_mixture_args, recipe_mixture, step
from training.translation.train import frequent_targets, make_batch, target_counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mixture_args(p)
    p.add_argument("--subset", type=int, action="append", default=[], help="N most frequent (default 1000, 2000)")
    p.add_argument(
        "--adaptive", action="append", default=[], help="an adaptive softmax's cutoffs, e.g. 2000,5000 (repeatable)"
    )
    p.add_argument("--batches", type=int, default=24)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    mix = recipe_mixture(a)
    cfg, tr_s, tr_t, batches = mix.cfg, mix.src, mix.tgt, mix.batches[: a.batches]
    modes: dict[str, torch.Tensor | None] = {"whole": None}
    modes |= {f"subset{n}": frequent_targets(tr_t, cfg.tgt_vocab, n) for n in a.subset or [1000, 2000]}

    torch.manual_seed(0)
    model = Seq2Seq(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    # each mode's model and optimizer: the subsets train the whole vocabulary's, an adaptive
    # softmax a model of its own from the same initial weights
    trained = dict.fromkeys(modes, (model, opt))
    counts = target_counts(tr_t, cfg.tgt_vocab)
    for spec in a.adaptive:
        cuts = tuple(int(c) for c in spec.split(","))
        m = Seq2Seq(dataclasses.replace(cfg, adaptive_cutoffs=cuts)).train()
        m.load_state_dict(model.state_dict(), strict=False)  # all but the clusters' entries and the order
        m.decoder.set_vocab_order(counts)
        name = "adaptive" + "-".join(map(str, cuts))
        modes[name] = None
        trained[name] = (m, torch.optim.Adam(m.parameters(), lr=1e-4))
    for m, o in {id(v[0]): v for v in trained.values()}.values():
        step(m, o, make_batch(tr_s, tr_t, batches[0]))  # warm-up
    seconds = dict.fromkeys(modes, 0.0)
    tokens = dict.fromkeys(modes, 0)
    classes: dict[str, list[int]] = {m: [] for m in modes}
    t_start = time.time()
    for k, idx in enumerate(batches):
        batch = make_batch(tr_s, tr_t, idx)
        targets = batch[3][batch[3] != PAD_ID]
        for m in list(modes) if k % 2 == 0 else list(modes)[::-1]:
            t0 = time.process_time()
            tokens[m] += step(*trained[m], batch, frequent=modes[m])
            seconds[m] += time.process_time() - t0
            f, cuts = modes[m], trained[m][0].cfg.adaptive_cutoffs
            if cuts:  # the head's softmax: the most frequent ids and one entry per tail cluster
                classes[m].append(cuts[0] + len(cuts))
            else:
                classes[m].append(cfg.tgt_vocab if f is None else len(torch.unique(torch.cat([f, targets]))))
        print(f"batch {k + 1}/{len(batches)}, {time.time() - t_start:.0f} s", flush=True)

    rate = {m: tokens[m] / seconds[m] for m in modes}
    res = {
        "cpu": cpu_name(),
        "isa": isa(),
        "torch": torch.__version__,
        "vocab": cfg.tgt_vocab,
        "batches": len(batches),
        "budget": a.budget,
        "modes": {
            m: {
                "target_subwords": tokens[m],
                "target_subwords_per_cpu_second": round(rate[m], 1),
                "over_whole": round(rate[m] / rate["whole"], 3),
                "mean_classes": round(sum(classes[m]) / len(classes[m]), 1),
            }
            for m in modes
        },
    }
    print(f"{res['cpu']} ({res['isa']}), {len(batches)} real batches, each trained once per mode:")
    for m, r in res["modes"].items():
        print(
            f"  {m:18s} {r['target_subwords_per_cpu_second']:7,.0f} target subwords per CPU second, "
            f"softmax over {r['mean_classes']:,.0f} classes: {r['over_whole']:.2f}x"
        )
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
