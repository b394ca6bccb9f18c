"""The serving benchmark's report: one summary row per endpoint (the ratios computed from what
was measured), the markdown table `python -m bench.serving` prints, and its plot."""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TARGET_BATCHING, TARGET_RAW = 3.0, 0.70  # batching >= 3x, served >= 70% of raw
TARGET_PROTOCOL = 0.90  # every protocol within 10% of /v1's throughput
# The batched server against others measured in the same rounds: (name, what it is, the figures the
# target bounds, the lowest ratio of ours over theirs allowed for throughput, the highest for p99).
COMPARISONS = {
    "fifo": ("fair (default) vs --scheduling fifo, one client", ("sentiment", "translate"), 0.95, 1.05),
    "baseline": ("these models vs --baseline-models", ("translate",), 0.75, None),
}


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
                "batched_client_cpu_ms": b["client_cpu_ms_per_request"],
                "batching_speedup": b["throughput"] / u["throughput"],
                "raw_batching_speedup": r["throughput"] / r1["throughput"],
                "served_over_raw": b["throughput"] / r["throughput"],
            }
        )
    return rows


def comparison_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The batched server's throughput and p99 over each comparison server's, endpoint by endpoint,
    with the verdict of the targets in COMPARISONS where they bound that endpoint."""
    rows = []
    for name, (what, bounded, min_thr, max_p99) in COMPARISONS.items():
        for ep in ("sentiment", "translate"):
            b, o = res.get("batched", {}).get(ep), res.get(name, {}).get(ep)
            if not (b and o):
                continue
            thr, p99 = b["throughput"] / o["throughput"], b["p99_ms"] / o["p99_ms"]
            ok = None
            if ep in bounded:
                ok = thr >= min_thr and (max_p99 is None or p99 <= max_p99)
            rows.append(
                {
                    "comparison": name,
                    "what": what,
                    "endpoint": ep,
                    "rps": b["throughput"],
                    "other_rps": o["throughput"],
                    "throughput_ratio": thr,
                    "p99_ms": b["p99_ms"],
                    "other_p99_ms": o["p99_ms"],
                    "p99_ratio": p99,
                    "target": (
                        f"throughput >= {min_thr:.0%}" + (f", p99 <= {max_p99:.0%}" if max_p99 else "")
                        if ep in bounded
                        else None
                    ),
                    "ok": ok,
                }
            )
    return rows


def comparison_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| comparison | endpoint | req/s | other req/s | **throughput ×** | p99 ms | other p99 ms | **p99 ×** | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        verdict = "" if r["ok"] is None else (" ✓" if r["ok"] else " ✗")
        lines.append(
            f"| {r['what']} | {r['endpoint']} | {r['rps']:.1f} | {r['other_rps']:.1f} | **{r['throughput_ratio']:.3f}×** | "
            f"{r['p99_ms']:.0f} | {r['other_p99_ms']:.0f} | **{r['p99_ratio']:.3f}×** | {(r['target'] or '-')}{verdict} |"
        )
    return "\n".join(lines)


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


@contextlib.contextmanager
def _figure(path: Path, title: str, rows: int, cols: int, size: tuple[float, float]) -> Iterator[Any]:
    """A grid of axes, saved to `path` under `title` (wrapped) when the block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    try:
        yield axes
        fig.suptitle("\n".join(textwrap.wrap(title, 150)), fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    with _figure(path, title, len(rows), 2, (12, 4.4 * len(rows))) as axes:
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
            ax.bar(
                [i - 0.2 for i in x], [r["batched_p50_ms"], r["unbatched_p50_ms"]], 0.4, label="p50", color="#2b6cb0"
            )
            ax.bar(
                [i + 0.2 for i in x], [r["batched_p99_ms"], r["unbatched_p99_ms"]], 0.4, label="p99", color="#90cdf4"
            )
            ax.set_xticks(x, ["batched", "batch size 1"])
            ax.set_ylabel("latency (ms)")
            ax.set_title(f"{r['endpoint']}: latency")
            ax.legend()


def protocol_rows(res: dict[str, Any], protocols: list[str]) -> list[dict[str, Any]]:
    """Per endpoint and protocol (v1 = the batched server's own run), each against /v1."""
    rows = []
    for ep in ("sentiment", "translate"):
        v1 = res["batched"].get(ep)
        if not v1:
            continue
        for proto in ("v1", *protocols):
            r = v1 if proto == "v1" else res.get(proto, {}).get(ep)
            if not r:
                continue
            rows.append(
                {
                    "endpoint": ep,
                    "protocol": proto,
                    "rps": r["throughput"],
                    "over_v1": r["throughput"] / v1["throughput"],
                    "p50_ms": r["p50_ms"],
                    "p99_ms": r["p99_ms"],
                    "server_cpu_ms": r["server_cpu_ms_per_request"],
                    "client_cpu_ms": r["client_cpu_ms_per_request"],
                    "mean_batch": r["mean_batch_requests"],
                    "rounds_rps": r.get("rounds_throughput", [r["throughput"]]),
                }
            )
    return rows


def protocol_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| endpoint / protocol | req/s | **× /v1** | p50 / p99 ms | mean batch | server CPU ms/req | client CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ok = "✓" if r["over_v1"] >= TARGET_PROTOCOL else "✗"
        lines.append(
            f"| {r['endpoint']} / {r['protocol']} | {r['rps']:.1f} | **{r['over_v1']:.2f}** {ok} | "
            f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f} | {r['mean_batch']:.1f} | {r['server_cpu_ms']:.2f} | "
            f"{r['client_cpu_ms']:.2f} |"
        )
    return "\n".join(lines)


def plot_protocols(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    endpoints = sorted({r["endpoint"] for r in rows}, key=["sentiment", "translate"].index)
    with _figure(path, title, 1, len(endpoints), (5.5 * len(endpoints), 4)) as axes:
        for ax, ep in zip(axes[0], endpoints):
            rs = [r for r in rows if r["endpoint"] == ep]
            names = [r["protocol"] for r in rs]
            ax.bar(names, [r["rps"] for r in rs], color=["#4c72b0"] + ["#55a868"] * (len(rs) - 1))
            for i, r in enumerate(rs):
                lo, hi = min(r["rounds_rps"]), max(r["rounds_rps"])
                ax.plot([i, i], [lo, hi], color="black", lw=1)
                ax.annotate(f"{r['over_v1']:.2f}×", (i, r["rps"]), ha="center", va="bottom", fontsize=9)
            v1 = rs[0]["rps"]
            ax.axhline(TARGET_PROTOCOL * v1, color="gray", ls="--", lw=1, label=f"{TARGET_PROTOCOL:.0%} of /v1")
            ax.set_title(f"{ep}: throughput by protocol (median, range over rounds)")
            ax.set_ylabel("requests/s")
            ax.legend(loc="lower right", fontsize=8)
