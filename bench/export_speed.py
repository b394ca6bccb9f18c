"""The translation export's two slow parts, the old way and the new, side by side in one run.

- Decodes (validation, test, the int8 gate, the score guide: most of the export's minutes):
  best_hypotheses over `--sentences` validation sentences (evenly from each set) in this process,
  as every export did before, against inside decode_pool() (one worker per core, each on one
  ONNX Runtime thread). The outputs must be identical.
- The beam-search parity check: PyTorch's search, then ONNX Runtime's (before), against the two
  side by side (export.check_search_parity), on `--parity-sentences` sentences.

The rounds alternate which way goes first; medians are reported. The PyTorch weights are the
artifact's own, read back by training.translation.from_artifact.

    python -m bench.export_speed --artifact models/translate-en-fr --out bench/results/export_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.cost_model import cpu_name
from service.runtime.providers import available_cores
from service.runtime.translation import DECODER
from training.cross_cpu import isa
from training.data import default_data_dir
from training.translation.data import evaluation_sets, evenly
from training.translation.decode_pool import best_hypotheses, decode_pool
from training.translation.evaluate import corpus_of
from training.translation.export import DECODING, check_search_parity, search_parity_options
from training.translation.from_artifact import run_from_artifact
from training.translation.model import load_checkpoint
from training.translation.translate import TorchStepper, onnx_stepper, onnx_translator, translate_ids


def sequential_search_parity(model, onnx, src: list[list[int]]) -> None:
    """What check_search_parity did before: PyTorch's whole search, then ONNX Runtime's."""
    kw = search_parity_options(DECODING["beam_size"], DECODING["length_penalty"])
    translate_ids(TorchStepper(model), src, **kw)
    translate_ids(onnx, src, **kw)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, default=Path("models/translate-en-fr"))
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--sentences", type=int, default=1024, help="validation sentences to decode, evenly from each set")
    p.add_argument("--parity-sentences", type=int, default=240)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    data_dir = a.data_dir or default_data_dir()
    meta = json.loads((a.artifact / "metadata.json").read_text())
    cfg = meta["config"]
    sets = evaluation_sets(data_dir, cfg["src_lang"], cfg["tgt_lang"], corpus_of(meta))["validation"]
    texts = [t for pair in sets.values() for t in evenly(pair, a.sentences // len(sets))[0]]
    tm = onnx_translator(a.artifact, DECODER, cfg, meta["decoding"])
    tm_alone = onnx_translator(a.artifact, DECODER, cfg, meta["decoding"])
    tm_alone.files = None  # decodes in this process, as every export did before
    beam = int(meta["decoding"]["beam_size"])
    with tempfile.TemporaryDirectory() as td:
        run = Path(td) / "run"
        run_from_artifact(a.artifact, run)
        model, _ = load_checkpoint(run)
    parity_src = tm.src_tok.encode_batch(evenly((texts, texts), a.parity_sentences)[0])
    onnx = onnx_stepper(a.artifact, DECODER)

    seconds: dict[str, list[float]] = {
        k: [] for k in ("decode_one_process", "decode_pool", "parity_sequential", "parity_side_by_side")
    }
    outputs = {}
    with decode_pool() as workers:
        best_hypotheses(tm, texts[:8], "warm-up", beam)  # the workers start once per export, not per decode
        for r in range(a.rounds):
            order = ["one", "pool"] if r % 2 == 0 else ["pool", "one"]
            for way in order:
                t0 = time.perf_counter()
                if way == "pool":
                    outputs[way] = best_hypotheses(tm, texts, f"round {r + 1}: pool", beam)
                else:
                    outputs[way] = best_hypotheses(tm_alone, texts, f"round {r + 1}: one process", beam)
                seconds["decode_pool" if way == "pool" else "decode_one_process"].append(time.perf_counter() - t0)
            for way in ["seq", "side"] if r % 2 == 0 else ["side", "seq"]:
                t0 = time.perf_counter()
                if way == "seq":
                    sequential_search_parity(model, onnx, parity_src)
                else:
                    check_search_parity(model, onnx, parity_src, beam, DECODING["length_penalty"])
                seconds["parity_sequential" if way == "seq" else "parity_side_by_side"].append(time.perf_counter() - t0)
            print({k: round(v[-1], 1) for k, v in seconds.items()}, flush=True)
    identical = [h.tokens for h in outputs["one"]] == [h.tokens for h in outputs["pool"]] and [
        h.score for h in outputs["one"]
    ] == [h.score for h in outputs["pool"]]
    med = {k: round(statistics.median(v), 2) for k, v in seconds.items()}
    result = {
        "cpu": cpu_name(),
        "isa": isa(),
        "cores": available_cores(),
        "pool_workers": workers,
        "torch_threads": torch.get_num_threads(),
        "artifact": str(a.artifact),
        "sentences": len(texts),
        "parity_sentences": len(parity_src),
        "rounds": a.rounds,
        "seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "median_seconds": med,
        "decode_speedup": round(med["decode_one_process"] / med["decode_pool"], 2),
        "parity_speedup": round(med["parity_sequential"] / med["parity_side_by_side"], 2),
        "outputs_identical": identical,
    }
    print(json.dumps(result, indent=2))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
