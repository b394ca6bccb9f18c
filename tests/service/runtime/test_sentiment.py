"""Sentiment precision (--precision auto|fp32|int8): the int8 variant is served on CPU when the
artifact ships it, fp32 otherwise or when asked; int8 asked of an artifact without it is refused at
start-up; the int8 model is golden-checked against its own stored logits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.runtime.artifacts import ArtifactError
from service.runtime.sentiment import INT8_FILE, INT8_GOLDEN_ATOL, MODEL_FILE, SentimentModel


@pytest.fixture(scope="session")
def int8_models(tmp_path_factory, data_dir, sentiment_run) -> Path:
    """A models/ folder whose sentiment artifact was exported with --quantize and int8 shipped (the
    tiny model's accuracy is noisy, so its gate is wide; the default gate is tested below)."""
    from training.sentiment.export import export_sentiment

    root = tmp_path_factory.mktemp("models-int8")
    (root / "sentiment").mkdir()
    meta = export_sentiment(sentiment_run, root / "sentiment", data_dir, quantize=True, int8_max_drop=100)
    assert meta["metrics"]["int8"]["shipped"]
    return root


def test_the_int8_gate_ships_only_within_its_accuracy_drop(tmp_path, data_dir, sentiment_run):
    from training.sentiment.export import export_sentiment

    for gate in (0.3, -100.0):  # the default; and a gate no model passes
        out = tmp_path / str(gate)
        out.mkdir()
        m = export_sentiment(sentiment_run, out, data_dir, quantize=True, int8_max_drop=gate)["metrics"]["int8"]
        assert m["shipped"] == (m["accuracy_drop_points"] <= gate) and m["max_drop_points"] == gate
        assert (out / INT8_FILE).exists() == m["shipped"]
        assert ("logits_int8" in json.loads((out / "metadata.json").read_text())["golden"]) == m["shipped"]
    assert not m["shipped"]


def test_export_stores_golden_logits_for_the_int8_model(int8_models):
    meta = json.loads((int8_models / "sentiment" / "metadata.json").read_text())
    g = meta["golden"]
    assert INT8_FILE in meta["files"] and len(g["logits_int8"]) == len(g["texts"]) == len(g["logits"])
    # int8 logits are close to fp32's but not equal: a real quantized model, not a copy
    diff = np.abs(np.array(g["logits_int8"]) - np.array(g["logits"])).max()
    assert 0 < diff < 0.5


def test_auto_serves_int8_on_cpu_when_shipped(int8_models):
    m = SentimentModel(int8_models / "sentiment", device="cpu", precision="auto")
    assert (m.precision, m.model_file, m.provider) == ("int8", INT8_FILE, "CPUExecutionProvider")
    m.check_golden()


def test_auto_device_lands_on_int8_when_the_session_runs_on_cpu(int8_models):
    # With onnxruntime-gpu on a machine without a GPU, CUDA is listed: the fp32 session is tried
    # first, falls back to CPU, and the int8 one replaces it. With a CPU-only build, int8 directly.
    m = SentimentModel(int8_models / "sentiment", device="auto", precision="auto")
    if m.provider == "CUDAExecutionProvider":
        pytest.skip("a usable GPU is present: fp32 is served")
    assert (m.precision, m.model_file, m.provider) == ("int8", INT8_FILE, "CPUExecutionProvider")
    assert (
        SentimentModel(int8_models / "sentiment", device="auto", precision="auto", model_file=MODEL_FILE).precision
        == "fp32"
    )


def test_fp32_when_asked_and_auto_without_an_int8_variant(int8_models, models_dir):
    assert SentimentModel(int8_models / "sentiment", precision="fp32").model_file == MODEL_FILE
    m = SentimentModel(models_dir / "sentiment", precision="auto")  # exported without --quantize
    assert (m.precision, m.model_file) == ("fp32", MODEL_FILE)


def test_int8_asked_of_an_artifact_without_it_is_refused(models_dir):
    with pytest.raises(ArtifactError, match="ships no int8 variant"):
        SentimentModel(models_dir / "sentiment", precision="int8")


def test_int8_and_fp32_agree_on_labels(int8_models, data_dir):
    from training.sentiment.data import load_split

    reviews_texts = [r.text for r in load_split(data_dir, "test")[:200]]
    fp32 = SentimentModel(int8_models / "sentiment", precision="fp32")
    int8 = SentimentModel(int8_models / "sentiment", precision="int8")
    p32, p8 = fp32.predict(reviews_texts), int8.predict(reviews_texts)
    assert (p32.argmax(1) == p8.argmax(1)).mean() >= 0.9
    assert np.abs(p32 - p8).max() < 0.2


def test_int8_golden_check_uses_its_own_logits(int8_models, tmp_path):
    art = tmp_path / "sentiment"
    shutil.copytree(int8_models / "sentiment", art)
    meta = json.loads((art / "metadata.json").read_text())
    meta["golden"]["logits_int8"][0][0] += 3 * INT8_GOLDEN_ATOL
    (art / "metadata.json").write_text(json.dumps(meta))
    SentimentModel(art, precision="fp32").check_golden()  # fp32 is untouched
    with pytest.raises(ArtifactError, match=r"model\.int8\.onnx: golden-input check failed"):
        SentimentModel(art, precision="int8").check_golden()


def test_server_reports_the_precision_it_serves(start_server, int8_models):
    srv = start_server(models=int8_models)
    info = httpx.get(f"{srv.url}/info", timeout=10).json()
    (m,) = [m for m in info["models"] if m["task"] == "sentiment"]
    assert (m["precision"], m["file"]) == ("int8", INT8_FILE)
    r = httpx.post(f"{srv.url}/v1/sentiment", json={"texts": ["a wonderful film", "dull"]}, timeout=30)
    assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_server_refuses_int8_without_a_variant_at_start_up(start_server):
    srv = start_server("--precision", "int8", wait=False)
    assert srv.proc.wait(120) != 0
    # whichever family's worker gets there first names its artifact (sentiment or a translator)
    assert "precision int8 asked for, but this artifact ships no" in srv.logs()
