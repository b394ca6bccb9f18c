"""The load-test tool: its data readers and statistics, and short real runs against the test server."""

from __future__ import annotations

import gzip
import json
import lzma
import subprocess
import sys
from pathlib import Path

import pytest

from service import loadtest as lt
from tests.conftest import ROOT, free_port

PNG = b"\x89PNG\r\n\x1a\n"


def _report(path: Path) -> dict:
    return json.loads(path.read_text())


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 5000, path
    assert path.read_bytes()[:8] == PNG


# ----------------------------------------------------------------------------- readers and statistics


def test_dataset_readers_sample_real_file_formats(data_dir):
    imdb = lt.dataset_file("sentiment", data_dir)
    assert imdb.name == "imdb_test.jsonl.xz"
    with lzma.open(imdb, "rt") as f:
        rows = [json.loads(line) for line in f]
    texts = lt.load_texts(imdb, limit=50, seed=1)
    assert len(texts) == 50 and set(texts) <= {r["text"] for r in rows}
    labels = {r["text"]: r["label"] for r in rows}
    assert {labels[t] for t in texts} == {0, 1}  # a sample of the whole file, not its (sorted) head
    assert lt.load_texts(imdb, limit=50, seed=1) == texts  # seeded

    m30k = lt.dataset_file("translate", data_dir, "en")
    assert m30k.name == "val.en.gz"
    with gzip.open(m30k, "rt") as f:
        lines = {line.strip() for line in f}
    assert set(lt.load_texts(m30k, limit=10)) <= lines
    assert all(len(t) <= 30 for t in lt.load_texts(m30k, max_chars=30))

    with pytest.raises(lt.LoadTestError, match="pass --data-dir or --texts-file"):
        lt.dataset_file("translate", data_dir, "cs")


def test_texts_file_plain_or_json_lines(tmp_path):
    plain = tmp_path / "texts.txt"
    plain.write_text("first review\n\n  second review  \n")
    assert sorted(lt.load_texts(plain)) == ["first review", "second review"]
    jl = tmp_path / "texts.jsonl.gz"
    with gzip.open(jl, "wt") as f:
        f.write('{"text": "from json", "label": 1}\n{"id": 3}\n')
    assert sorted(lt.load_texts(jl)) == ["from json", '{"id": 3}']  # no text field: the line itself
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(lt.LoadTestError, match="no usable text"):
        lt.load_texts(empty)


def test_summary_percentiles_errors_and_slo():
    lv = lt.Level("closed", concurrency=4, elapsed=2.0)
    lv.samples = [lt.Sample(i * 0.02, (i + 1) / 1000, "200", 2) for i in range(100)]  # 1..100 ms
    lv.samples += [lt.Sample(1.0, 0.001, "429", 0), lt.Sample(1.1, 0.001, "429", 0), lt.Sample(1.2, 5.0, "timeout", 0)]
    r = lt.summarize(lv, slo_p99_ms=50, slo_max_error_rate=0.01)
    assert (r["requests"], r["ok"]) == (103, 100)
    assert r["errors"] == {"429": 2, "timeout": 1}
    assert r["throughput_rps"] == 50.0 and r["texts_per_s"] == 100.0
    lat = r["latency_ms"]
    assert lat["min"] == 1.0 and lat["max"] == 100.0
    assert lat["p50"] == pytest.approx(50.5) and lat["p99"] == pytest.approx(99.01)
    assert not r["slo"]["pass"] and len(r["slo"]["reasons"]) == 2  # p99 and error rate

    good = lt.summarize(lv, slo_p99_ms=200, slo_max_error_rate=0.05)
    assert good["slo"]["pass"]
    v = lt.verdict([r, good], 200)
    assert v["pass"] is False and v["levels_within_slo"] == ["c=4"]
    assert lt.verdict([good], None) is None


def test_server_view_from_two_metrics_snapshots():
    def exposition(n: int, batches: int, wait: float, tokens: int) -> str:
        return (
            f'rnnserve_batch_size_requests_sum{{endpoint="sentiment"}} {n}\n'
            f'rnnserve_batch_size_requests_count{{endpoint="sentiment"}} {batches}\n'
            f'rnnserve_batch_size_requests_count{{endpoint="translate"}} 999\n'
            f'rnnserve_queue_wait_seconds_sum{{endpoint="sentiment"}} {wait}\n'
            f'rnnserve_queue_wait_seconds_count{{endpoint="sentiment"}} {n}\n'
            f'rnnserve_tokens_total{{endpoint="sentiment",kind="input"}} {tokens}\n'
        )

    before = lt.endpoint_totals(exposition(10, 10, 0.5, 1000), "sentiment")
    assert before["rnnserve_batch_size_requests_count"] == 10 and before["tokens_input"] == 1000
    after = lt.endpoint_totals(exposition(110, 35, 2.5, 5000), "sentiment")
    view = lt.server_view(before, after, elapsed=2.0)
    assert view == {"mean_batch_size": 4.0, "mean_queue_wait_ms": 20.0, "tokens_input_per_s": 2000.0}
    assert lt.server_view(after, after, elapsed=2.0) == {"tokens_input_per_s": 0.0}


# ----------------------------------------------------------------------------- real runs


def test_closed_loop_cli_against_the_server(server, data_dir, tmp_path):
    out = tmp_path / "load" / "sentiment.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.loadtest",
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


def test_open_loop_keeps_the_arrival_rate(server, data_dir, tmp_path):
    out = tmp_path / "open.json"
    code = lt.main(
        [
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


def test_errors_are_counted_by_status(server, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("A dog runs in the park.\nA man sits.\n")
    out = tmp_path / "errors.json"
    code = lt.main(
        [
            "--url",
            server.url,
            "--endpoint",
            "translate",
            "--target-lang",
            "fr",
            "--concurrency",
            "2",
            "--duration",
            "1",
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
    assert not (tmp_path / "x.json").exists()
    for bad in (["--concurrency", "2", "--sweep", "1,2"], ["--sweep", "1,x"], ["--rate", "0"], ["--duration", "0"]):
        with pytest.raises(SystemExit):
            lt.parse_args(["--endpoint", "sentiment", "--out", "x.json", *bad])
