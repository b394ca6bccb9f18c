"""Drive the service with Triton's own load tool, `perf_analyzer`, over the Open Inference Protocol:
HTTP with binary tensors (its default) and gRPC, real IMDB test reviews as input data.

    sh ../shared/tools/perf-analyzer.sh          # installs /tmp/perf_analyzer (Debian 12: see docs/oip.md)
    python -m bench.perf_analyzer                # shipped models, concurrency 16, 10 s windows

Starts `python -m service` on the models (free ports), writes perf_analyzer's --input-data file
(one review per request), runs it once per protocol and model, and writes what it measured (its
CSV, and a summary with the server's own statistics over the same run from /v2/.../stats) to
--out (default bench/results/perf_analyzer.json). A run with any failed request fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.inputs import default_data_dir, imdb_reviews, multi30k_sentences
from bench.server import ROOT, ServerProcess


def input_data(texts: list[str], path: Path) -> Path:
    path.write_text(json.dumps({"data": [{"TEXT": {"content": [t], "shape": [1]}} for t in texts]}))
    return path


def server_stats(url: str, model: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v2/models/{model}/stats", timeout=10).json()["model_stats"][0]


def run(binary: str, model: str, url: str, protocol: str, data: Path, a: argparse.Namespace, out: Path) -> dict:
    csv_path = out / f"perf_analyzer-{model}-{protocol}.csv"
    cmd = [
        binary,
        "-m",
        model,
        "-u",
        url,
        "-i",
        protocol,
        "--input-data",
        str(data),
        "--concurrency-range",
        f"{a.concurrency}:{a.concurrency}",
        "--measurement-mode",
        "time_windows",
        "--measurement-interval",
        str(a.window_ms),
        "--stability-percentage",
        str(a.stability),
        "--max-trials",
        "10",
        "--percentile",
        "99",
        "-f",
        str(csv_path),
    ]
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    print(r.stdout[-2500:], r.stderr[-1500:], flush=True)
    if r.returncode != 0:
        raise RuntimeError(f"perf_analyzer {protocol} {model} exited {r.returncode}")
    row = next(csv.DictReader(csv_path.open()))
    return {
        "model": model,
        "protocol": protocol,
        "concurrency": a.concurrency,
        "throughput_infer_per_s": float(row["Inferences/Second"]),
        "p50_us": int(row["p50 latency"]),
        "p99_us": int(row["p99 latency"]),
        "client_send_us": int(row.get("Client Send", 0)),
        "client_recv_us": int(row.get("Client Recv", 0)),
        "seconds": round(time.time() - t0, 1),
        "command": " ".join(cmd[1:]).replace(str(data), "reviews.json").replace(str(csv_path), csv_path.name),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.perf_analyzer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--perf-analyzer", default="/tmp/perf_analyzer", help="the binary (or its wrapper)")
    p.add_argument("--models-dir", type=Path, default=ROOT / "models")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--window-ms", type=int, default=10_000)
    p.add_argument("--stability", type=int, default=25, help="perf_analyzer's --stability-percentage")
    p.add_argument("--texts", type=int, default=512)
    p.add_argument("--models", default="sentiment,translate-en-de", help="comma-separated OIP model names")
    a = p.parse_args(argv)
    if not Path(a.perf_analyzer).exists():
        print(f"{a.perf_analyzer} not found: run ../shared/tools/perf-analyzer.sh (docs/oip.md)", file=sys.stderr)
        return 2
    data_dir = a.data_dir or default_data_dir()
    a.out.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="rnnserve-pa-") as tmp:
        srv = ServerProcess(a.models_dir.resolve(), ["--device", "cpu"], Path(tmp), "perf-analyzer")
        try:
            srv.wait_healthy()
            for model in a.models.split(","):
                texts = (
                    imdb_reviews(data_dir, a.texts, 0)
                    if model == "sentiment"
                    else multi30k_sentences(data_dir, model.split("-")[1], a.texts)
                )
                data = input_data(texts, Path(tmp) / f"{model}.json")
                for protocol, url in (("http", f"127.0.0.1:{srv.port}"), ("grpc", srv.grpc_url)):
                    before = server_stats(srv.url, model)
                    r = run(a.perf_analyzer, model, url, protocol, data, a, a.out)
                    after = server_stats(srv.url, model)
                    s0, s1 = before["inference_stats"], after["inference_stats"]
                    n = s1["success"]["count"] - s0["success"]["count"]
                    r["server"] = {
                        "requests": n,
                        "failures": s1["fail"]["count"] - s0["fail"]["count"],
                        **{
                            f"{k}_us": round((s1[k]["ns"] - s0[k]["ns"]) / max(n, 1) / 1000, 1)
                            for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")
                        },
                        "executions": after["execution_count"] - before["execution_count"],
                    }
                    if r["server"]["failures"]:
                        raise RuntimeError(f"{r['server']['failures']} requests failed on the server")
                    results.append(r)
        finally:
            srv.stop()
    report = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}
    (a.out / "perf_analyzer.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        "| model | protocol | conc. | infer/s | p50 / p99 ms | server: requests, failures, mean in server / queue / infer ms |"
    )
    print("|---|---|---:|---:|---:|---|")
    for r in results:
        s = r["server"]
        print(
            f"| {r['model']} | {r['protocol']} | {r['concurrency']} | {r['throughput_infer_per_s']:.1f} | "
            f"{r['p50_us'] / 1000:.1f} / {r['p99_us'] / 1000:.1f} | {s['requests']}, {s['failures']}, "
            f"{s['success_us'] / 1000:.1f} / {s['queue_us'] / 1000:.1f} / {s['compute_infer_us'] / 1000:.1f} |"
        )
    print(f"wrote {a.out / 'perf_analyzer.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
