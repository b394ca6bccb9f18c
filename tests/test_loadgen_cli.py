"""`python -m loadgen` (loadgen/__main__.py): short real runs against the test server, and its arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadgen import __main__ as lt
from tests.conftest import ROOT, free_port

PNG = b"\x89PNG\r\n\x1a\n"


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 5000, path
    assert path.read_bytes()[:8] == PNG


# ----------------------------------------------------------------------------- real runs


def test_closed_loop_cli_against_the_server(server, data_dir, tmp_path):
    out = tmp_path / "load" / "sentiment.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadgen",
            "--url",
            server.url,
            "--endpoint",
            "sentiment",
            "--concurrency",
            "4",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--data-dir",
            str(data_dir),
            "--texts-per-request",
            "2",
            "--slo-p99-ms",
            "5000",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "closed loop c=4" in proc.stdout and "SLO p99 <= 5000 ms: PASS" in proc.stdout
    assert "warm-up" in proc.stderr or "measure" in proc.stderr  # the progress line

    rep = _report(out)
    assert rep["target"] == {"url": server.url, "endpoint": "sentiment"}
    assert rep["config"]["texts"]["source"].endswith("imdb_test.jsonl.xz")
    assert rep["server"]["models"][0]["name"]
    (run,) = rep["runs"]
    assert run["mode"] == "closed" and run["concurrency"] == 4
    assert run["ok"] == run["requests"] > 20 and run["errors"] == {} and run["error_rate"] == 0
    assert 2.5 < run["duration_s"] < 10
    assert run["throughput_rps"] == pytest.approx(run["ok"] / run["duration_s"], rel=0.01)
    assert run["texts_per_s"] == pytest.approx(2 * run["throughput_rps"], rel=0.01)
    lat = run["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert rep["verdict"]["pass"] is True
    srv = run["server"]  # from the server's /metrics over the window
    assert srv["mean_batch_size"] >= 1 and srv["mean_texts_per_batch"] >= 2 * 0.99
    assert srv["mean_queue_wait_ms"] >= 0 and srv["mean_inference_ms"] > 0 and srv["tokens_input_per_s"] > 0
    assert "server: mean request ms" in proc.stdout and srv["mean_request_ms"] > 0
    assert 0 < run["client_cpu_share"] < 1.5
    assert set(rep["plots"]) == {"latency_cdf", "latency_over_time"}
    for name in rep["plots"].values():
        _assert_png(out.parent / name)


def test_translate_sweep_plots_and_slo_miss(server, data_dir, tmp_path):
    out = tmp_path / "sweep.json"
    code = lt.main(
        [
            "--url",
            server.url,
            "--endpoint",
            "translate",
            "--sweep",
            "1,3",
            "--duration",
            "1.5",
            "--warmup",
            "0.5",
            "--data-dir",
            str(data_dir),
            "--beam-size",
            "2",
            "--slo-p99-ms",
            "0.01",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 1  # nobody answers in 10 µs
    rep = _report(out)
    assert [r["concurrency"] for r in rep["runs"]] == [1, 3]
    assert all(r["ok"] > 0 and not r["slo"]["pass"] for r in rep["runs"])
    assert rep["verdict"] == {"slo_p99_ms": 0.01, "pass": False, "levels_within_slo": [], "best_within_slo": None}
    assert rep["config"]["beam_size"] == 2 and rep["config"]["target_lang"] == "de"
    assert set(rep["plots"]) == {"latency_cdf", "latency_over_time", "sweep"}
    for name in rep["plots"].values():
        _assert_png(tmp_path / name)


@pytest.mark.parametrize("transport", ["httpx", "raw"])
def test_open_loop_keeps_the_arrival_rate(server, data_dir, tmp_path, transport):
    out = tmp_path / "open.json"
    code = lt.main(
        [
            "--transport",
            transport,
            "--url",
            server.url,
            "--endpoint",
            "sentiment",
            "--rate",
            "20",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--data-dir",
            str(data_dir),
            "--quiet",
            "--no-plots",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    (run,) = _report(out)["runs"]
    assert run["mode"] == "open" and run["rate"] == 20
    assert 39 <= run["requests"] <= 41  # 2 s at 20 req/s, scheduled, not paced by answers
    assert run["ok"] == run["requests"]
    assert _report(out)["plots"] == {}
    assert _report(out)["config"]["transport"] == transport


@pytest.mark.parametrize("transport", ["httpx", "raw"])
def test_errors_are_counted_by_status(server, tmp_path, transport):
    texts = tmp_path / "texts.txt"
    texts.write_text("A dog runs in the park.\nA man sits.\n")
    out = tmp_path / "errors.json"
    code = lt.main(
        [
            "--transport",
            transport,
            "--url",
            server.url,
            "--endpoint",
            "translate",
            "--target-lang",
            "fr",
            "--concurrency",
            "2",
            "--duration",
            "60",  # --max-requests ends the level, not the clock (a busy machine is slow)
            "--warmup",
            "0",
            "--max-requests",
            "15",
            "--texts-file",
            str(texts),
            "--slo-p99-ms",
            "1000",
            "--quiet",
            "--no-plots",
            "--out",
            str(out),
        ]
    )
    assert code == 1
    (run,) = _report(out)["runs"]
    assert run["requests"] == 15 and run["ok"] == 0  # the test server has no en-fr model: 422
    assert run["errors"] == {"422": 15} and run["error_rate"] == 1.0
    assert run["latency_ms"] is None and "no successful request" in run["slo"]["reasons"]


def test_unreachable_server_and_bad_arguments(tmp_path, capsys):
    code = lt.main(
        [
            "--url",
            f"http://127.0.0.1:{free_port()}",
            "--endpoint",
            "sentiment",
            "--duration",
            "1",
            "--texts-file",
            str(ROOT / "README.md"),
            "--wait-healthy",
            "0.5",
            "--out",
            str(tmp_path / "x.json"),
        ]
    )
    assert code == 2 and "is not serving" in capsys.readouterr().err
    base = ["--endpoint", "sentiment", "--out", "x.json"]
    assert lt.parse_args(base).transport == "raw"  # the default URL is plain http: the light client
    assert lt.parse_args([*base, "--url", "https://example.org"]).transport == "httpx"
    assert lt.parse_args([*base, "--transport", "httpx"]).transport == "httpx"
    assert not (tmp_path / "x.json").exists()
    for bad in (
        ["--concurrency", "2", "--sweep", "1,2"],
        ["--sweep", "1,x"],
        ["--rate", "0"],
        ["--duration", "0"],
        ["--transport", "raw", "--url", "https://example.org"],
        ["--transport", "h2"],
    ):
        with pytest.raises(SystemExit):
            lt.parse_args(["--endpoint", "sentiment", "--out", "x.json", *bad])
