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
configuration alike; each round starts with the next server in turn, so that no configuration is
always the one measured first (right after the raw lanes have had both cores) or last.

Two more servers run beside them, measured in the same rounds: the batched server with
`--scheduling fifo` (first come, first served, the scheduling before issue 22), so that fair
scheduling's cost with one client shows as a ratio (target: throughput and p99 within 5%); and,
with --baseline-models DIR, the batched server over other artifacts (say, the models of an earlier
commit: `git archive <rev> models | tar -x -C /tmp/old`), so that a model change's serving cost
shows as a ratio (target: translation throughput at least 75% of the baseline's, issue 21).

Targets: batching >= 3x on both endpoints, served >= 70% of raw. Prints a table and writes
`serving.json` and `serving.png` under --out (default bench/results/).

The load goes through the load engine every load test uses (loadgen.engine: a closed loop that
sends each body once) over its raw transport (--transport, default raw: keep-alive HTTP/1.1 on
asyncio streams), so that the client takes as little as possible of the CPU the server it
measures runs on; the client's own CPU per request is reported beside the server's. Every
request is checked for a 200 with a result.

    python -m bench.serving --quick          # make bench BENCH_FLAGS=--quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.inputs import default_data_dir, imdb_reviews, multi30k_sentences
from bench.protocols import PROTOCOLS, requests
from bench.raw import RawLanes
from bench.server import ROOT, ServerProcess
from bench.serving_report import (
    TARGET_BATCHING,
    TARGET_PROTOCOL,
    TARGET_RAW,
    comparison_rows,
    comparison_table,
    plot,
    plot_protocols,
    protocol_rows,
    protocol_table,
    summarize,
    table,
)
from loadgen.engine import Level, Request, run_level
from loadgen.stats import endpoint_totals, percentile, server_view
from loadgen.transport import TRANSPORTS, GrpcTransport, Transport, make_transport

# ---------------------------------------------------------------------------------------------
# Measurements


async def _totals(t: Transport, endpoint: str) -> dict[str, float]:
    return endpoint_totals((await t.request("GET", "/metrics")).body.decode(), endpoint)


def measure_served(
    srv: ServerProcess,
    endpoint: str,
    bodies: list[bytes] | list[Request],
    conc: int,
    transport: str = "raw",
    protocol: str = "v1",
) -> dict[str, Any]:
    """Send every request once, `conc` callers at a time (the load engine's closed loop, fresh
    connections); throughput, latency, and what the server and this client spent on it. `bodies`:
    /v1 JSON bodies, or requests in `protocol` (bench.protocols)."""
    reqs = [b if isinstance(b, Request) else Request(f"/v1/{endpoint}", b) for b in bodies]

    def load_transport() -> Transport:
        if protocol == "grpc":
            return GrpcTransport(srv.grpc_url)
        return make_transport(transport, srv.url, connections=conc)

    async def go() -> tuple[Level, float | None, float | None, dict[str, float] | None]:
        async with make_transport("raw", srv.url) as m, load_transport() as t:
            before = await _totals(m, endpoint)
            cpu0 = srv.cpu_seconds()
            level = await run_level(
                t,
                lambda i: reqs[i],
                Level("closed", concurrency=conc),
                warmup=0,
                duration=None,
                max_requests=len(reqs),
            )
            cpu1 = srv.cpu_seconds()
            view = server_view(before, await _totals(m, endpoint), level.elapsed)
        return level, cpu0, cpu1, view

    level, cpu0, cpu1, view = asyncio.run(go())
    failed = [s.status for s in level.samples if s.status != "200"]
    if failed or len(level.samples) != len(reqs):
        raise RuntimeError(
            f"{len(failed)} of {len(reqs)} {protocol} requests to {reqs[0].path} failed "
            f"({', '.join(sorted(set(failed)))}); {len(level.samples)} answered"
        )
    lat = [s.latency for s in level.samples]
    n = len(bodies)
    return {
        "requests": n,
        "seconds": round(level.elapsed, 3),
        "throughput": n / level.elapsed,
        "p50_ms": 1000 * percentile(lat, 50),
        "p99_ms": 1000 * percentile(lat, 99),
        "mean_ms": 1000 * sum(lat) / n,
        # CPU the server spent per request: unlike throughput, barely moved by other jobs on the machine.
        "server_cpu_ms_per_request": 1000 * (cpu1 - cpu0) / n
        if cpu0 is not None and cpu1 is not None
        else float("nan"),
        # and this client's: what the load generator took from the machine the server runs on
        "client_cpu_ms_per_request": 1000 * level.client_cpu / n,
        "mean_batch_requests": (view or {}).get("mean_batch_size", float("nan")),
        "concurrency": conc,
        "transport": "grpc" if protocol == "grpc" else transport,
        "protocol": protocol,
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median throughput (its latencies with it), plus every round's throughput."""
    ranked = sorted(runs, key=lambda r: r["throughput"])
    out = dict(ranked[(len(ranked) - 1) // 2])
    out["rounds_throughput"] = [round(r["throughput"], 2) for r in runs]
    return out


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.serving", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
    p.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="raw",
        help="the load engine's transport (default raw: the least client CPU; httpx to compare)",
    )
    p.add_argument(
        "--protocols",
        default=",".join(PROTOCOLS[1:]),
        help="protocols measured beside /v1 on the batched server, same load, same rounds "
        f"(comma-separated, from {', '.join(PROTOCOLS[1:])}; '' for none)",
    )
    p.add_argument(
        "--baseline-models",
        type=Path,
        default=None,
        help="also serve these artifacts (batched, same settings) and report throughput and p99 against them",
    )
    p.add_argument("--no-fifo", action="store_true", help="skip the --scheduling fifo server")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows each median")
    p.add_argument("--quick", action="store_true", help="a short smoke run (256 reviews, 128 sentences, 1 round)")
    a = p.parse_args(argv)
    protocols = [x for x in a.protocols.split(",") if x]
    if unknown := [x for x in protocols if x not in PROTOCOLS[1:]]:
        p.error(f"unknown protocol {unknown[0]!r}; choose from {', '.join(PROTOCOLS[1:])}")
    if a.quick:
        a.reviews, a.sentences, a.warmup, a.rounds = 256, 128, 32, 1
    data_dir = a.data_dir or default_data_dir()
    models_dir = a.models_dir.resolve()
    if not (models_dir / "sentiment").is_dir() and not any(models_dir.glob("translate-*")):
        print(f"no model artifacts under {models_dir}; train and export them first (see README)", file=sys.stderr)
        return 2
    baseline_dir = a.baseline_models.resolve() if a.baseline_models else None
    if baseline_dir and not (baseline_dir / "sentiment").is_dir() and not any(baseline_dir.glob("translate-*")):
        print(f"no model artifacts under --baseline-models {baseline_dir}", file=sys.stderr)
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
    # The same texts in each other protocol, for the batched server (bench.protocols).
    proto_reqs = {
        proto: {
            "sentiment": requests(proto, "sentiment", reviews, pair, a.beam),
            "translate": requests(proto, "translate", sentences, pair, a.beam) if pair else [],
        }
        for proto in protocols
    }
    extra = [*("--device", a.device), *a.server_arg]
    print(
        f"{len(reviews)} IMDB test reviews (concurrency {a.sentiment_concurrency}), {len(sentences)} Multi30k test "
        f"sentences {pair} (concurrency {a.translate_concurrency}, beam {a.beam}); models {models_dir}",
        flush=True,
    )

    res: dict[str, Any] = {}
    runs: dict[str, dict[str, list]] = {
        k: {"sentiment": [], "translate": []}
        for k in ("batched", "unbatched", "fifo", "baseline", "raw", "raw_single", *protocols)
    }
    with tempfile.TemporaryDirectory(prefix="rnnserve-bench-") as logs:
        servers = {"batched": extra, "unbatched": [*extra, "--max-batch-size", "1"]}
        if not a.no_fifo:
            servers["fifo"] = [*extra, "--scheduling", "fifo"]
        if baseline_dir:
            servers["baseline"] = extra
        server_models = {name: baseline_dir if name == "baseline" else models_dir for name in servers}
        procs: dict[str, ServerProcess] = {}
        raw: RawLanes | None = None
        try:
            for name, args in servers.items():
                print(f"[{name}] starting python -m service {' '.join(args)}", flush=True)
                procs[name] = ServerProcess(server_models[name], args, Path(logs), name)
            for name, srv in procs.items():
                srv.wait_healthy()
                info = srv.info()
                res[name] = {
                    "server_args": servers[name],
                    "models_dir": str(server_models[name]),
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
                    measure_served(srv, "sentiment", sent_bodies[: a.warmup], a.sentiment_concurrency, a.transport)
                if trans_bodies:
                    measure_served(srv, "translate", trans_bodies[: a.warmup], a.translate_concurrency, a.transport)
            for proto, by_endpoint in proto_reqs.items():
                for endpoint, reqs in by_endpoint.items():
                    conc = a.sentiment_concurrency if endpoint == "sentiment" else a.translate_concurrency
                    if reqs:
                        measure_served(procs["batched"], endpoint, reqs[: a.warmup], conc, a.transport, proto)
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
                    # each round starts with the next server, so that none is always measured first
                    # (right after the previous endpoint's raw lanes) or always last
                    names = list(procs)
                    names = names[(rnd - 1) % len(names) :] + names[: (rnd - 1) % len(names)]
                    for name in names:
                        srv = procs[name]
                        r = measure_served(srv, endpoint, bodies, conc, a.transport)
                        runs[name][endpoint].append(r)
                        print(
                            f"[round {rnd}] {name:9s} {endpoint:9s} {r['throughput']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                            f"p99 {r['p99_ms']:7.1f} ms  mean batch {r['mean_batch_requests']:.1f}  "
                            f"server CPU {r['server_cpu_ms_per_request']:.2f} ms/req  "
                            f"client CPU {r['client_cpu_ms_per_request']:.2f} ms/req",
                            flush=True,
                        )
                    for proto in protocols:
                        reqs = proto_reqs[proto][endpoint]
                        r = measure_served(procs["batched"], endpoint, reqs, conc, a.transport, proto)
                        runs[proto][endpoint].append(r)
                        print(
                            f"[round {rnd}] {proto:9s} {endpoint:9s} {r['throughput']:8.1f} req/s  p50 {r['p50_ms']:7.1f} ms  "
                            f"p99 {r['p99_ms']:7.1f} ms  mean batch {r['mean_batch_requests']:.1f}  "
                            f"server CPU {r['server_cpu_ms_per_request']:.2f} ms/req  "
                            f"client CPU {r['client_cpu_ms_per_request']:.2f} ms/req (batched server)",
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
    for proto in protocols:
        res[proto] = {}
    for name in runs:
        for endpoint, rs in runs[name].items():
            if rs:
                res[name][endpoint] = median_run(rs)
        if name in ("batched", "unbatched", "fifo", "baseline") and name in res:  # fifo, baseline: if served
            for endpoint in ("sentiment", "translate"):
                if endpoint in res[name]:
                    res[name][endpoint]["concurrency"] = (
                        a.sentiment_concurrency if endpoint == "sentiment" else a.translate_concurrency
                    )

    rows = summarize(res)
    prows = protocol_rows(res, protocols)
    crows = comparison_rows(res)
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
        "baseline_models_dir": str(baseline_dir) if baseline_dir else None,
        "transport": a.transport,
        "data_dir": str(data_dir),
        "targets": {"batching_speedup": TARGET_BATCHING, "served_over_raw": TARGET_RAW},
        "summary": rows,
        "protocols": prows,
        "comparisons": crows,
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
        if prows:
            plot_protocols(prows, a.out / "protocols.png", title)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    print()
    print(table(rows))
    if prows:
        print()
        print(protocol_table(prows))
        print(f"\ntarget: every protocol within {TARGET_PROTOCOL:.0%} of /v1's throughput (same server, same load)")
    if crows:
        print()
        print(comparison_table(crows))
    print(
        f"\ntargets: batching >= {TARGET_BATCHING:.0f}x, served >= {TARGET_RAW:.0%} of raw; "
        f"{threads} ONNX Runtime thread(s) per session, max batch {max_batch}; load average {machine['load_avg_1m']:.1f}"
    )
    print(
        f"load generator (loadgen, {a.transport} transport), CPU per request batched: "
        + ", ".join(f"{r['endpoint']} {r['batched_client_cpu_ms']:.2f} ms" for r in rows)
    )
    print(f"wrote {a.out / 'serving.json'} and {a.out / 'serving.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
