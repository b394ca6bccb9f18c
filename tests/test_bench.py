"""python -m bench.serving (`make bench`) runs end to end on the tiny models: two real servers, real
load, the raw in-process comparison, and a report whose ratios are computed from what it measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_bench_produces_a_consistent_report(models_dir, data_dir, tmp_path):
    out = tmp_path / "bench"
    cmd = [
        sys.executable,
        "-m",
        "bench.serving",
        "--models-dir",
        str(models_dir),
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--reviews",
        "48",
        "--sentences",
        "16",
        "--warmup",
        "4",
        "--rounds",
        "1",
        "--device",
        "cpu",
        "--baseline-models",
        str(models_dir),
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "serving.json").read_text())
    rows = {row["endpoint"]: row for row in report["summary"]}
    assert set(rows) == {"sentiment", "translate"}
    for row in rows.values():
        assert row["batched_rps"] > 0 and row["unbatched_rps"] > 0 and row["raw_rps"] > 0
        assert row["batching_speedup"] == pytest.approx(row["batched_rps"] / row["unbatched_rps"])
        assert row["served_over_raw"] == pytest.approx(row["batched_rps"] / row["raw_rps"])
        assert row["mean_batch"] >= 1
    assert rows["sentiment"]["requests"] == 48 and rows["translate"]["requests"] == 16
    # the raw comparison ran the file the server served
    served = next(m for m in report["details"]["batched"]["models"] if m["task"] == "sentiment")
    assert served["file"] == "model.onnx" and served["precision"] == "fp32"  # the tiny artifact has no int8
    assert report["details"]["raw"]["sentiment_file"] == served["file"]
    assert (out / "serving.png").stat().st_size > 5000
    assert "batching" in r.stdout and "served / raw" in r.stdout
    # the same texts over the Open Inference Protocol (HTTP JSON, HTTP binary, gRPC) beside /v1
    protos = {(p["endpoint"], p["protocol"]): p for p in report["protocols"]}
    assert set(protos) == {(e, p) for e in ("sentiment", "translate") for p in ("v1", "v2-json", "v2-binary", "grpc")}
    for (endpoint, _), p in protos.items():
        assert p["rps"] > 0 and p["over_v1"] == pytest.approx(p["rps"] / protos[(endpoint, "v1")]["rps"])
    assert report["details"]["grpc"]["sentiment"]["requests"] == 48
    assert (out / "protocols.png").stat().st_size > 5000 and "× /v1" in r.stdout
    # side by side in the same rounds: the fifo-scheduled server and the --baseline-models server
    assert report["details"]["fifo"]["server_args"][-2:] == ["--scheduling", "fifo"]
    assert report["details"]["baseline"]["models_dir"] == str(models_dir.resolve())
    comps = {(c["comparison"], c["endpoint"]): c for c in report["comparisons"]}
    assert set(comps) == {(n, e) for n in ("fifo", "baseline") for e in ("sentiment", "translate")}
    for (name, endpoint), c in comps.items():
        other = report["details"][name][endpoint]
        assert c["throughput_ratio"] == pytest.approx(rows[endpoint]["batched_rps"] / other["throughput"])
        assert c["p99_ratio"] == pytest.approx(rows[endpoint]["batched_p99_ms"] / other["p99_ms"])
        assert (c["ok"] is None) == (name == "baseline" and endpoint == "sentiment")
    assert "--scheduling fifo" in r.stdout and "throughput ×" in r.stdout


@pytest.mark.slow
def test_bench_without_the_side_servers_still_reports(models_dir, data_dir, tmp_path):
    """`make bench` as users run it, with no --baseline-models (and here --no-fifo): no
    comparison rows for servers that did not run, and no crash at the end of a long run."""
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "bench.serving", "--models-dir", str(models_dir), "--data-dir", str(data_dir)]
    cmd += ["--out", str(out), "--reviews", "16", "--sentences", "8", "--warmup", "2", "--rounds", "1"]
    cmd += ["--device", "cpu", "--protocols", "", "--no-fifo"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    report = json.loads((out / "serving.json").read_text())
    assert report["comparisons"] == [] and {p["protocol"] for p in report["protocols"]} == {"v1"}
    assert "fifo" not in report["details"] and "baseline" not in report["details"]
    assert {row["endpoint"] for row in report["summary"]} == {"sentiment", "translate"}


@pytest.mark.slow
def test_soak_runs_and_judges_what_it_measured(models_dir, data_dir, tmp_path):
    """python -m bench.soak (`make soak`), a few seconds long: capacity, the open-loop soak on
    both endpoints at once through the load engine, the per-minute table and the verdict."""
    out = tmp_path / "soak.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.soak",
        "--models-dir",
        str(models_dir),
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--duration",
        "4",
        "--warmup",
        "1",
        "--capacity-seconds",
        "2",
        "--concurrency",
        "4",
        "--fraction",
        "0.3",
        "--quiet",
    ]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stdout[-3000:] + r.stderr[-3000:]  # 1: a verdict failed (a busy machine)
    report = json.loads(out.read_text())
    caps, offered = report["capacity_req_per_s"], report["offered_req_per_s"]
    assert set(caps) == set(offered) == {"sentiment", "translate"}
    for ep in caps:
        assert caps[ep] > 0 and offered[ep] == pytest.approx(0.3 / 2 * caps[ep], rel=0.01)
    (minute,) = report["minutes"]  # four measured seconds: one (partial) minute
    # the open loop keeps its schedule: every request of the window, answered or not, is counted
    expected = 4 * sum(offered.values())
    assert report["requests"] == minute["requests"] and abs(minute["requests"] - expected) <= 3
    assert minute["p50_ms"] <= minute["p99_ms"] <= minute["max_ms"]
    v = report["verdict"]
    assert v["errors"] == {} and v["checks"]["zero_errors"]
    assert set(v["p99"]) == {"sentiment", "translate"} and v["p99"]["sentiment"]["ratio"] == 1.0
    assert v["pass"] == all(v["checks"].values()) == (r.returncode == 0)
    assert len(report["rss_mb_per_second"]) >= 3 and all(mb > 50 for _, mb in report["rss_mb_per_second"])
    assert out.with_suffix(".png").stat().st_size > 5000
    assert "verdict:" in r.stdout and "capacity sentiment" in r.stdout


def test_training_speed_measures_what_this_cpu_runs(tmp_path):
    """bench.training_speed on a small model: fp32 always measured; bf16 measured where torch runs
    it, else named as failed with oneDNN's reason; the ratio and --amp auto's pick follow from that."""
    from bench.training_speed import main as training_speed
    from training.cross_cpu import has_bf16_matmul
    from training.translation.train import bf16_lstm_runs

    out = tmp_path / "speed.json"
    argv = ["--vocab", "300", "--batch", "8", "--src-len", "5", "--tgt-len", "6", "--steps", "1", "--rounds", "2"]
    assert training_speed([*argv, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["cpu_seconds_per_step"]["fp32"]) == 2 and res["target_subwords_per_cpu_second"]["fp32"] > 0
    assert ("bf16" in res["failed"]) == (not bf16_lstm_runs())
    if "bf16" in res["failed"]:
        assert res["bf16_over_fp32"] is None and "bf16" not in res["cpu_seconds_per_step"]
    else:
        tps = res["target_subwords_per_cpu_second"]
        assert res["bf16_over_fp32"] == pytest.approx(tps["bf16"] / tps["fp32"])
    assert res["amp_auto_picks"] == ("bf16" if has_bf16_matmul() else "off")


@pytest.fixture(scope="module")
def mixture(tmp_path_factory):
    """Synthetic general-domain data and a joint SentencePiece model of it, for the training benches."""
    from tests.synthetic import write_general, write_multi30k
    from training.translation.model import TranslationConfig
    from training.translation.train import TrainConfig, build_tokenizers, load_corpus

    root = tmp_path_factory.mktemp("mixture")
    write_multi30k(root / "data")
    write_general(root / "data")
    cfg = TranslationConfig(src_vocab=200, tgt_vocab=200)
    *_, vocab_src, vocab_tgt, _ = load_corpus(root / "data", cfg, TrainConfig(corpus="general"))
    src_tok, _ = build_tokenizers(root / "spm", cfg, vocab_src, vocab_tgt)
    return ["--spm", str(src_tok.path), "--data-dir", str(root / "data")]


def test_worker_balance_prices_both_ways_of_cutting_steps(mixture, tmp_path):
    """bench.worker_balance on synthetic data: both ways timed on the same number of two-batch
    steps, each step priced at its slower batch, and the ratio is the two figures'."""
    from bench.worker_balance import main as worker_balance

    out = tmp_path / "balance.json"
    assert worker_balance([*mixture, "--steps", "3", "--budget", "150", "--max-batch", "12", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    ways = res["ways"]
    for w in ("consecutive", "paired"):
        secs = ways[w]["batch_seconds"]
        assert len(secs) == 3 and all(len(s) == 2 for s in secs)
        assert ways[w]["step_seconds"] == pytest.approx(sum(max(s) for s in secs), abs=0.01)
        assert 0 <= ways[w]["idle_share"] < 1 and ways[w]["target_subwords"] > 0
    ratio = ways["paired"]["target_subwords_per_s"] / ways["consecutive"]["target_subwords_per_s"]
    assert res["paired_over_consecutive"] == pytest.approx(ratio, abs=1e-3)


def test_softmax_subset_bench_trains_every_batch_in_each_mode(mixture, tmp_path):
    """bench.softmax_subset on synthetic data: each mode trained the same batches (so the same
    target subwords), the whole vocabulary's ratio is 1, and a subset's softmax runs over fewer
    classes than the vocabulary, at least its N most frequent; an adaptive softmax's head runs
    over its first cutoff's ids and one entry per tail cluster."""
    from bench.softmax_subset import main as softmax_subset

    out = tmp_path / "subset.json"
    argv = [*mixture, "--subset", "20", "--adaptive", "20,40", "--batches", "3", "--budget", "150", "--max-batch", "12"]
    assert softmax_subset([*argv, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    whole, sub, adaptive = (res["modes"][m] for m in ("whole", "subset20", "adaptive20-40"))
    assert whole["target_subwords"] == sub["target_subwords"] == adaptive["target_subwords"] > 0
    assert adaptive["mean_classes"] == 20 + 2
    assert whole["over_whole"] == 1.0 and whole["mean_classes"] == res["vocab"]
    assert 20 <= sub["mean_classes"] < res["vocab"]
    assert sub["over_whole"] == pytest.approx(
        sub["target_subwords_per_cpu_second"] / whole["target_subwords_per_cpu_second"], abs=2e-3
    )


def test_export_speed_times_both_ways_of_each_part_on_the_same_work(models_dir, data_dir, tmp_path):
    """bench.export_speed on the test-made translator: every round times both ways of decoding and
    of the search-parity check, the decodes give identical outputs, and each speed-up is the ratio
    of the medians it reports."""
    from bench.export_speed import main as export_speed

    out = tmp_path / "export_speed.json"
    argv = ["--artifact", str(models_dir / "translate-en-de"), "--data-dir", str(data_dir), "--sentences", "40"]
    assert export_speed([*argv, "--parity-sentences", "6", "--rounds", "2", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["outputs_identical"] and res["sentences"] == 40 and res["parity_sentences"] == 6
    assert all(len(v) == 2 for v in res["seconds"].values()) and len(res["seconds"]) == 4
    med = res["median_seconds"]
    assert res["decode_speedup"] == pytest.approx(med["decode_one_process"] / med["decode_pool"], abs=0.01)
    assert res["parity_speedup"] == pytest.approx(med["parity_sequential"] / med["parity_side_by_side"], abs=0.01)


def test_model_sizes_bench_times_each_size_every_round_and_rates_it_against_the_first(tmp_path):
    """bench.model_sizes on a tiny batch: every size is built with the fields its spec names
    (fewer parameters for a smaller decoder), timed once per round, and its ratio is the first
    size's median CPU seconds over its own; a spec naming another field is refused."""
    import statistics

    from bench.model_sizes import main as model_sizes
    from bench.model_sizes import parse_size

    out = tmp_path / "sizes.json"
    argv = ["--vocab", "60", "--batch", "4", "--src-len", "5", "--tgt-len", "6", "--steps", "1", "--rounds", "2"]
    sizes = ["--size", "big:embed_dim=16,enc_hidden=16,dec_hidden=32,attn_dim=16",
             "--size", "small:embed_dim=16,enc_hidden=16,dec_hidden=16,attn_dim=16,adaptive_cutoffs=20+40"]  # fmt: skip
    assert model_sizes([*argv, *sizes, "--out", str(out)]) == 0
    res = json.loads(out.read_text())["sizes"]
    assert list(res) == ["big", "small"]
    assert res["small"]["changes"] == {"embed_dim": 16, "enc_hidden": 16, "dec_hidden": 16, "attn_dim": 16,
                                       "adaptive_cutoffs": [20, 40]}  # fmt: skip
    assert res["small"]["parameters"] < res["big"]["parameters"]
    assert all(len(r["cpu_seconds_per_step"]) == 2 for r in res.values())
    assert res["big"]["speed_vs_first"] == 1.0
    median = {k: statistics.median(r["cpu_seconds_per_step"]) for k, r in res.items()}
    assert res["small"]["speed_vs_first"] == pytest.approx(median["big"] / median["small"], abs=0.01)
    with pytest.raises(ValueError, match="dropout"):
        parse_size("x:dropout=0.1")
