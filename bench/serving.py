"""Serving benchmark (`make bench`): what dynamic batching buys, and what serving costs.

One run on this machine, side by side, on real test data:

- served throughput of `python -m service` with dynamic batching (the default settings) vs the
  same server with `--max-batch-size 1`, at concurrency 32 for sentiment (one IMDB test review per
  request) and 16 for translation (one Multi30k test sentence per request, beam 5), with p50 and
  p99 latency;
- served throughput (batched) as a fraction of raw ONNX Runtime throughput on the same inputs,
  with no HTTP: `SentimentModel` / `TranslationModel` called directly, in as many processes side by
  side as the server has inference workers per family, each with the threads per session the
  server reports in /info, in batches of the size its workers can form (the callers spread over
  the workers: min(concurrency / workers, max batch size); sentiment cut by the server's token
  budget).

Also measured, to read the two ratios against: raw throughput one text per call (the
ceiling of what batching can buy with these models on this hardware), the mean batch the server
formed (from its /metrics), and the CPU time the server's processes spent per request (which,
unlike throughput, hardly moves when other jobs share the machine).

Both servers run side by side (idle ones cost nothing) and the measurements are interleaved in
rounds (--rounds, median reported), so that a change in the machine's load hits every
configuration alike.

Targets: batching >= 3x on both endpoints, served >= 70% of raw. Prints a table and writes
`serving.json` and `serving.png` under --out (default bench/results/).

The load generator is a minimal keep-alive HTTP/1.1 client on asyncio (one connection per
concurrent caller), so that it takes as little of the machine's CPU as possible from the server
it measures. Every request is checked for a 200 with a result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import lzma
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.proctree import tree_cpu_seconds  # noqa: E402 (after the path set-up above)

TARGET_BATCHING, TARGET_RAW = 3.0, 0.70


# ---------------------------------------------------------------------------------------------
# Inputs


def default_data_dir() -> Path:
    shared = ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else ROOT / "data"


def imdb_reviews(data_dir: Path, n: int, seed: int) -> list[str]:
    """n IMDB test reviews, a fixed random sample (the file is ordered negatives first)."""
    path = data_dir / "imdb" / "imdb_test.jsonl.xz"
    with lzma.open(path, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return random.Random(seed).sample(texts, min(n, len(texts)))


def multi30k_sentences(data_dir: Path, lang: str, n: int) -> list[str]:
    path = data_dir / "multi30k" / f"test_2016_flickr.{lang}.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [line.strip() for line in f if line.strip()]
    return lines[:n]


# ---------------------------------------------------------------------------------------------
# The server under test


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, models_dir: Path, args: list[str], log_dir: Path, name: str):
        self.port = free_port()
        self.log_path = log_dir / f"server-{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        cmd = [
            sys.executable,
            "-m",
            "service",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--models-dir",
            str(models_dir),
            "--log-level",
            "warning",
            *args,
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def get(self, path: str, timeout: float = 5) -> tuple[int, bytes]:
        return asyncio.run(_request("127.0.0.1", self.port, "GET", path, None, timeout))

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; log: {self.log_path}\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not healthy within {timeout} s; log: {self.log_path}")

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the server's processes (HTTP, inference workers; Linux /proc)."""
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(40)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its inference workers, if any are left
        self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------------------------
# Load generator


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    return status, await reader.readexactly(length)


def _encode(method: str, path: str, body: bytes | None) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: bench\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body or b"")


async def _request(
    host: str, port: int, method: str, path: str, body: bytes | None, timeout: float
) -> tuple[int, bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(_encode(method, path, body))
        return await asyncio.wait_for(_read_response(reader), timeout)
    finally:
        writer.close()


async def _load(port: int, path: str, bodies: list[bytes], concurrency: int) -> dict[str, Any]:
    """POST every body once, `concurrency` callers at a time; throughput and latency."""
    latencies: list[float] = [0.0] * len(bodies)
    failures: list[str] = []
    todo = iter(range(len(bodies)))

    async def caller() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in todo:
                t0 = time.perf_counter()
                writer.write(_encode("POST", path, bodies[i]))
                status, body = await _read_response(reader)
                latencies[i] = time.perf_counter() - t0
                if status != 200:
                    failures.append(f"{status}: {body[:200]!r}")
                elif body.count(b'"results"') != 1:
                    failures.append(f"unexpected body {body[:200]!r}")
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(bodies)} requests to {path} failed, e.g. {failures[0]}")
    lat = sorted(latencies)
    return {
        "requests": len(bodies),
        "seconds": round(wall, 3),
        "throughput": len(bodies) / wall,
        "p50_ms": 1000 * _quantile(lat, 0.50),
        "p99_ms": 1000 * _quantile(lat, 0.99),
        "mean_ms": 1000 * statistics.fmean(lat),
    }


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def batch_histogram(metrics_text: str, endpoint: str) -> dict[str, float]:
    """Mean requests per batch, from the server's rnnserve_batch_size_requests histogram."""
    from prometheus_client.parser import text_string_to_metric_families

    total = count = 0.0
    for fam in text_string_to_metric_families(metrics_text):
        if fam.name == "rnnserve_batch_size_requests":
            for s in fam.samples:
                if s.labels.get("endpoint") == endpoint:
                    if s.name.endswith("_sum"):
                        total += s.value
                    elif s.name.endswith("_count"):
                        count += s.value
    return {"batches": count, "requests": total}


# ---------------------------------------------------------------------------------------------
# Measurements


def measure_served(srv: ServerProcess, endpoint: str, bodies: list[bytes], conc: int) -> dict[str, Any]:
    before = batch_histogram(srv.get("/metrics")[1].decode(), endpoint)
    cpu0 = srv.cpu_seconds()
    res = asyncio.run(_load(srv.port, f"/v1/{endpoint}", bodies, conc))
    cpu1 = srv.cpu_seconds()
    after = batch_histogram(srv.get("/metrics")[1].decode(), endpoint)
    # CPU the server spent per request: unlike throughput, barely moved by other jobs on the machine.
    res["server_cpu_ms_per_request"] = 1000 * (cpu1 - cpu0) / len(bodies) if cpu0 is not None else float("nan")
    batches = after["batches"] - before["batches"]
    res["mean_batch_requests"] = (after["requests"] - before["requests"]) / batches if batches else float("nan")
    res["concurrency"] = conc
    return res


class Raw:
    """The same inputs through the same model classes the server's workers use, in one process
    (a RawLanes lane): no HTTP, no queues, batches of the size a worker can form."""

    def __init__(
        self,
        models_dir: Path,
        threads: int,
        device: str,
        pair: str | None,
        has_sentiment: bool,
        sentiment_file: str,
        translate_precision: str = "fp32",
    ):
        self.sm = self.tm = None
        if has_sentiment:
            from service.sentiment_model import SentimentModel

            # the very file the server serves (--precision auto picks the int8 variant on CPU)
            self.sm = SentimentModel(
                models_dir / "sentiment", device=device, threads=threads, model_file=sentiment_file
            )
        if pair:
            from service.translation_model import TranslationModel

            # the decoder the server serves (--precision auto picks the int8 step on CPU)
            self.tm = TranslationModel(
                models_dir / f"translate-{pair}", device=device, threads=threads, precision=translate_precision
            )

    def sentiment(self, texts: list[str], batch: int, token_budget: int) -> dict[str, Any]:
        from service.sentiment_model import softmax

        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            probs = softmax(self.sm.logits(self.sm.encode(texts[i : i + batch]), token_budget=token_budget))
            [self.sm.labels[int(p.argmax())] for p in probs]
        wall = time.perf_counter() - t0
        return {"requests": len(texts), "batch": batch, "seconds": round(wall, 3), "throughput": len(texts) / wall}

    def translate(self, texts: list[str], batch: int, beam: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            hyps = self.tm.translate(texts[i : i + batch], beam_size=beam)
            [self.tm.detok(h[0]) for h in hyps]
        wall = time.perf_counter() - t0
        return {"requests": len(texts), "batch": batch, "seconds": round(wall, 3), "throughput": len(texts) / wall}


def _raw_lane(conn: Any, kwargs: dict[str, Any], texts: dict[str, list[str]]) -> None:
    """One raw lane (a process, like one inference worker): load the models, then run its share
    (or its first `limit` texts)."""
    raw = Raw(**kwargs)
    conn.send("ready")
    while (cmd := conn.recv()) is not None:
        endpoint, batch, extra, limit = cmd
        conn.send(getattr(raw, endpoint)(texts[endpoint][:limit], batch, extra))


class RawLanes:
    """`lanes` processes side by side, each with its own sessions of `threads` threads: the server's
    inference workers without the HTTP process, the queues or the batching loop. Each takes every
    lanes-th text; the throughput is all texts over the wall time until the last lane is done."""

    def __init__(self, lanes: int, kwargs: dict[str, Any], texts: dict[str, list[str]]):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.lanes, self.conns, self.procs = lanes, [], []
        for k in range(lanes):
            parent, child = ctx.Pipe()
            share = {ep: t[k::lanes] for ep, t in texts.items()}
            proc = ctx.Process(target=_raw_lane, args=(child, kwargs, share), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for c in self.conns:
            if c.recv() != "ready":
                raise RuntimeError("a raw lane failed to start")

    def run(self, endpoint: str, batch: int, extra: Any, limit: int | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        for c in self.conns:
            c.send((endpoint, batch, extra, limit))
        parts = [c.recv() for c in self.conns]
        wall = time.perf_counter() - t0
        n = sum(r["requests"] for r in parts)
        return {"requests": n, "batch": batch, "lanes": self.lanes, "seconds": round(wall, 3), "throughput": n / wall}

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.send(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (its latencies with it), plus every round's throughput."""
    ranked = sorted(runs, key=lambda r: r["throughput"])
    out = dict(ranked[(len(ranked) - 1) // 2])
    out["rounds_throughput"] = [round(r["throughput"], 2) for r in runs]
    return out


# ---------------------------------------------------------------------------------------------
# Report


def summarize(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for ep in ("sentiment", "translate"):
        b, u, r, r1 = (res[k].get(ep) for k in ("batched", "unbatched", "raw", "raw_single"))
        if not (b and u and r and r1):
            continue
        rows.append(
            {
                "endpoint": ep,
                "concurrency": b["concurrency"],
                "requests": b["requests"],
                "batched_rps": b["throughput"],
                "unbatched_rps": u["throughput"],
                "raw_rps": r["throughput"],
                "raw_single_rps": r1["throughput"],
                "raw_batch": r["batch"],
                "batched_p50_ms": b["p50_ms"],
                "batched_p99_ms": b["p99_ms"],
                "unbatched_p50_ms": u["p50_ms"],
                "unbatched_p99_ms": u["p99_ms"],
                "mean_batch": b["mean_batch_requests"],
                "batched_cpu_ms": b["server_cpu_ms_per_request"],
                "unbatched_cpu_ms": u["server_cpu_ms_per_request"],
                "batching_speedup": b["throughput"] / u["throughput"],
                "raw_batching_speedup": r["throughput"] / r1["throughput"],
                "served_over_raw": b["throughput"] / r["throughput"],
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| endpoint | conc. | batched req/s | batch size 1 req/s | **batching ×** | raw req/s | **served / raw** | "
        "p50 / p99 ms batched | p50 / p99 ms batch size 1 | mean batch | raw batching × (ceiling) | "
        "server CPU ms/req batched / size 1 |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ok_b = "✓" if r["batching_speedup"] >= TARGET_BATCHING else "✗"
        ok_r = "✓" if r["served_over_raw"] >= TARGET_RAW else "✗"
        lines.append(
            f"| {r['endpoint']} | {r['concurrency']} | {r['batched_rps']:.1f} | {r['unbatched_rps']:.1f} | "
            f"**{r['batching_speedup']:.2f}×** {ok_b} | {r['raw_rps']:.1f} | **{r['served_over_raw']:.0%}** {ok_r} | "
            f"{r['batched_p50_ms']:.0f} / {r['batched_p99_ms']:.0f} | "
            f"{r['unbatched_p50_ms']:.0f} / {r['unbatched_p99_ms']:.0f} | {r['mean_batch']:.1f} | "
            f"{r['raw_batching_speedup']:.2f}× ({r['raw_batch']} vs 1) | "
            f"{r['batched_cpu_ms']:.2f} / {r['unbatched_cpu_ms']:.2f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 2, figsize=(12, 4.4 * len(rows)), squeeze=False)
    for k, r in enumerate(rows):
        ax = axes[k][0]
        names = ["raw, batches\n(no HTTP)", "served\nbatched", "raw, one\nper call", "served\nbatch size 1"]
        vals = [r["raw_rps"], r["batched_rps"], r["raw_single_rps"], r["unbatched_rps"]]
        bars = ax.bar(names, vals, color=["#999999", "#2b6cb0", "#cccccc", "#c05621"])
        ax.bar_label(bars, fmt="%.0f")
        ax.set_title(
            f"{r['endpoint']}: throughput (c={r['concurrency']})\n"
            f"batching {r['batching_speedup']:.1f}×, served {r['served_over_raw']:.0%} of raw"
        )
        ax.set_ylabel("requests / s")
        ax.margins(y=0.15)
        ax = axes[k][1]
        x = [0, 1]
        ax.bar([i - 0.2 for i in x], [r["batched_p50_ms"], r["unbatched_p50_ms"]], 0.4, label="p50", color="#2b6cb0")
        ax.bar([i + 0.2 for i in x], [r["batched_p99_ms"], r["unbatched_p99_ms"]], 0.4, label="p99", color="#90cdf4")
        ax.set_xticks(x, ["batched", "batch size 1"])
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{r['endpoint']}: latency")
        ax.legend()
    fig.suptitle(title, fontsize=8, wrap=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models-dir", type=Path, default=ROOT / "models")
    p.add_argument("--data-dir", type=Path, default=None, help="default: ../shared/data if present, else ./data")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--reviews", type=int, default=1024, help="sentiment requests per measurement")
    p.add_argument("--sentences", type=int, default=256, help="translation requests per measurement")
    p.add_argument("--sentiment-concurrency", type=int, default=32)
    p.add_argument("--translate-concurrency", type=int, default=16)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--pair", default=None, help="translation pair (default: the first the server offers)")
    p.add_argument("--warmup", type=int, default=64, help="requests sent before each measurement")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra flag for both servers, e.g. --server-arg=--workers=2 (repeatable)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows each median")
    p.add_argument("--quick", action="store_true", help="a short smoke run (256 reviews, 128 sentences, 1 round)")
    a = p.parse_args(argv)
    if a.quick:
        a.reviews, a.sentences, a.warmup, a.rounds = 256, 128, 32, 1
    data_dir = a.data_dir or default_data_dir()
    models_dir = a.models_dir.resolve()
    if not (models_dir / "sentiment").is_dir() and not any(models_dir.glob("translate-*")):
        print(f"no model artifacts under {models_dir}; train and export them first (see README)", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)

    pairs = sorted(
        p.name.removeprefix("translate-") for p in models_dir.glob("translate-*") if (p / "metadata.json").is_file()
    )
    pair = a.pair or (pairs[0] if pairs else None)
    has_sent = (models_dir / "sentiment" / "metadata.json").is_file()
    reviews = imdb_reviews(data_dir, a.reviews, a.seed) if has_sent else []
    sentences = multi30k_sentences(data_dir, pair.split("-")[0], a.sentences) if pair else []
    sent_bodies = [json.dumps({"texts": [t]}).encode() for t in reviews]
    trans_bodies = (
        [
            json.dumps(
                {
                    "texts": [t],
                    "source_lang": pair.split("-")[0],
                    "target_lang": pair.split("-")[1],
                    "beam_size": a.beam,
                }
            ).encode()
            for t in sentences
        ]
        if pair
        else []
    )
    extra = [*("--device", a.device), *a.server_arg]
    print(
        f"{len(reviews)} IMDB test reviews (concurrency {a.sentiment_concurrency}), {len(sentences)} Multi30k test "
        f"sentences {pair} (concurrency {a.translate_concurrency}, beam {a.beam}); models {models_dir}",
        flush=True,
    )

    res: dict[str, Any] = {}
    runs: dict[str, dict[str, list]] = {
        k: {"sentiment": [], "translate": []} for k in ("batched", "unbatched", "raw", "raw_single")
    }
    with tempfile.TemporaryDirectory(prefix="rnnserve-bench-") as logs:
        servers = {"batched": extra, "unbatched": [*extra, "--max-batch-size", "1"]}
        procs: dict[str, ServerProcess] = {}
        raw: RawLanes | None = None
        try:
            for name, args in servers.items():
                print(f"[{name}] starting python -m service {' '.join(args)}", flush=True)
                procs[name] = ServerProcess(models_dir, args, Path(logs), name)
            for name, srv in procs.items():
                srv.wait_healthy()
                info = json.loads(srv.get("/info")[1])
                res[name] = {
                    "server_args": servers[name],
                    "info": {k: info[k] for k in ("runtime", "batching")},
                    "models": [
                        {k: m.get(k) for k in ("name", "version", "providers", "pair", "task", "file", "precision")}
                        for m in info["models"]
                    ],
                }
            info = res["batched"]["info"]
            threads = int(info["runtime"]["threads_per_session"])
            providers = {p for m in res["batched"]["models"] for p in (m["providers"] or [])}
            device = "cuda" if "CUDAExecutionProvider" in providers else "cpu"
            max_batch = int(info["batching"]["max_batch_size"])
            b_sent, b_trans = min(a.sentiment_concurrency, max_batch), min(a.translate_concurrency, max_batch)
            budget = int(info["batching"].get("sentiment_token_budget", 16384))
            sent_file = next((m["file"] for m in res["batched"]["models"] if m.get("task") == "sentiment"), None)
            trans_precision = next((m["precision"] for m in res["batched"]["models"] if m.get("pair") == pair), "fp32")
            lanes = int(info["runtime"].get("workers_per_family", 1))
            # Per lane, the batch the server's workers can form: the callers spread over the workers.
            b_sent = min(-(-a.sentiment_concurrency // lanes), max_batch)
            b_trans = min(-(-a.translate_concurrency // lanes), max_batch)
            raw = RawLanes(
                lanes,
                {
                    "models_dir": models_dir,
                    "threads": threads,
                    "device": device,
                    "pair": pair,
                    "has_sentiment": has_sent,
                    "sentiment_file": sent_file,
                    "translate_precision": trans_precision,
                },
                {"sentiment": reviews, "translate": sentences},
            )

            raw_batch = {"sentiment": b_sent, "translate": b_trans}
            raw_extra = {"sentiment": budget, "translate": a.beam}  # token budget, beam size

            def raw_run(endpoint: str, batched: bool, limit: int | None = None) -> dict[str, Any]:
                return raw.run(endpoint, raw_batch[endpoint] if batched else 1, raw_extra[endpoint], limit)

            # Warm up everything once, then interleave the measurements round by round, so that a
            # change in the machine's load (training runs, other jobs) hits every configuration alike.
            for srv in procs.values():
                if sent_bodies:
                    asyncio.run(_load(srv.port, "/v1/sentiment", sent_bodies[: a.warmup], a.sentiment_concurrency))
                if trans_bodies:
                    asyncio.run(_load(srv.port, "/v1/translate", trans_bodies[: a.warmup], a.translate_concurrency))
            for endpoint, texts in (("sentiment", reviews), ("translate", sentences)):
                if texts:
                    raw_run(endpoint, True, limit=max(1, a.warmup // lanes))
            for rnd in range(1, a.rounds + 1):
                for endpoint, bodies, conc in (
                    ("sentiment", sent_bodies, a.sentiment_concurrency),
                    ("translate", trans_bodies, a.translate_concurrency),
                ):
                    if not bodies:
                        continue
                    for name, srv in procs.items():
                        r = measure_served(srv, endpoint, bodies, conc)
                        runs[name][endpoint].append(r)
                        print(
                            f"[round {rnd}] {name:9s} {endpoint:9s} {r['throughput']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                            f"p99 {r['p99_ms']:7.1f} ms  mean batch {r['mean_batch_requests']:.1f}  "
                            f"server CPU {r['server_cpu_ms_per_request']:.2f} ms/req",
                            flush=True,
                        )
                    for name, batched in (("raw", True), ("raw_single", False)):
                        r = raw_run(endpoint, batched)
                        runs[name][endpoint].append(r)
                        print(
                            f"[round {rnd}] {name:9s} {endpoint:9s} {r['throughput']:8.1f} texts/s (no HTTP: {lanes} "
                            f"process(es) side by side, batches of {r['batch']}, {threads} thread(s) each)",
                            flush=True,
                        )
        finally:
            for srv in procs.values():
                srv.stop()
            if raw is not None:
                raw.close()
    res["raw"] = {
        "lanes": lanes,
        "threads": threads,
        "device": device,
        "sentiment_token_budget": budget,
        "sentiment_file": sent_file,
        "translate_precision": trans_precision,
    }
    res["raw_single"] = {"lanes": lanes, "threads": threads, "device": device}
    for name in runs:
        for endpoint, rs in runs[name].items():
            if rs:
                res[name][endpoint] = median_run(rs)
        if name in ("batched", "unbatched"):
            for endpoint in ("sentiment", "translate"):
                if endpoint in res[name]:
                    res[name][endpoint]["concurrency"] = (
                        a.sentiment_concurrency if endpoint == "sentiment" else a.translate_concurrency
                    )

    rows = summarize(res)
    machine = {
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "models_dir": str(models_dir),
        "data_dir": str(data_dir),
        "targets": {"batching_speedup": TARGET_BATCHING, "served_over_raw": TARGET_RAW},
        "summary": rows,
        "details": res,
    }
    (a.out / "serving.json").write_text(json.dumps(report, indent=2) + "\n")
    title = (
        f"rnn-serve on {machine['cpus']} CPUs (load {machine['load_avg_1m']:.1f}), {lanes} worker(s) per family, "
        f"{threads} thread(s)/session, "
        f"max batch {max_batch}; models: " + ", ".join(f"{m['name']} {m['version']}" for m in res["batched"]["models"])
    )
    try:
        plot(rows, a.out / "serving.png", title)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    print()
    print(table(rows))
    print(
        f"\ntargets: batching >= {TARGET_BATCHING:.0f}x, served >= {TARGET_RAW:.0%} of raw; "
        f"{threads} ONNX Runtime thread(s) per session, max batch {max_batch}; load average {machine['load_avg_1m']:.1f}"
    )
    print(f"wrote {a.out / 'serving.json'} and {a.out / 'serving.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
