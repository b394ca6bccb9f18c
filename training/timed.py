"""How long a recipe takes, stage by stage, and on which CPU: `make train-translation` runs each
of its stages through this, so that issue 21's "within 100 minutes per pair" is read off a file,
not added up by hand.

    python -m training.timed --record runs/timing-en-de.json --stage "first stage" -- CMD ARGS...
    python -m training.timed --report runs/timing-en-de.json --budget-minutes 100

--record runs CMD and appends one entry (stage, command, start, seconds, exit code, CPU, whether it
multiplies bfloat16 in hardware); CMD's own exit code is returned. An interrupted or resumed stage
leaves one entry per run, and the report adds them up: time spent, not time between the first
start and the last end (a run resumed in another session does not count the hours between).
--report prints the stages' totals and their sum against the budget.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from training.cross_cpu import cpu_name, has_bf16_matmul


def run_and_record(record: Path, stage: str, command: list[str]) -> int:
    """Run `command`, append its entry to `record`, return its exit code. SIGINT and SIGTERM are
    passed on to it, and what it ran until then is still recorded."""
    started, t0 = datetime.now(UTC), time.monotonic()
    child = subprocess.Popen(command)

    def forward(signum, _frame):
        child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    entry = {
        "stage": stage,
        "command": command,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 1),
        "exit_code": code,
        "cpu": cpu_name(),
        "bf16_matmul": has_bf16_matmul(),
    }
    entries = json.loads(record.read_text()) if record.exists() else []
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps([*entries, entry], indent=2) + "\n")
    return code


def summary(entries: list[dict], budget_minutes: float | None = None) -> dict:
    """Minutes per stage (in the order the stages first ran) and in all, the CPUs they ran on, and
    whether every stage's last run succeeded and the total is within the budget."""
    stages: dict[str, dict] = {}
    for e in entries:
        s = stages.setdefault(e["stage"], {"minutes": 0.0, "runs": 0})
        s["minutes"] += e["seconds"] / 60
        s["runs"] += 1
        s["finished"] = e["exit_code"] == 0
    total = sum(s["minutes"] for s in stages.values())
    out = {
        "stages": {k: {**v, "minutes": round(v["minutes"], 1)} for k, v in stages.items()},
        "total_minutes": round(total, 1),
        "cpus": sorted({e["cpu"] + (", bfloat16 in hardware" if e.get("bf16_matmul") else "") for e in entries}),
        "finished": bool(stages) and all(s["finished"] for s in stages.values()),
    }
    if budget_minutes is not None:
        out["budget_minutes"] = budget_minutes
        out["within_budget"] = out["finished"] and total <= budget_minutes
    return out


def report_line(s: dict) -> str:
    parts = ", ".join(
        f"{k} {v['minutes']:.1f} min"
        + (f" ({v['runs']} runs)" if v["runs"] > 1 else "")
        + ("" if v["finished"] else " (unfinished)")
        for k, v in s["stages"].items()
    )
    line = f"{parts}; total {s['total_minutes']:.1f} min on {' + '.join(s['cpus'])}"
    if "budget_minutes" in s:
        verdict = "within" if s["within_budget"] else "NOT within"
        line += f"; {verdict} the budget of {s['budget_minutes']:g} min"
    return line


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, command = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record", type=Path, help="run the command after -- and append its time to this file")
    mode.add_argument("--report", type=Path, help="print the stages' times in this file")
    p.add_argument("--stage", help="--record: the stage's name")
    p.add_argument("--budget-minutes", type=float, default=None, help="--report: the budget to compare the total with")
    a = p.parse_args(argv)
    if a.record:
        if not a.stage or not command:
            p.error("--record needs --stage NAME and a command after --")
        return run_and_record(a.record, a.stage, command)
    s = summary(json.loads(a.report.read_text()), a.budget_minutes)
    print(report_line(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
