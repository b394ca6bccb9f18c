"""Load-test a running rnn-serve with real data; write a JSON report and plots beside it.

    python -m service.loadtest --url http://127.0.0.1:8000 --endpoint sentiment \\
        --concurrency 8 --duration 30 --warmup 5 --out runs/load/sentiment.json --slo-p99-ms 250
    python -m service.loadtest --endpoint translate --rate 20 --duration 30 --out load.json   # open loop
    python -m service.loadtest --endpoint sentiment --sweep 1,2,4,8,16 --duration 15 --out sweep.json

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
requests; every failure is counted by HTTP status (or timeout / connection / dropped). The
server's /metrics, read as each measured window opens and closes, add its side of the window:
mean batch size, queue wait and inference time per batch, and tokens/s. With
--slo-p99-ms the report gives a verdict (p99 within the bound and error rate at most
--slo-max-error-rate) and the exit status is 1 when any measured level misses it.

Plots (latency CDF, latency over time, and throughput and p99 against the load level for sweeps)
need matplotlib (the dev/train extras); without it the report is written and plots are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import lzma
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np

from service import __version__
from service.client import DEFAULT_URL, APIError, AsyncClient
from service.settings import PROJECT_ROOT

PERCENTILES = (50, 90, 95, 99)


class LoadTestError(RuntimeError):
    """The load test cannot run (no data, server not serving): exit status 2."""


# ----------------------------------------------------------------------------- request bodies


def default_data_dir() -> Path:
    shared = PROJECT_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else PROJECT_ROOT / "data"


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _lines(path: Path) -> Iterator[str]:
    """Non-empty texts of a file: JSON lines with a "text" field, or plain lines."""
    with _open_text(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError, KeyError, TypeError):
                    line = str(json.loads(line)["text"])
            yield line


def _sample(texts: Iterator[str], k: int, rng: random.Random) -> list[str]:
    """Reservoir sample: k texts from a stream of unknown length (IMDB files are sorted by label)."""
    out: list[str] = []
    for i, t in enumerate(texts):
        if i < k:
            out.append(t)
        elif (j := rng.randrange(i + 1)) < k:
            out[j] = t
    return out


def dataset_file(endpoint: str, data_dir: Path, source_lang: str = "en") -> Path:
    if endpoint == "sentiment":
        candidates = [data_dir / "imdb" / f"imdb_{s}.jsonl.xz" for s in ("test", "train")]
    else:
        candidates = [data_dir / "multi30k" / f"{s}.{source_lang}.gz" for s in ("val", "test_2016_flickr", "train")]
    for c in candidates:
        if c.is_file():
            return c
    raise LoadTestError(
        f"no {endpoint} data under {data_dir} (looked for {', '.join(c.name for c in candidates)}); "
        "pass --data-dir or --texts-file"
    )


def load_texts(path: Path, *, limit: int = 2000, seed: int = 0, max_chars: int | None = None) -> list[str]:
    """Texts to send: a seeded sample of at most `limit` texts of `path` (see `_lines`)."""
    texts = _sample((t for t in _lines(path) if max_chars is None or len(t) <= max_chars), limit, random.Random(seed))
    if not texts:
        raise LoadTestError(f"{path} holds no usable text")
    return texts


# ----------------------------------------------------------------------------- running load


@dataclass
class Sample:
    start: float  # seconds since the measured window opened (scheduled time in open loop)
    latency: float  # seconds
    status: str  # "200", "429", ..., "timeout", "connection", "dropped", "error"
    texts: int


@dataclass
class Level:
    mode: str  # "closed" or "open"
    concurrency: int | None = None
    rate: float | None = None
    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0  # measured window: first send to last answer
    server: dict[str, float] | None = None  # what the server's /metrics say about the window
    client_cpu: float = 0.0  # CPU seconds this process used over the level (a busy client skews latency)

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" if self.mode == "closed" else f"{self.rate:g} req/s"


Call = Callable[[], Awaitable[int]]  # sends one request; returns the number of texts in it
Totals = dict[str, float]  # series name -> value, for one endpoint, from /metrics
HISTOGRAMS = {  # report key -> histogram in service/metrics.py (mean over the window = d(sum) / d(count))
    "mean_request_ms": "rnnserve_request_duration_seconds",
    "mean_batch_size": "rnnserve_batch_size_requests",
    "mean_texts_per_batch": "rnnserve_batch_size_texts",
    "mean_queue_wait_ms": "rnnserve_queue_wait_seconds",
    "mean_inference_ms": "rnnserve_inference_duration_seconds",
}


def endpoint_totals(exposition: str, endpoint: str) -> Totals:
    """Histogram sums and counts, and token counters, of one endpoint in a /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Totals = {}
    for fam in text_string_to_metric_families(exposition):
        for smp in fam.samples:
            if smp.labels.get("endpoint") != endpoint:
                continue
            if smp.name.endswith(("_sum", "_count")):
                out[smp.name] = out.get(smp.name, 0.0) + smp.value
            elif smp.name == "rnnserve_tokens_total":
                key = f"tokens_{smp.labels.get('kind', 'all')}"
                out[key] = out.get(key, 0.0) + smp.value
    return out


def server_view(before: Totals, after: Totals, elapsed: float) -> dict[str, float] | None:
    """The server's side of a measured window: batching, queue wait, inference time, tokens/s."""
    d = {k: after[k] - before.get(k, 0.0) for k in after}
    out: dict[str, float] = {}
    for key, name in HISTOGRAMS.items():
        if d.get(f"{name}_count", 0) > 0:
            mean = d[f"{name}_sum"] / d[f"{name}_count"]
            out[key] = round(mean * 1000 if key.endswith("_ms") else mean, 2)
    for k, v in d.items():
        if k.startswith("tokens_") and elapsed > 0:
            out[f"{k}_per_s"] = round(v / elapsed, 1)
    return out or None


async def _timed(call: Call, t_ref: float, t_sched: float | None = None) -> Sample:
    """Run one request; latency from t_sched (open loop) or from the actual send (closed loop)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() if t_sched is None else t_sched
    n = 0
    try:
        n = await call()
        status = "200"
    except APIError as e:
        status = str(e.status)
    except httpx.TimeoutException:
        status = "timeout"
    except httpx.TransportError:
        status = "connection"
    except Exception:  # the report counts it; the run goes on
        status = "error"
    return Sample(t0 - t_ref, loop.time() - t0, status, n)


class Progress:
    """One live status line on stderr (rewritten in place on a terminal, every 5 s otherwise)."""

    def __init__(self, enabled: bool, stream: IO[str] = sys.stderr):
        self.enabled, self.stream = enabled, stream
        self.tty = enabled and stream.isatty()
        self._last = 0.0

    def update(self, level: Level, phase: str, elapsed: float, total: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self.tty and now - self._last < 5:
            return
        self._last = now
        ok = [s.latency for s in level.samples if s.status == "200"]
        errors = len(level.samples) - len(ok)
        recent = sum(1 for s in level.samples if s.start >= elapsed - 1 and s.status == "200")
        p99 = f"{np.percentile(ok, 99) * 1000:.0f} ms" if ok else "-"
        line = (
            f"{level.label:>12} {phase:<7} {elapsed:5.1f}/{total:.0f}s  done {len(level.samples):6d}  "
            f"{recent:4d} req/s  p99 {p99:>8}  errors {errors}"
        )
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


async def run_level(
    call: Call,
    level: Level,
    *,
    warmup: float,
    duration: float,
    max_requests: int | None = None,
    max_outstanding: int = 512,
    arrival: str = "constant",
    seed: int = 0,
    progress: Progress | None = None,
    snapshot: Callable[[], Awaitable[Totals]] | None = None,
) -> Level:
    """Drive one load level: `warmup` seconds unmeasured, then `duration` seconds measured (or
    until `max_requests` measured requests were sent), then wait for the answers in flight.
    `snapshot`, read when measuring starts and after the last answer, gives `level.server`."""
    loop = asyncio.get_running_loop()
    t_begin = loop.time()
    t_measure = t_begin + warmup
    t_end = t_measure + duration
    sent = 0  # measured requests sent
    tasks: set[asyncio.Task] = set()

    def keep(s: Sample) -> None:
        if s.start >= 0:
            level.samples.append(s)

    def more() -> bool:
        return loop.time() < t_end and (max_requests is None or sent < max_requests)

    async def client_loop() -> None:
        nonlocal sent
        while more():
            sent += loop.time() >= t_measure
            keep(await _timed(call, t_measure))

    async def arrivals() -> None:
        nonlocal sent
        rng = random.Random(seed)
        assert level.rate is not None
        t_next = t_begin
        while True:
            delay = t_next - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not (t_next < t_end and (max_requests is None or sent < max_requests)):
                return
            sent += t_next >= t_measure
            if len(tasks) >= max_outstanding:  # the client itself is saturated: count it, do not queue it
                keep(Sample(t_next - t_measure, 0.0, "dropped", 0))
            else:
                task = asyncio.create_task(_timed(call, t_measure, t_next))
                task.add_done_callback(lambda t: (tasks.discard(t), keep(t.result())))
                tasks.add(task)
            t_next += rng.expovariate(level.rate) if arrival == "poisson" else 1.0 / level.rate

    async def report() -> None:
        while True:
            now = loop.time()
            phase = "warm-up" if now < t_measure else "measure"
            progress.update(
                level,
                phase,
                now - (t_begin if now < t_measure else t_measure),  # type: ignore[union-attr]
                warmup if now < t_measure else duration,
            )
            await asyncio.sleep(0.5)

    async def at_measure() -> Totals:
        await asyncio.sleep(max(0.0, t_measure - loop.time()))
        return await snapshot()  # type: ignore[misc]

    before = asyncio.create_task(at_measure()) if snapshot else None
    cpu0 = time.process_time()
    reporter = asyncio.create_task(report()) if progress and progress.enabled else None
    try:
        if level.mode == "closed":
            assert level.concurrency is not None
            await asyncio.gather(*(client_loop() for _ in range(level.concurrency)))
        else:
            await arrivals()
            while tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
    finally:
        if reporter:
            reporter.cancel()
            progress.done()  # type: ignore[union-attr]
    ends = [s.start + s.latency for s in level.samples if s.status != "dropped"]
    level.elapsed = max(ends) if ends else 0.0
    level.client_cpu = time.process_time() - cpu0
    if before is not None and snapshot is not None:
        try:
            level.server = server_view(await before, await snapshot(), level.elapsed)
        except (httpx.HTTPError, APIError, ValueError):  # /metrics is a bonus, not a condition
            level.server = None
    return level


# ----------------------------------------------------------------------------- the report


def latency_summary(latencies_s: list[float]) -> dict[str, float] | None:
    if not latencies_s:
        return None
    a = np.asarray(latencies_s) * 1000
    out = {"min": float(a.min()), "mean": float(a.mean())}
    out |= {f"p{p}": float(np.percentile(a, p)) for p in PERCENTILES}
    out["max"] = float(a.max())
    return {k: round(v, 2) for k, v in out.items()}


def summarize(
    level: Level, slo_p99_ms: float | None, slo_max_error_rate: float, warmup_s: float = 0.0
) -> dict[str, Any]:
    ok = [s for s in level.samples if s.status == "200"]
    n = len(level.samples)
    errors = Counter(s.status for s in level.samples if s.status != "200")
    elapsed = level.elapsed or float("nan")
    lat = latency_summary([s.latency for s in ok])
    out: dict[str, Any] = {
        "mode": level.mode,
        "concurrency": level.concurrency,
        "rate": level.rate,
        "label": level.label,
        "duration_s": round(level.elapsed, 3),
        "requests": n,
        "ok": len(ok),
        "errors": dict(sorted(errors.items())),
        "error_rate": round(1 - len(ok) / n, 4) if n else None,
        "throughput_rps": round(len(ok) / elapsed, 2) if ok else 0.0,
        "texts_per_s": round(sum(s.texts for s in ok) / elapsed, 2) if ok else 0.0,
        "latency_ms": lat,
        "server": level.server,
        # CPU share this client used over the level (warm-up included); near 1.0 the client, not the
        # server, may be what limits throughput and inflates latency
        "client_cpu_share": round(level.client_cpu / (warmup_s + level.elapsed), 2) if level.elapsed else None,
    }
    if slo_p99_ms is not None:
        reasons = []
        if lat is None:
            reasons.append("no successful request")
        elif lat["p99"] > slo_p99_ms:
            reasons.append(f"p99 {lat['p99']:.1f} ms > {slo_p99_ms:g} ms")
        if n and 1 - len(ok) / n > slo_max_error_rate:
            reasons.append(f"error rate {1 - len(ok) / n:.2%} > {slo_max_error_rate:.2%}")
        out["slo"] = {
            "p99_ms": slo_p99_ms,
            "max_error_rate": slo_max_error_rate,
            "pass": not reasons,
            "reasons": reasons,
        }
    return out


def verdict(runs: list[dict[str, Any]], slo_p99_ms: float | None) -> dict[str, Any] | None:
    if slo_p99_ms is None:
        return None
    passing = [r for r in runs if r["slo"]["pass"]]
    best = max(passing, key=lambda r: r["throughput_rps"], default=None)
    return {
        "slo_p99_ms": slo_p99_ms,
        "pass": len(passing) == len(runs),
        "levels_within_slo": [r["label"] for r in passing],
        "best_within_slo": None if best is None else {"label": best["label"], "throughput_rps": best["throughput_rps"]},
    }


def format_run(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    lat_s = (
        "no successful request"
        if lat is None
        else "  ".join(f"{k} {lat[k]:.1f}" for k in ("p50", "p90", "p95", "p99", "max"))
    )
    errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"
    slo = ""
    if "slo" in r:
        slo = f"\n    SLO p99 <= {r['slo']['p99_ms']:g} ms: " + (
            "PASS" if r["slo"]["pass"] else "FAIL (" + "; ".join(r["slo"]["reasons"]) + ")"
        )
    srv = r.get("server") or {}
    srv_s = "" if not srv else "\n    server: " + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in srv.items())
    if (r.get("client_cpu_share") or 0) > 0.8:
        srv_s += f"\n    note: this client used {r['client_cpu_share']:.0%} of a core; it may be the bottleneck"
    return (
        f"  {r['mode']} loop {r['label']}: {r['requests']} requests in {r['duration_s']:.1f} s, "
        f"{r['throughput_rps']:.1f} req/s ({r['texts_per_s']:.1f} texts/s)\n"
        f"    latency ms  {lat_s}\n    errors: {errs}{srv_s}{slo}"
    )


# ----------------------------------------------------------------------------- plots


def write_plots(levels: list[Level], runs: list[dict[str, Any]], out: Path, slo_p99_ms: float | None) -> dict[str, str]:
    """PNG plots beside `out`; returns {kind: file name}. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    stem, made = out.with_suffix(""), {}
    title = out.stem
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 20, 50, 100 ms rather than 2x10^1

    def ms_log_axis(axis: Any) -> None:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(plain)
        axis.set_minor_formatter(NullFormatter())

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, lv in enumerate(levels):
        lat = np.sort([s.latency * 1000 for s in lv.samples if s.status == "200"])
        if len(lat):
            ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), color=f"C{i % 10}", label=lv.label)
    if slo_p99_ms is not None:
        ax.axvline(slo_p99_ms, color="red", ls="--", lw=1, label=f"SLO p99 {slo_p99_ms:g} ms")
    ax.axhline(0.99, color="grey", ls=":", lw=1)
    ax.set(xscale="log", xlabel="latency (ms, log scale)", ylabel="fraction of requests", title=f"Latency CDF: {title}")
    ms_log_axis(ax.xaxis)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    made["latency_cdf"] = _save(fig, Path(f"{stem}-latency-cdf.png"))

    fig, ax = plt.subplots(figsize=(9, 4.5))
    offset = 0.0
    for i, lv in enumerate(levels):
        ok = [s for s in lv.samples if s.status == "200"]
        if ok:
            color = f"C{i % 10}"
            step = max(1, len(ok) // 20000)  # keep the scatter readable and the file small
            ax.scatter(
                [offset + s.start for s in ok[::step]],
                [s.latency * 1000 for s in ok[::step]],
                s=3,
                alpha=0.3,
                color=color,
            )
            width = min(10.0, max(0.1, lv.elapsed / 20))  # about 20 windows per level
            win = np.floor(np.array([s.start for s in ok]) / width).astype(int)
            lat = np.array([s.latency * 1000 for s in ok])
            ws = np.unique(win)
            ax.step(
                offset + (ws + 1) * width,
                [np.percentile(lat[win == w], 99) for w in ws],
                where="pre",
                lw=1.5,
                color=color,
                label=f"{lv.label} p99 per {width:.2g} s",
            )
        offset += max(lv.elapsed, 1.0)
    if slo_p99_ms is not None:
        ax.axhline(slo_p99_ms, color="red", ls="--", lw=1, label="SLO p99")
    ax.set(
        yscale="log",
        xlabel="time in measured window (s; levels one after another)",
        ylabel="latency (ms)",
        title=f"Latency over time: {title}",
    )
    ms_log_axis(ax.yaxis)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    made["latency_over_time"] = _save(fig, Path(f"{stem}-latency-time.png"))

    if len(runs) > 1:
        closed = runs[0]["mode"] == "closed"
        xs = [r["concurrency"] if closed else r["rate"] for r in runs]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        a1.plot(xs, [r["throughput_rps"] for r in runs], "o-")
        a2.plot(xs, [r["latency_ms"]["p99"] if r["latency_ms"] else math.nan for r in runs], "o-", color="C1")
        if slo_p99_ms is not None:
            a2.axhline(slo_p99_ms, color="red", ls="--", lw=1, label="SLO")
            a2.legend(fontsize=8)
        xlabel = "concurrency (closed loop)" if closed else "offered rate (req/s, open loop)"
        a1.set(xlabel=xlabel, ylabel="throughput (req/s)", title="Throughput")
        a2.set(xlabel=xlabel, ylabel="p99 latency (ms)", title="p99 latency")
        for a in (a1, a2):
            a.set_xscale("log", base=2)
            a.set_xticks(xs)
            a.xaxis.set_major_formatter(plain)
            a.set_ylim(bottom=0)
            a.grid(True, which="both", alpha=0.3)
        fig.suptitle(f"Sweep: {title}")
        made["sweep"] = _save(fig, Path(f"{stem}-sweep.png"))
    return made


def _save(fig: Any, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


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
        prog="python -m service.loadtest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
    return args


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
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    async with AsyncClient(
        args.url,
        api_key=args.api_key,
        timeout=args.timeout,
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
    ) as client:
        try:
            await client.wait_healthy(timeout=args.wait_healthy, interval=min(0.5, args.wait_healthy / 4 + 0.01))
            info = await client.info()
        except (TimeoutError, httpx.HTTPError, APIError) as e:
            raise LoadTestError(f"{args.url} is not serving ({e})") from None

        async def call() -> int:
            batch = [rng.choice(texts) for _ in range(args.texts_per_request)]
            if args.endpoint == "sentiment":
                await client.sentiment(batch)
            else:
                await client.translate(batch, args.target_lang, source_lang=args.source_lang, beam_size=args.beam_size)
            return len(batch)

        async def snapshot() -> Totals:
            return endpoint_totals(await client.metrics(), args.endpoint)

        progress = Progress(not args.quiet)
        for lv in levels:
            await run_level(
                call,
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
        "tool": "python -m service.loadtest",
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
        print(format_run(r))
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
