"""Sentiment precision (--precision auto|fp32|int8): the int8 variant is served on CPU when the
artifact ships it, fp32 otherwise or when asked; int8 asked of an artifact without it is refused at
start-up; the int8 model is golden-checked against its own stored logits. On the shipped artifacts
(sentiment and both translators), int8 agrees with fp32 as closely as was measured."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.runtime.artifacts import ArtifactError, golden_tolerance
from service.runtime.sentiment import INT8_FILE, MODEL_FILE, SentimentModel
from tests.conftest import ROOT


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
    # int8 logits are close to fp32's but not equal: a real quantized model, not a copy. (The tiny
    # model's logits reach about 5; its int8 copy moved them by up to 0.83 with onnx 1.23.2.)
    fp32, int8 = np.array(g["logits"]), np.array(g["logits_int8"])
    diff = np.abs(int8 - fp32).max()
    assert 0 < diff < 0.25 * np.abs(fp32).max()
    assert (int8.argmax(1) == fp32.argmax(1)).all()


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
    meta["golden"]["logits_int8"][0][0] += 3 * golden_tolerance(meta["golden"])
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


# ----------------------------------------------------------------------------- the shipped models
# int8 against fp32 on the shipped artifacts, served for real, on the validation data their metadata's
# figures were measured on: the fp32 server reproduces the recorded sentiment accuracy, and int8 stays
# as close to fp32 as it was measured to be, within the gate it shipped under. The data comes from
# ../shared/data (CI has it beside the clone); without it, these skip and the run's summary says so.

SHIPPED = ROOT / "models"  # the repository's own
# Measured on 2026-12-03 (sentiment) and 2026-12-02 (translation) on the shipped artifacts. Sentiment, in process, 64
# texts a call: of the 14,105 pooled validation texts 23 change label (0.16%) and no probability moves
# by more than 0.029. Translation, served as below: 87.0% of en-de's first 300 Multi30k val captions
# translate word for word the same (whole split, in process: 88.7%); en-fr, the general model of
# 2026-12-06: 87.3% of the whole split in process (its export, on an Intel Xeon with AVX-512 VNNI).
# The bounds leave room for another CPU's int8 kernels and other batches, not for another model.
MAX_LABEL_FLIPS = 0.0025  # fraction of reviews
MAX_PROBABILITY_SHIFT = 0.07
CAPTIONS = 300  # translated by each precision, per pair
# Word-for-word agreement of int8 with fp32 on these captions may fall this far below the share the
# export measured on the whole validation split (metrics.int8.validation_identical_to_fp32).
IDENTICAL_MARGIN = 0.05


def shipped_meta(folder: str) -> dict:
    return json.loads((SHIPPED / folder / "metadata.json").read_text())


def post_all(url: str, endpoint: str, texts: list[str], **extra) -> list[dict]:
    """The results for `texts`, in order, 64 per request, one request at a time: int8's dynamic
    quantization scales each batch by its own range, so the same batches make the same answers."""
    out: list[dict] = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for i in range(0, len(texts), 64):
            r = client.post(f"/v1/{endpoint}", json={"texts": texts[i : i + 64], **extra})
            assert r.status_code == 200, r.text
            out += r.json()["results"]
    return out


def both(run, servers: dict):
    """run(fp32 server) and run(auto server) side by side: each server is asked one request at a time
    (the same batches every run), and the two together keep both cores busy."""
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(run, [servers["fp32"], servers["auto"]]))


@pytest.fixture(scope="module")
def shipped_servers(start_server) -> Iterator[dict]:
    """The shipped models served at fp32 and at auto (int8 on CPU where the artifact ships it)."""
    servers = {"fp32": start_server("--precision", "fp32", models=SHIPPED)}
    servers["auto"] = start_server("--precision", "auto", models=SHIPPED)
    yield servers
    for s in servers.values():
        s.stop()


def served_precision(server, task: str, pair: str | None = None) -> str:
    models = httpx.get(f"{server.url}/info", timeout=10).json()["models"]
    (m,) = [m for m in models if m["task"] == task and (pair is None or m.get("pair") == pair)]
    return m["precision"]


def test_shipped_sentiment_int8_agrees_with_fp32_as_measured(shipped_servers):
    from training.data import default_data_dir
    from training.sentiment.corpus import load_corpus

    data = default_data_dir()
    if not (data / "imdb" / "imdb_train.jsonl.xz").exists() or not (data / "sentiment").is_dir():
        pytest.skip(f"needs the IMDB and short-text data in {data} (../shared/data beside the project)")
    meta = shipped_meta("sentiment")
    val = [r for rows in load_corpus(data).val.values() for r in rows]  # the pooled validation set, as exported
    assert len(val) == meta["metrics"]["validation_pooled"]["n"]
    labels = meta["labels"]
    truth = np.array([r.label for r in val])
    texts = [r.text for r in val]

    def run(server) -> tuple[np.ndarray, np.ndarray]:
        res = post_all(server.url, "sentiment", texts)
        return np.array([labels.index(x["label"]) for x in res]), np.array(
            [[x["probabilities"][c] for c in labels] for x in res]
        )

    assert served_precision(shipped_servers["fp32"], "sentiment") == "fp32"
    int8 = meta["metrics"].get("int8", {})
    (pred32, prob32), (pred8, prob8) = both(run, shipped_servers)
    acc32 = (pred32 == truth).mean()
    # as recorded at export (a few texts of slack: what may differ between machines)
    assert acc32 == pytest.approx(meta["metrics"]["validation_pooled"]["accuracy"], abs=3 / len(val))
    if not int8.get("shipped"):
        assert served_precision(shipped_servers["auto"], "sentiment") == "fp32"
        return
    assert served_precision(shipped_servers["auto"], "sentiment") == "int8"
    assert (pred8 != pred32).mean() <= MAX_LABEL_FLIPS
    assert np.abs(prob8 - prob32).max() <= MAX_PROBABILITY_SHIFT
    acc8 = (pred8 == truth).mean()
    assert acc8 >= acc32 - 2 * int8["max_drop_points"] / 100  # the gate read the mean over domains


@pytest.mark.parametrize("pair", ["en-de", "en-fr"])
def test_shipped_translation_int8_agrees_with_fp32_as_measured(shipped_servers, pair):
    """The first CAPTIONS of Multi30k val (the whole split takes minutes on 2 cores): int8 answers word
    for word as fp32 on as many as measured, and loses no more BLEU than the export measured on the
    whole split, give or take the int8 gate's width (0.5) for a 300-sentence sample and another CPU.
    (A general model's gate reads the mean over three validation sets, not Multi30k val alone.)"""
    import sacrebleu

    from training.data import default_data_dir

    data = default_data_dir() / "multi30k"
    src_lang, tgt_lang = pair.split("-")
    files = [data / f"val.{lang}.gz" for lang in (src_lang, tgt_lang)]
    if not all(f.exists() for f in files):
        pytest.skip(f"needs Multi30k's val split in {data} (../shared/data beside the project)")
    src, refs = (gzip.decompress(f.read_bytes()).decode("utf-8").splitlines()[:CAPTIONS] for f in files)
    int8 = shipped_meta(f"translate-{pair}")["metrics"].get("int8", {})
    if not int8.get("shipped"):
        assert served_precision(shipped_servers["auto"], "translation", pair) == "fp32"
        return

    def run(server) -> tuple[list[str], float]:
        out = [r["translation"] for r in post_all(server.url, "translate", src, target_lang=tgt_lang)]
        return out, sacrebleu.corpus_bleu(out, [refs]).score

    assert served_precision(shipped_servers["fp32"], "translation", pair) == "fp32"
    assert served_precision(shipped_servers["auto"], "translation", pair) == "int8"
    (out32, bleu32), (out8, bleu8) = both(run, shipped_servers)
    same = np.mean([a == b for a, b in zip(out32, out8, strict=True)])
    assert same >= int8["validation_identical_to_fp32"] - IDENTICAL_MARGIN, same
    from training.translation.evaluate import validation_by_set

    fp32_val = validation_by_set(shipped_meta(f"translate-{pair}")["metrics"])["multi30k"]
    measured_drop = fp32_val["bleu"] - validation_by_set(int8)["multi30k"]["bleu"]  # whole split, at export
    assert bleu32 - bleu8 <= measured_drop + int8["max_drop"], (bleu32, bleu8, measured_drop)
