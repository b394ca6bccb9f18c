"""Training speed of the translator, fp32 against bfloat16 matrix products, side by side in one run.

`make train-translation` trains with `--amp auto`: bfloat16 autocast where the CPU multiplies
bfloat16 in hardware (AMX, AVX512_BF16), fp32 elsewhere. This measures the choice on the CPU at
hand: the recipe's model (general recipe sizes, joint vocabulary), one synthetic batch of the
recipe's token budget, full training steps (forward, loss, backward, clipping, Adam: the step
`training.translation.speed` measures), one torch thread as each training worker runs. The modes
alternate round by round, and each is timed in CPU time of this process (`time.process_time`, less
disturbed than wall time by other work on a shared machine); the table shows each mode's median
and the ratio.

    python -m bench.training_speed --out bench/results/training_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench.cost_model import cpu_name
from training.cross_cpu import has_bf16_matmul, isa
from training.translation.model import Seq2Seq, TranslationConfig
from training.translation.speed import step
from training.translation.train import TrainConfig, resolve_amp

MODES = ("fp32", "bf16")


def synthetic_batch(vocab: int, batch: int, src_len: int, tgt_len: int, seed: int = 0, zipf: bool = False):
    """Ids 4.. (0-3 are special), uniform, or with `zipf` drawn from a Zipf distribution over the
    vocabulary (frequency rank = id, the order an adaptive softmax is given)."""
    g = torch.Generator().manual_seed(seed)
    if zipf:
        p = 1.0 / torch.arange(1, vocab - 3, dtype=torch.float)
        src = 4 + torch.multinomial(p, batch * src_len, replacement=True, generator=g).view(batch, src_len)
        tgt = 4 + torch.multinomial(p, batch * (tgt_len + 1), replacement=True, generator=g).view(batch, tgt_len + 1)
    else:
        src = torch.randint(4, vocab, (batch, src_len), generator=g)
        tgt = torch.randint(4, vocab, (batch, tgt_len + 1), generator=g)
    return src, torch.full((batch,), src_len), tgt[:, :-1], tgt[:, 1:]


def step_seconds(model, opt, batch, bf16: bool, steps: int) -> float:
    """CPU seconds per training step (training.translation.speed's), the mean over `steps`."""
    t0 = time.process_time()
    for _ in range(steps):
        step(model, opt, batch, bf16)
    return (time.process_time() - t0) / steps


def measure(vocab: int, batch: int, src_len: int, tgt_len: int, steps: int, rounds: int, progress=print) -> dict:
    torch.manual_seed(0)
    model = Seq2Seq(TranslationConfig(src_vocab=vocab, tgt_vocab=vocab, dropout=0.2)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    data = synthetic_batch(vocab, batch, src_len, tgt_len)
    failed: dict[str, str] = {}
    for mode in MODES:  # one warm-up step each (allocator, kernel selection); a mode this CPU cannot run is noted
        try:
            step_seconds(model, opt, data, mode == "bf16", 1)
        except RuntimeError as e:  # e.g. oneDNN has no bfloat16 LSTM for an AVX2-only CPU
            failed[mode] = str(e).splitlines()[0]
            progress(f"{mode} cannot run here: {failed[mode]}")
    modes = [m for m in MODES if m not in failed]
    seconds: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            seconds[mode].append(step_seconds(model, opt, data, mode == "bf16", steps))
            progress(f"round {r + 1}/{rounds} {mode}: {seconds[mode][-1]:.3f} CPU s/step")
    tokens = batch * tgt_len
    median = {m: statistics.median(s) for m, s in seconds.items()}
    return {
        "cpu": cpu_name(),
        "isa": isa(),
        "bf16_matmul_in_hardware": has_bf16_matmul(),
        "amp_auto_picks": resolve_amp(TrainConfig(amp="auto")).amp,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": {"sentences": batch, "src_len": src_len, "tgt_len": tgt_len, "vocab": vocab},
        "steps_per_round": steps,
        "cpu_seconds_per_step": seconds,
        "target_subwords_per_cpu_second": {m: tokens / s for m, s in median.items()},
        "failed": failed,
        "bf16_over_fp32": median["fp32"] / median["bf16"] if len(median) == 2 else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=10000, help="joint vocabulary (the en-de recipe's)")
    p.add_argument("--batch", type=int, default=160, help="sentences (160 x 25 is the recipe's 4,000-token budget)")
    p.add_argument("--src-len", type=int, default=22)
    p.add_argument("--tgt-len", type=int, default=24)
    p.add_argument("--steps", type=int, default=3, help="training steps per mode and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here too")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    res = measure(a.vocab, a.batch, a.src_len, a.tgt_len, a.steps, a.rounds)
    print(f"{res['cpu']} ({res['isa']}; bfloat16 matrix units: {'yes' if res['bf16_matmul_in_hardware'] else 'no'})")
    for m in MODES:
        if m in res["failed"]:
            print(f"  {m}: cannot run on this CPU ({res['failed'][m]})")
        else:
            print(f"  {m}: {res['target_subwords_per_cpu_second'][m]:,.0f} target subwords per CPU second")
    if res["bf16_over_fp32"] is not None:
        print(f"  bf16 / fp32: {res['bf16_over_fp32']:.2f}x")
    print(f"  --amp auto picks {res['amp_auto_picks']}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
