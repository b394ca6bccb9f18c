"""training.timed: each stage's time and CPU recorded by a real run of the command, summed per
stage over interrupted and resumed runs, and `make train-translation` timing every stage."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from training.timed import main, report_line, summary


def test_a_stage_is_recorded_with_its_exit_code_time_and_cpu(tmp_path):
    record = tmp_path / "timing.json"
    code = main(["--record", str(record), "--stage", "one", "--", sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert code == 0
    code = main(["--record", str(record), "--stage", "two", "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert code == 3  # the command's own
    first, second = json.loads(record.read_text())
    assert (first["stage"], first["exit_code"], second["stage"], second["exit_code"]) == ("one", 0, "two", 3)
    assert 0.3 <= first["seconds"] < 30 and first["command"][0] == sys.executable
    assert first["cpu"] and isinstance(first["bf16_matmul"], bool) and first["started"].endswith("+00:00")


def test_runs_of_a_stage_add_up_and_the_budget_is_judged_on_finished_stages():
    entries = [
        {"stage": "first stage", "seconds": 3000.0, "exit_code": -15, "cpu": "X (x86_64)", "bf16_matmul": False},
        {"stage": "first stage", "seconds": 1800.0, "exit_code": 0, "cpu": "Y (x86_64)", "bf16_matmul": True},
        {"stage": "export", "seconds": 300.0, "exit_code": 0, "cpu": "Y (x86_64)", "bf16_matmul": True},
    ]
    s = summary(entries, budget_minutes=100)
    assert s["stages"] == {"first stage": {"minutes": 80.0, "runs": 2, "finished": True},
                           "export": {"minutes": 5.0, "runs": 1, "finished": True}}  # fmt: skip
    assert (s["total_minutes"], s["within_budget"]) == (85.0, True)
    assert s["cpus"] == ["X (x86_64)", "Y (x86_64), bfloat16 in hardware"]
    assert summary(entries, budget_minutes=80)["within_budget"] is False
    unfinished = summary(entries[:1], budget_minutes=100)
    assert (unfinished["finished"], unfinished["within_budget"]) == (False, False)
    assert "(unfinished)" in report_line(unfinished) and "NOT within the budget of 100 min" in report_line(unfinished)
    assert report_line(s).startswith("first stage 80.0 min (2 runs), export 5.0 min; total 85.0 min on X")


def test_a_terminated_stage_passes_the_signal_on_and_is_still_recorded(tmp_path):
    """A session's end terminates the make it runs: the stage's minutes until then still count."""
    record, flag = tmp_path / "timing.json", tmp_path / "child-saw-sigterm"
    child = (
        "import signal, sys, time, pathlib\n"
        f"def bye(*_): pathlib.Path({str(flag)!r}).touch(); sys.exit(5)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    wrapper = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "training.timed",
            "--record",
            str(record),
            "--stage",
            "s",
            "--",
            sys.executable,
            "-c",
            child,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert wrapper.stdout.readline().strip() == "ready"
    time.sleep(0.2)
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(timeout=30) == 5
    assert flag.exists()
    (entry,) = json.loads(record.read_text())
    assert entry["exit_code"] == 5 and entry["seconds"] > 0


def test_record_needs_a_stage_and_a_command(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--record", str(tmp_path / "t.json"), "--", "true"])
    with pytest.raises(SystemExit):
        main(["--record", str(tmp_path / "t.json"), "--stage", "x"])
    assert not (tmp_path / "t.json").exists()


def test_make_train_translation_times_every_stage_and_reports_against_100_minutes():
    from tests.conftest import make_dry_run

    lines = make_dry_run("train-translation", "PAIR=en-de")
    stages = [words for words in lines if "--record" in words]
    assert [w[w.index("--stage") + 1] for w in stages] == ["first stage", "second stage", "export"]
    assert {w[w.index("--record") + 1] for w in stages} == {"runs/timing-en-de.json"}
    assert [w[w.index("--") + 3] for w in stages] == [
        "training.translation.train",
        "training.translation.train",
        "training.export",
    ]
    report = lines[-1]
    assert report[report.index("--report") + 1] == "runs/timing-en-de.json"
    assert float(report[report.index("--budget-minutes") + 1]) == 100
    assert lines[lines.index(stages[0]) :] == [*stages, report]  # after the set-up, nothing runs untimed
