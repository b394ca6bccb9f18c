"""Mixed tenants: one bulk client and several interactive ones against a running server, each
with its own X-Client-ID, and each client's latency over time (issue 22, docs/scheduling.md).

    python -m loadgen.tenants --url http://127.0.0.1:8000 --duration 30 --baseline --out load/tenants.json

The bulk client keeps --bulk-outstanding translation requests in flight (closed loop), each of
--bulk-texts sentences with --bulk-beam, n-best --bulk-n-best and alignments (the defaults are the
issue's worst case: 12 requests of 64 sentences, beam 8, n-best 8). Each of --interactive clients
sends a one-sentence translation every --interval seconds (open loop: latency counts from the
scheduled send time, so a request held up shows as latency). With --baseline the bulk client first
runs alone for the same duration, and the report gives its throughput with the interactive clients
present over its throughput alone.

The verdict is the issue's acceptance: interactive p95 <= --p95-ms and p99 <= --p99-ms, no
interactive request refused or failed, bulk throughput ratio >= --min-ratio (with --baseline).
Exit status 1 when it fails, 2 when the server is not serving. Plot: `<out>-clients.png`, every
request's latency against its send time, one colour per client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen.data import LoadTestError, dataset_file, default_data_dir, load_texts
from loadgen.stats import latency_summary
from loadgen.transport import make_transport
from service import __version__

PATH = "/v1/translate"


@dataclass
class Sample:
    client: str
    start: float  # seconds from the phase's start (scheduled time for interactive requests)
    latency: float
    status: int | str
    texts: int


@dataclass
class Phase:
    name: str
    duration: float
    samples: list[Sample] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m loadgen.tenants", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of the mixed phase (and of the baseline)")
    p.add_argument("--baseline", action="store_true", help="first run the bulk client alone for --duration")
    p.add_argument("--bulk-outstanding", type=int, default=12)
    p.add_argument("--bulk-texts", type=int, default=64)
    p.add_argument("--bulk-beam", type=int, default=8)
    p.add_argument("--bulk-n-best", type=int, default=8)
    p.add_argument("--interactive", type=int, default=1, help="interactive clients")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between an interactive client's requests")
    p.add_argument("--target-lang", default="de")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--texts-file", type=Path, default=None)
    p.add_argument("--api-key", default=None)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--p95-ms", type=float, default=500.0)
    p.add_argument("--p99-ms", type=float, default=1000.0)
    p.add_argument("--min-ratio", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--no-plots", action="store_true")
    a = p.parse_args(argv)
    if a.duration <= 0 or a.bulk_outstanding < 1 or a.interactive < 0 or a.interval <= 0:
        p.error("--duration and --interval must be > 0, --bulk-outstanding >= 1, --interactive >= 0")
    return a


def _body(texts: list[str], lang: str, **kw: Any) -> bytes:
    return json.dumps({"texts": texts, "target_lang": lang, **kw}).encode()


async def _phase(a: argparse.Namespace, transport: Any, texts: list[str], name: str, interactive: int) -> Phase:
    rng = random.Random(a.seed)
    phase = Phase(name, a.duration)
    t0 = time.monotonic()
    end = t0 + a.duration

    async def send(client: str, body: bytes, n: int, scheduled: float) -> None:
        try:
            reply = await transport.request(
                "POST", PATH, body, {"content-type": "application/json", "x-client-id": client}
            )
            status: int | str = reply.status
        except (OSError, asyncio.TimeoutError):
            status = "timeout"
        except Exception as e:  # a connection closed mid-answer and the like: count it, do not stop
            status = type(e).__name__
        phase.samples.append(Sample(client, scheduled - t0, time.monotonic() - scheduled, status, n))

    async def bulk_caller() -> None:
        while time.monotonic() < end:
            batch = [rng.choice(texts) for _ in range(a.bulk_texts)]
            body = _body(batch, a.target_lang, beam_size=a.bulk_beam, n_best=a.bulk_n_best, return_alignments=True)
            await send("bulk", body, len(batch), time.monotonic())

    async def interactive_client(i: int) -> None:
        name, k, pending = f"interactive-{i}", 0, []
        first = t0 + a.interval * i / max(1, interactive)  # spread the clients over one interval
        while (when := first + k * a.interval) < end:
            await asyncio.sleep(max(0.0, when - time.monotonic()))
            body = _body([rng.choice(texts)], a.target_lang, beam_size=5)
            pending.append(asyncio.ensure_future(send(name, body, 1, when)))
            k += 1
        await asyncio.gather(*pending)

    await asyncio.gather(
        *(bulk_caller() for _ in range(a.bulk_outstanding)), *(interactive_client(i) for i in range(interactive))
    )
    phase.duration = time.monotonic() - t0
    return phase


def summarize(phase: Phase) -> dict[str, Any]:
    clients: dict[str, Any] = {}
    for name in sorted({s.client for s in phase.samples}):
        mine = [s for s in phase.samples if s.client == name]
        ok = [s for s in mine if s.status == 200]
        statuses: dict[str, int] = {}
        for s in mine:
            statuses[str(s.status)] = statuses.get(str(s.status), 0) + 1
        clients[name] = {
            "requests": len(mine),
            "statuses": statuses,
            "latency_ms": latency_summary([s.latency for s in ok]),
            "texts_per_s": round(sum(s.texts for s in ok) / phase.duration, 2),
        }
    return {"phase": phase.name, "duration_s": round(phase.duration, 2), "clients": clients}


def verdict(a: argparse.Namespace, mixed: dict[str, Any], alone: dict[str, Any] | None) -> dict[str, Any]:
    inter = {k: v for k, v in mixed["clients"].items() if k.startswith("interactive")}
    checks: dict[str, bool] = {}
    for name, c in inter.items():
        lat = c["latency_ms"] or {}
        checks[f"{name} p95 <= {a.p95_ms:g} ms"] = lat.get("p95", float("inf")) <= a.p95_ms
        checks[f"{name} p99 <= {a.p99_ms:g} ms"] = lat.get("p99", float("inf")) <= a.p99_ms
        checks[f"{name} none refused or failed"] = set(c["statuses"]) == {"200"}
    ratio = None
    if alone is not None and "bulk" in alone["clients"] and "bulk" in mixed["clients"]:
        base = alone["clients"]["bulk"]["texts_per_s"]
        ratio = round(mixed["clients"]["bulk"]["texts_per_s"] / base, 3) if base else None
        checks[f"bulk throughput with others >= {a.min_ratio:g} x alone"] = ratio is not None and ratio >= a.min_ratio
    return {"pass": all(checks.values()), "checks": checks, "bulk_ratio": ratio}


def write_plot(phases: list[Phase], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(phases), figsize=(7 * len(phases), 4.5), squeeze=False, sharey=True)
    for ax, phase in zip(axes[0], phases):
        names = sorted({s.client for s in phase.samples})
        for i, name in enumerate(names):
            mine = [s for s in phase.samples if s.client == name]
            ok = [s for s in mine if s.status == 200]
            bad = [s for s in mine if s.status != 200]
            ax.scatter([s.start for s in ok], [s.latency * 1000 for s in ok], s=8, color=f"C{i % 10}", label=name)
            if bad:
                ax.scatter(
                    [s.start for s in bad], [s.latency * 1000 for s in bad], s=20, marker="x", color=f"C{i % 10}"
                )
        ax.set(yscale="log", xlabel="send time (s)", ylabel="latency (ms, log scale; x = refused/failed)")
        ax.set_title(f"{phase.name}: latency of each client's requests")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    path = Path(f"{out.with_suffix('')}-clients.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


async def run(a: argparse.Namespace) -> dict[str, Any]:
    source = a.texts_file or dataset_file("translate", a.data_dir or default_data_dir())
    texts = load_texts(source, seed=a.seed, max_chars=1000)
    connections = a.bulk_outstanding + a.interactive * max(4, int(4 / a.interval))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    async with make_transport("auto", a.url, api_key=a.api_key, timeout=a.timeout, connections=connections) as tr:
        try:
            info = json.loads((await tr.request("GET", "/info")).body)
        except (OSError, ValueError) as e:
            raise LoadTestError(f"{a.url} is not serving ({e})") from None
        phases = []
        if a.baseline:
            phases.append(await _phase(a, tr, texts, "bulk alone", 0))
        phases.append(await _phase(a, tr, texts, "mixed", a.interactive))
    summaries = [summarize(p) for p in phases]
    report: dict[str, Any] = {
        "tool": "python -m loadgen.tenants",
        "version": __version__,
        "started_at": started,
        "target": a.url,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "server_scheduling": info.get("scheduling"),
        "phases": summaries,
        "verdict": verdict(a, summaries[-1], summaries[0] if a.baseline else None),
        "plots": {},
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if not a.no_plots:
        try:
            report["plots"]["clients"] = write_plot(phases, a.out)
        except ImportError:
            report["plots_skipped"] = "matplotlib is not installed"
    a.out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    try:
        report = asyncio.run(run(a))
    except (LoadTestError, OSError) as e:
        print(f"loadgen.tenants: {e}", file=sys.stderr)
        return 2
    for ph in report["phases"]:
        print(f"{ph['phase']} ({ph['duration_s']} s):")
        for name, c in ph["clients"].items():
            lat = c["latency_ms"] or {}
            print(
                f"  {name}: {c['requests']} requests {c['statuses']}, {c['texts_per_s']} texts/s, "
                f"p50 {lat.get('p50')} p95 {lat.get('p95')} p99 {lat.get('p99')} max {lat.get('max')} ms"
            )
    v = report["verdict"]
    for check, ok in v["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'} {check}")
    print(f"verdict: {'PASS' if v['pass'] else 'FAIL'}; report: {a.out}")
    with contextlib.suppress(KeyError):
        print(f"plot: {a.out.parent / report['plots']['clients']}")
    return 0 if v["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
