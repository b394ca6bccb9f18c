"""Measure the fair scheduler's cost model (service.batching.fair.CostModel) on the shipped models.

In-process, one thread per session as the server's workers run them, CPU time of this process
(time.process_time: less disturbed by other work on a shared machine than wall time), the median
of `--repeat` runs per configuration, then a least-squares fit of the model's coefficients:

    translation ms = request + per_char * sum(chars) + per_char_beam * sum(chars) * beam
                     (x align_factor with return_alignments)
    sentiment ms   = request + per_char * sum(min(chars, sentiment_char_cap))

Writes the figures and the fit as JSON (--out) and prints the coefficients to paste into
service/batching/fair.py. One short run; on a shared machine repeat it before trusting it.

    python -m bench.cost_model --out bench/results/cost_model.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

from loadgen.data import dataset_file, default_data_dir, load_texts
from service.settings import PROJECT_ROOT


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.processor()
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def cpu_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1000)
    return statistics.median(times)


def fit_relative(x: list[list[float]], y: list[float]) -> np.ndarray:
    """Least squares on relative errors (a 4 ms request matters as much as a 300 ms one); a
    negative coefficient is dropped (set to 0) and the rest refitted."""
    xa, ya = np.array(x), np.array(y)
    keep = np.ones(xa.shape[1], dtype=bool)
    while True:
        w = 1 / ya
        coef = np.zeros(xa.shape[1])
        coef[keep] = np.linalg.lstsq(xa[:, keep] * w[:, None], ya * w, rcond=None)[0]
        if (coef >= 0).all():
            return coef
        keep &= coef > 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", type=Path, default=PROJECT_ROOT / "models")
    p.add_argument("--data-dir", type=Path, default=default_data_dir())
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)

    from service.batching.fair import SENTIMENT_CHAR_CAP
    from service.runtime.sentiment import SentimentModel
    from service.runtime.translation import TranslationModel

    rows: list[dict] = []
    tm = TranslationModel(a.models_dir / "translate-en-de", threads=1, precision="auto")
    sents = load_texts(dataset_file("translate", a.data_dir), limit=256, seed=1, max_chars=1000)
    tm.translate(sents[:4], beam_size=2)  # warm-up
    grid = [(1, 1), (1, 5), (1, 8), (8, 1), (8, 5), (8, 8), (32, 5), (32, 8)]
    for k, (n, beam) in enumerate(grid):
        texts = sents[k * 32 : k * 32 + n]
        ms = cpu_ms(lambda t=texts, b=beam: tm.translate(t, beam_size=b, attention=False), a.repeat)
        rows.append({"task": "translate", "texts": n, "chars": sum(map(len, texts)), "beam": beam, "ms": ms})
        print(rows[-1], flush=True)
    texts = sents[:16]
    plain = cpu_ms(lambda: tm.translate(texts, beam_size=8, n_best=8, attention=False), a.repeat)
    aligned = cpu_ms(lambda: tm.translate(texts, beam_size=8, n_best=8, attention=True), a.repeat)
    align_factor = aligned / plain
    print({"align_factor": align_factor}, flush=True)

    # The worst case through the worker's whole path (beam search, n-best detokenized,
    # alignments rounded as batching.apis does), against what the fitted model will estimate.
    worst = sents[:64]

    def whole_path() -> None:
        src = tm.encode_texts(worst)
        hyps = tm.translate_ids(src, beam_size=8, n_best=8, attention=True)
        for k, h in enumerate(hyps):
            [tm.detok(x) for x in h]
            a = tm.alignment(src[k], h[0])
            np.round(np.asarray(a["weights"], dtype=np.float64), 4).tolist()

    worst_ms = cpu_ms(whole_path, 1)
    print({"worst_case_ms": worst_ms}, flush=True)

    sm = SentimentModel(a.models_dir / "sentiment", threads=1, precision="auto")
    reviews = load_texts(dataset_file("sentiment", a.data_dir), limit=256, seed=1)
    sm.predict(reviews[:4])
    for k, n in enumerate((1, 4, 16, 64)):
        texts = reviews[k * 64 : k * 64 + n]
        ms = cpu_ms(lambda t=texts: sm.predict(t), a.repeat)
        chars = sum(min(len(t), SENTIMENT_CHAR_CAP) for t in texts)
        rows.append({"task": "sentiment", "texts": n, "chars": chars, "ms": ms})
        print(rows[-1], flush=True)

    tr = [r for r in rows if r["task"] == "translate"]
    t_coef = fit_relative([[1.0, r["chars"], r["chars"] * r["beam"]] for r in tr], [r["ms"] for r in tr])
    se = [r for r in rows if r["task"] == "sentiment"]
    s_coef = fit_relative([[1.0, r["chars"]] for r in se], [r["ms"] for r in se])
    fit = {
        "translate_request_ms": round(float(t_coef[0]), 3),
        "translate_per_char_ms": round(float(t_coef[1]), 5),
        "translate_per_char_beam_ms": round(float(t_coef[2]), 5),
        "translate_align_factor": round(align_factor, 3),
        "sentiment_request_ms": round(float(s_coef[0]), 3),
        "sentiment_per_char_ms": round(float(s_coef[1]), 6),
    }
    worst_chars = sum(map(len, worst))
    worst_estimate = (t_coef[0] + (t_coef[1] + t_coef[2] * 8) * worst_chars) * align_factor
    report = {
        "cpu": cpu_name(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average": list(np.round(np.array(__import__("os").getloadavg()), 2)),
        "translate_precision": tm.precision,
        "sentiment_precision": sm.precision,
        "measurements": rows,
        "worst_case": {
            "texts": 64,
            "chars": worst_chars,
            "beam": 8,
            "n_best": 8,
            "alignments": True,
            "measured_ms": round(worst_ms, 1),
            "estimated_ms": round(float(worst_estimate), 1),
        },
        "fit_over_measured": [
            round(float(v), 3)
            for v in [(t_coef[0] + t_coef[1] * r["chars"] + t_coef[2] * r["chars"] * r["beam"]) / r["ms"] for r in tr]
            + [(s_coef[0] + s_coef[1] * r["chars"]) / r["ms"] for r in se]
        ],
        "fit": fit,
    }
    print(json.dumps(fit, indent=1))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
