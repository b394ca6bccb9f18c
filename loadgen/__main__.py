"""Load-test a running rnn-serve with real data; write a JSON report and plots beside it.

    python -m loadgen --url http://127.0.0.1:8000 --endpoint sentiment \\
        --concurrency 8 --duration 30 --warmup 5 --out runs/load/sentiment.json --slo-p99-ms 250
    python -m loadgen --endpoint translate --rate 20 --duration 30 --out load.json   # open loop
    python -m loadgen --endpoint sentiment --sweep 1,2,4,8,16 --duration 15 --out sweep.json

Closed loop (--concurrency N, or a --sweep of several N): N clients each send their next request
as soon as the previous one is answered; this measures capacity. Open loop (--rate R req/s, or a
comma list of rates): requests arrive on a fixed schedule whether or not earlier ones are done;
latency is counted from each request's scheduled time, so a server falling behind shows as
latency instead of being hidden by a slower client (coordinated omission). --arrival poisson draws
exponential gaps at the same mean rate.

Request bodies are drawn (seeded) from the real datasets: IMDB test reviews for sentiment, Multi30k
validation sentences for translation (--data-dir, default ../shared/data when it exists, else
./data), or from --texts-file (one text a line, or JSON lines with a "text" field; .gz/.xz ok).

Warm-up requests (--warmup S) are sent but not measured. Latency percentiles are over successful
requests; every failure is counted by HTTP status (or timeout / connection / bad response /
dropped). The server's /metrics, read as each measured window opens and closes, add its side of
the window: mean batch size, queue wait and inference time per batch, and tokens/s. With
--slo-p99-ms the report gives a verdict (p99 within the bound and error rate at most
--slo-max-error-rate) and the exit status is 1 when any measured level misses it.

Requests go out through a minimal keep-alive HTTP/1.1 client for http URLs (--transport raw,
a fraction of httpx's client CPU, which matters when this client shares the server's machine)
and through httpx for https URLs (--transport httpx); see loadgen/transport.py.

Plots (latency CDF, latency over time, and throughput and p99 against the load level for sweeps)
need matplotlib (the dev/train extras); without it the report is written and plots are skipped.

The pieces, in the order a run uses them: data.py (texts), transport.py (HTTP), engine.py (load
levels), stats.py (percentiles, the server's /metrics), report.py (summaries, SLO verdict),
plots.py; client.py is the typed client for applications.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from loadgen.client import DEFAULT_URL, sentiment_request, translate_request
from loadgen.data import LoadTestError, dataset_file, default_data_dir, load_texts
from loadgen.engine import Level, Progress, Request, run_level
from loadgen.report import format_run, summarize, verdict
from loadgen.stats import Totals, endpoint_totals
from loadgen.transport import AUTO, TRANSPORTS, Transport, make_transport
from service import __version__

# ----------------------------------------------------------------------------- command line


def _floats(s: str) -> list[float]:
    try:
        vals = [float(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {s!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {s!r}")
    return vals


def _ints(s: str) -> list[int]:
    vals = _floats(s)
    if any(v != int(v) for v in vals):
        raise argparse.ArgumentTypeError(f"expected whole numbers, got {s!r}")
    return [int(v) for v in vals]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadgen", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", default=DEFAULT_URL, help=f"server base URL (default {DEFAULT_URL})")
    p.add_argument("--endpoint", choices=("sentiment", "translate"), required=True)
    load = p.add_mutually_exclusive_group()
    load.add_argument(
        "--concurrency", type=int, default=None, metavar="N", help="closed loop: N concurrent clients (default 8)"
    )
    load.add_argument(
        "--sweep", type=_ints, default=None, metavar="N1,N2,...", help="closed loop at each concurrency in turn"
    )
    load.add_argument(
        "--rate",
        type=_floats,
        default=None,
        metavar="R[,R2,...]",
        help="open loop at R requests/s (a comma list sweeps rates)",
    )
    p.add_argument("--arrival", choices=("constant", "poisson"), default="constant", help="open-loop arrival gaps")
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds per level (default 30)")
    p.add_argument("--warmup", type=float, default=5.0, help="unmeasured seconds before each level (default 5)")
    p.add_argument("--max-requests", type=int, default=None, help="stop a level after this many measured requests")
    p.add_argument(
        "--max-outstanding", type=int, default=512, help="open loop: requests in flight before new ones are dropped"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request before it counts as a timeout")
    p.add_argument("--out", type=Path, required=True, help="JSON report path; plots are written beside it")
    p.add_argument(
        "--texts-file", type=Path, default=None, help="texts to send (one a line, or JSON lines with 'text')"
    )
    p.add_argument("--data-dir", type=Path, default=None, help="dataset folder (default ../shared/data, else ./data)")
    p.add_argument("--texts-per-request", type=int, default=1)
    p.add_argument("--max-chars", type=int, default=None, help="skip texts longer than this")
    p.add_argument("--source-lang", default="en")
    p.add_argument("--target-lang", default="de")
    p.add_argument("--beam-size", type=int, default=None, help="translate: beam size (server default if unset)")
    p.add_argument("--api-key", default=None, help="sent as X-API-Key")
    p.add_argument(
        "--transport",
        choices=(AUTO, *TRANSPORTS),
        default=AUTO,
        help="raw (plain http, a fraction of httpx's client CPU), httpx (http or https), or auto "
        "(default: raw for http URLs, httpx for https)",
    )
    p.add_argument(
        "--wait-healthy", type=float, default=10.0, help="seconds to wait for /health 200 first (default 10)"
    )
    p.add_argument("--slo-p99-ms", type=float, default=None, help="SLO: p99 latency bound in milliseconds")
    p.add_argument("--slo-max-error-rate", type=float, default=0.01, help="SLO: largest failed fraction (default 0.01)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    args = p.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        p.error("--concurrency must be at least 1")
    if args.duration <= 0 or args.warmup < 0 or args.texts_per_request < 1:
        p.error("--duration must be > 0, --warmup >= 0 and --texts-per-request >= 1")
    if args.transport == AUTO:
        args.transport = "raw" if args.url.startswith("http://") else "httpx"
    if args.transport == "raw" and not args.url.startswith("http://"):
        p.error("--transport raw speaks plain http only: use --transport httpx for https")
    return args


async def get_ok(transport: Transport, path: str) -> bytes:
    """The body of GET path; ValueError unless the server answers 200."""
    reply = await transport.request("GET", path)
    if reply.status != 200:
        raise ValueError(f"GET {path} answered {reply.status}: {reply.body[:200].decode(errors='replace')}")
    return reply.body


async def wait_healthy(transport: Transport, timeout: float) -> None:
    """Until /health answers 200; TimeoutError after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline, interval = loop.time() + timeout, min(0.5, timeout / 4 + 0.01)
    while True:
        with contextlib.suppress(OSError):
            if (await transport.request("GET", "/health")).status == 200:
                return
        if loop.time() > deadline:
            raise TimeoutError(f"not healthy within {timeout:g} s")
        await asyncio.sleep(interval)


def levels_from(args: argparse.Namespace) -> list[Level]:
    if args.rate:
        return [Level("open", rate=r) for r in args.rate]
    return [Level("closed", concurrency=c) for c in (args.sweep or [args.concurrency or 8])]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    source = args.texts_file or dataset_file(args.endpoint, args.data_dir or default_data_dir(), args.source_lang)
    texts = load_texts(source, seed=args.seed, max_chars=args.max_chars)
    levels = levels_from(args)
    pool = max((lv.concurrency or args.max_outstanding) for lv in levels)
    rng = random.Random(args.seed)
    path = f"/v1/{args.endpoint}"

    def requests(_: int) -> Request:
        batch = [rng.choice(texts) for _ in range(args.texts_per_request)]
        if args.endpoint == "sentiment":
            req = sentiment_request(batch)
        else:
            req = translate_request(batch, args.target_lang, source_lang=args.source_lang, beam_size=args.beam_size)
        return Request(path, json.dumps(req.model_dump(mode="json", exclude_unset=True)).encode(), len(batch))

    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    async with make_transport(
        args.transport, args.url, api_key=args.api_key, timeout=args.timeout, connections=pool
    ) as transport:
        try:
            await wait_healthy(transport, args.wait_healthy)
            info = json.loads((await get_ok(transport, "/info")).decode())
        except (OSError, ValueError) as e:
            raise LoadTestError(f"{args.url} is not serving ({e})") from None

        async def snapshot() -> Totals:
            return endpoint_totals((await get_ok(transport, "/metrics")).decode(), args.endpoint)

        progress = Progress(not args.quiet)
        for lv in levels:
            await run_level(
                transport,
                requests,
                lv,
                warmup=args.warmup,
                duration=args.duration,
                max_requests=args.max_requests,
                max_outstanding=args.max_outstanding,
                arrival=args.arrival,
                seed=args.seed,
                progress=progress,
                snapshot=snapshot,
            )

    runs = [summarize(lv, args.slo_p99_ms, args.slo_max_error_rate, args.warmup) for lv in levels]
    report: dict[str, Any] = {
        "tool": "python -m loadgen",
        "version": __version__,
        "started_at": started_at,
        "target": {"url": args.url, "endpoint": args.endpoint},
        "config": {
            "levels": [lv.label for lv in levels],
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "max_requests": args.max_requests,
            "arrival": args.arrival if args.rate else None,
            "texts_per_request": args.texts_per_request,
            "timeout_s": args.timeout,
            "transport": args.transport,
            "seed": args.seed,
            "texts": {
                "source": str(source),
                "sampled": len(texts),
                "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
            },
            **(
                {"target_lang": args.target_lang, "source_lang": args.source_lang, "beam_size": args.beam_size}
                if args.endpoint == "translate"
                else {}
            ),
        },
        "server": {
            "service": info.get("service"),
            "runtime": info.get("runtime"),
            "batching": info.get("batching"),
            "models": [
                {k: m.get(k) for k in ("name", "version", "pair", "providers", "workers") if k in m}
                for m in info.get("models", [])
            ],
        },
        "runs": runs,
        "verdict": verdict(runs, args.slo_p99_ms),
        "plots": {},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.no_plots:
        try:
            from loadgen.plots import write_plots  # matplotlib: an extra, imported only when plotting

            report["plots"] = write_plots(levels, runs, args.out, args.slo_p99_ms)
        except ImportError:
            report["plots_skipped"] = "matplotlib is not installed (pip install matplotlib, or the dev extra)"
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = asyncio.run(run(args))
    except (LoadTestError, OSError) as e:
        print(f"loadtest: {e}", file=sys.stderr)
        return 2
    print(f"{report['target']['endpoint']} at {report['target']['url']}")
    for r in report["runs"]:
        print(format_run(r, args.transport))
    v = report["verdict"]
    if v is not None:
        best = v["best_within_slo"]
        print(
            f"SLO p99 <= {v['slo_p99_ms']:g} ms: {'PASS' if v['pass'] else 'FAIL'}"
            + (f"; best within SLO: {best['label']} at {best['throughput_rps']:.1f} req/s" if best else "")
        )
    print(f"report: {args.out}" + "".join(f"\nplot: {args.out.parent / f}" for f in report["plots"].values()))
    if "plots_skipped" in report:
        print(f"plots skipped: {report['plots_skipped']}")
    return 1 if v is not None and not v["pass"] else 0


if __name__ == "__main__":
    sys.exit(main())
