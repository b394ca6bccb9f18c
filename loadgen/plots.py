"""Plots beside a load report (`python -m loadgen --out X.json`): latency CDF, latency over
time, and for sweeps throughput and p99 against the load level. Needs matplotlib (the dev and
train extras); `write_plots` raises ImportError without it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from loadgen.engine import Level
from loadgen.stats import percentile


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
                [percentile(lat[win == w], 99) for w in ws],
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
