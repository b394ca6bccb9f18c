"""bench/serving.py (`make bench`) runs end to end on the tiny models: two real servers, real
load, the raw in-process comparison, and a report whose ratios are computed from what it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_produces_a_consistent_report(models_dir, data_dir, tmp_path):
    out = tmp_path / "bench"
    cmd = [
        sys.executable,
        "bench/serving.py",
        "--models-dir",
        str(models_dir),
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--reviews",
        "48",
        "--sentences",
        "16",
        "--warmup",
        "4",
        "--rounds",
        "1",
        "--device",
        "cpu",
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "serving.json").read_text())
    rows = {row["endpoint"]: row for row in report["summary"]}
    assert set(rows) == {"sentiment", "translate"}
    for row in rows.values():
        assert row["batched_rps"] > 0 and row["unbatched_rps"] > 0 and row["raw_rps"] > 0
        assert row["batching_speedup"] == pytest.approx(row["batched_rps"] / row["unbatched_rps"])
        assert row["served_over_raw"] == pytest.approx(row["batched_rps"] / row["raw_rps"])
        assert row["mean_batch"] >= 1
    assert rows["sentiment"]["requests"] == 48 and rows["translate"]["requests"] == 16
    # the raw comparison ran the file the server served
    served = next(m for m in report["details"]["batched"]["models"] if m["task"] == "sentiment")
    assert served["file"] == "model.onnx" and served["precision"] == "fp32"  # the tiny artifact has no int8
    assert report["details"]["raw"]["sentiment_file"] == served["file"]
    assert (out / "serving.png").stat().st_size > 5000
    assert "batching" in r.stdout and "served / raw" in r.stdout
