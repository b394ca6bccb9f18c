"""Sentiment checkpoint -> verified ONNX artifact (see training.export for the CLI)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tqdm import tqdm

from service.runtime.artifacts import load_metadata, write_metadata
from service.runtime.sentiment import INT8_FILE, MODEL_FILE, VOCAB_FILE, SentimentModel
from service.runtime.text import Vocab
from training.card import base_metadata, training_metadata
from training.cross_cpu import INT8_GOLDEN_KEYS, record_cross_cpu
from training.data import default_data_dir
from training.int8 import DESCRIPTION, quantize
from training.onnx_io import ParityError, io_spec, onnx_export, op_types
from training.sentiment.behaviour import all_cases, run_suite
from training.sentiment.calibration import expected_calibration_error, fit_temperature, reliability_table
from training.sentiment.card import card
from training.sentiment.corpus import SOURCES, load_corpus
from training.sentiment.data import Review, load_split, stratified_split
from training.sentiment.model import SentimentClassifier, SentimentConfig
from training.sentiment.train import TrainConfig, encode_reviews, make_batch

ATOL = 1e-4
GOLDEN_TEXTS = [
    "One of the best films I have seen in years. The acting is superb and the story moved me.",
    "A dull, badly written mess. I want my two hours back.",
    "It was okay, I guess.",
    "<br /><br />Not bad at all!",
    "@united lost my bag again http://t.co/x 😡",
]
NAME = "sentiment-bilstm-multidomain"
INT8_MAX_DROP = 0.3  # points of mean per-domain validation accuracy the int8 variant may lose


def load_checkpoint(run: Path) -> tuple[SentimentClassifier, Vocab, dict]:
    ck = torch.load(run / "best.pt", weights_only=False)
    model = SentimentClassifier(SentimentConfig.from_dict(ck["config"]))
    model.load_state_dict(ck["model"])
    return model.eval(), Vocab(ck["vocab"]), ck


def parity_batch(reviews: list[Review], n: int = 32) -> list[Review]:
    """n real texts spread over the length range, so the batch carries heavy padding."""
    by_len = sorted(reviews, key=lambda r: len(r.text))
    return [by_len[int(i)] for i in np.linspace(0, len(by_len) - 1, n)]


def check_sentiment_parity(model: SentimentClassifier, onnx_path: Path, vocab: Vocab, reviews: list[Review]) -> dict:
    """Same padded batch through PyTorch and onnxruntime: max |dlogit| <= ATOL, same labels."""
    seqs = encode_reviews(reviews, vocab, model.cfg)
    ids, lens = make_batch(seqs, list(range(len(seqs))))
    with torch.no_grad():
        ref = model(ids, lens).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"ids": ids.numpy(), "lengths": lens.numpy()})[0]
    diff = np.abs(ref - got)
    worst = int(diff.max(axis=1).argmax())
    report = {
        "batch_size": len(seqs),
        "min_len": int(lens.min()),
        "max_len": int(lens.max()),
        "max_abs_logit_diff": float(diff.max()),
        "labels_identical": bool((ref.argmax(1) == got.argmax(1)).all()),
        "atol": ATOL,
    }
    if diff.max() > ATOL:
        raise ParityError(
            f"sentiment logits differ by {diff.max():.3e} > {ATOL} (review {worst} of the batch, "
            f"length {int(lens[worst])}): ONNX export does not compute what PyTorch computed"
        )
    if not report["labels_identical"]:
        bad = np.flatnonzero(ref.argmax(1) != got.argmax(1)).tolist()
        raise ParityError(f"sentiment labels differ between PyTorch and ONNX for batch rows {bad}")
    return report


def classification_metrics(probs: np.ndarray, labels: list[int]) -> dict:
    y, p = np.asarray(labels), probs.argmax(1)
    tp, tn = int(((p == 1) & (y == 1)).sum()), int(((p == 0) & (y == 0)).sum())
    fp, fn = int(((p == 1) & (y == 0)).sum()), int(((p == 0) & (y == 1)).sum())
    prec, rec = tp / max(1, tp + fp), tp / max(1, tp + fn)
    nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1)).mean())
    return {
        "n": len(y),
        "accuracy": round((tp + tn) / len(y), 5),
        "precision": round(prec, 5),
        "recall": round(rec, 5),
        "f1": round(2 * prec * rec / max(1e-12, prec + rec), 5),
        "nll": round(nll, 5),
        "confusion_matrix": {"labels": ["negative", "positive"], "rows_true_cols_pred": [[tn, fp], [fn, tp]]},
    }


def evaluate(runtime: SentimentModel, reviews: list[Review], desc: str, chunk: int = 512) -> tuple[dict, np.ndarray]:
    """Metrics at the runtime's temperature, and the raw logits [N, 2] (input order)."""
    logits = np.concatenate(
        [
            runtime.logits(runtime.encode([r.text for r in reviews[s : s + chunk]]))
            for s in tqdm(range(0, len(reviews), chunk), desc=desc, unit="chunk", leave=False)
        ]
    )
    return classification_metrics(runtime.probabilities(logits), [r.label for r in reviews]), logits


def evaluate_domains(runtime: SentimentModel, val: dict[str, list[Review]], desc: str) -> tuple[dict, dict]:
    """Per-domain validation metrics (accuracy, F1, n) and the logits of each domain."""
    table, logits = {}, {}
    for d, rows in tqdm(val.items(), desc=desc, unit="domain"):
        m, logits[d] = evaluate(runtime, rows, d)
        table[d] = {k: m[k] for k in ("n", "accuracy", "f1")}
    return table, logits


def mean_accuracy(table: dict) -> float:
    """The mean of a per-domain table's accuracies: every domain counts the same."""
    return float(np.mean([m["accuracy"] for m in table.values()]))


def export_sentiment(
    run: Path,
    out: Path,
    data_dir: Path,
    *,
    version: str | None = None,
    quantize: bool = False,
    limit_eval: int = 0,
    reference: Path | None = None,
    int8_max_drop: float = INT8_MAX_DROP,
    report_test: bool = True,
) -> dict:
    """Export `run`'s best checkpoint to `out`, fit its temperature on validation, evaluate and card it.

    Every choice here reads validation only: the temperature, and whether the int8 variant ships.
    IMDB test is evaluated once, at the end, to report. `reference`: a previous artifact evaluated on
    the same validation sets and behavioural suite, so the card shows old beside new.
    `report_test=False` skips the test set: for candidates being compared, which must not see it.
    """
    model, vocab, ck = load_checkpoint(run)
    tcfg = TrainConfig(**ck["train_config"])
    onnx_path = out / MODEL_FILE
    ex_ids, ex_lens = make_batch([[5, 6, 7, 8], [9, 10]], [0, 1])
    onnx_export(
        model,
        (ex_ids, ex_lens),
        onnx_path,
        inputs=["ids", "lengths"],
        outputs=["logits"],
        dynamic={"ids": {0: "batch", 1: "seq"}, "lengths": {0: "batch"}, "logits": {0: "batch"}},
    )
    ops = op_types(onnx_path)
    native = "LSTM" if model.cfg.cell == "lstm" else "GRU"
    if native not in ops or ops & {"Loop", "Scan"}:
        raise ParityError(f"expected a native {native} node and no Loop/Scan, got ops {sorted(ops)}")
    vocab.save(out / VOCAB_FILE)

    corpus = load_corpus(data_dir, limit=tcfg.limit)
    val = corpus.val
    if limit_eval:
        val = {d: rows[:limit_eval] for d, rows in val.items()}
    parity = check_sentiment_parity(model, onnx_path, vocab, parity_batch([r for rows in val.values() for r in rows]))

    cfg = model.cfg
    meta = {
        **base_metadata(NAME, "sentiment", version),
        **training_metadata(ck, "best_acc", "best_mean_val_acc_pytorch"),
        "tokenizer": {"module": "service.runtime.text", "vocab_size": len(vocab), "vocab_sha256": vocab.sha256()},
        "data": {
            "sources": {d: {**SOURCES[d], **n} for d, n in corpus.sizes().items()},
            "validation_split": (
                "per source: stratified 5% (200 to 1,500 texts), seed 13; SST-2: its dev set as given; "
                "IMDB: stratified 10% of train, seed 13"
            ),
            "mixture": {"domain_cap": tcfg.domain_cap, "domain_caps": tcfg.domain_caps},
            "test": "IMDB test (25,000 reviews), evaluated once at export, to report",
        },
        "interface": io_spec(onnx_path),
        "parity": parity,
        "serving_model": MODEL_FILE,
        "labels": list(cfg.labels),
        "temperature": 1.0,
        "golden": {"texts": GOLDEN_TEXTS, "logits": []},
    }
    write_metadata(out, meta)  # in the staging folder, so the runtime loader can open it
    runtime = SentimentModel(out)
    meta["golden"]["logits"] = runtime.logits(runtime.encode(GOLDEN_TEXTS)).round(6).tolist()
    table, logits = evaluate_domains(runtime, val, "validation (onnxruntime)")
    pooled = np.concatenate([logits[d] for d in val])
    labels = np.concatenate([[r.label for r in val[d]] for d in val])
    temperature = fit_temperature(pooled, labels)
    meta["temperature"] = round(temperature, 4)
    runtime.temperature = meta["temperature"]
    before, after = runtime.probabilities(pooled, temperature=1.0), runtime.probabilities(pooled)
    meta["calibration"] = {
        "method": "temperature scaling, fitted on the pooled validation set (NLL)",
        "temperature": meta["temperature"],
        "n": len(labels),
        "ece_before": round(expected_calibration_error(before, labels), 4),
        "ece_after": round(expected_calibration_error(after, labels), 4),
        "reliability_after": reliability_table(after, labels),
    }
    meta["metrics"] = {
        "validation_by_domain": table,
        "validation_mean_accuracy": round(mean_accuracy(table), 5),
        "validation_pooled": classification_metrics(after, labels.tolist()),
        "computed_with": "onnxruntime, CPU",
    }
    meta["behaviour"] = summarize_suite(run_suite(runtime.predict))
    if reference is not None:
        meta["reference"] = evaluate_reference(reference, val)
    if quantize:
        meta = _try_int8(out, meta, val, int8_max_drop)
    write_metadata(out, meta)
    served = "int8" if (out / INT8_FILE).exists() else "fp32"
    test = load_split(data_dir, "test") if report_test else []
    if limit_eval and test:
        test = stratified_split(test, limit_eval / len(test), 0)[1]
    for precision in ("fp32", "int8") if served == "int8" else ("fp32",):
        rt = SentimentModel(out, precision=precision)
        rt.check_golden()
        if test:
            meta["metrics"][f"imdb_test_{precision}"] = evaluate(rt, test, f"IMDB test {precision} (onnxruntime)")[0]
    meta["metrics"]["served_precision"] = served
    (out / "README.md").write_text(card(meta), encoding="utf-8")
    for src, dst in (("curve.png", "training_curve.png"), ("domains.png", "validation_by_domain.png")):
        if (run / src).exists():  # the pictures people look at, shipped beside the model
            shutil.copy(run / src, out / dst)
    return write_metadata(out, meta)


def summarize_suite(result: dict) -> dict:
    return {
        "cases": len(all_cases()),  # pairs whose original is labelled wrong are not scored (CheckList INV)
        "scored": {cap: r["cases"] for cap, r in result.items()},
        "failure_rates": {cap: r["failure_rate"] for cap, r in result.items()},
        "failed": {cap: r["failed"] for cap, r in result.items()},
    }


def evaluate_reference(folder: Path, val: dict[str, list[Review]]) -> dict:
    """A previous artifact on the same validation sets and behavioural suite (old beside new)."""
    rt = SentimentModel(folder)
    table, _ = evaluate_domains(rt, val, f"reference {folder.name}")
    return {
        "name": rt.name,
        "version": rt.version,
        "validation_by_domain": table,
        "validation_mean_accuracy": round(mean_accuracy(table), 5),
        "behaviour": summarize_suite(run_suite(rt.predict)),
        # IMDB test as that artifact recorded it at its own export (old and new metadata layouts)
        "imdb_test_accuracy_recorded": (rt.meta["metrics"].get("test") or {}).get("accuracy")
        or (rt.meta["metrics"].get("imdb_test_fp32") or {}).get("accuracy"),
    }


def _try_int8(out: Path, meta: dict, val: dict[str, list[Review]], max_drop: float = INT8_MAX_DROP) -> dict:
    """Ship an int8 dynamically quantized model (training.int8's recipe) only if its mean
    per-domain validation accuracy is within `max_drop` points of fp32's (validation decides; test
    is only reported). Its golden logits' tolerance comes from their measured spread across CPUs."""
    q = out / INT8_FILE
    # The exporter's stored intermediate shapes confuse the quantizer's shape inference; drop them.
    m = onnx.load(str(out / MODEL_FILE))
    del m.graph.value_info[:]
    with tempfile.TemporaryDirectory() as td:
        plain = Path(td) / "plain.onnx"
        onnx.save(m, str(plain))
        quantize(plain, q)
    meta = {**meta, "golden": {k: v for k, v in meta["golden"].items() if k not in INT8_GOLDEN_KEYS}}
    write_metadata(out, meta)
    rt = SentimentModel(out, model_file=q.name)
    rt.temperature = meta["temperature"]
    table, _ = evaluate_domains(rt, val, "validation int8 (onnxruntime)")
    mean = mean_accuracy(table)
    drop = 100 * (meta["metrics"]["validation_mean_accuracy"] - mean)
    result = {
        "method": DESCRIPTION,
        "validation_by_domain": table,
        "validation_mean_accuracy": round(mean, 5),
        "accuracy_drop_points": round(drop, 3),
        "max_drop_points": max_drop,
        "decided_on": "validation (mean per-domain accuracy)",
        "shipped": bool(drop <= max_drop),
    }
    meta["metrics"]["int8"] = result
    if result["shipped"]:  # what the loader's golden check compares the int8 model with
        meta["golden"]["logits_int8"] = rt.logits(rt.encode(GOLDEN_TEXTS)).round(6).tolist()
        meta = record_cross_cpu(out, meta)
    else:
        q.unlink()
    return meta


def requantize(folder: Path, data_dir: Path, *, limit_eval: int = 0, max_drop: float = INT8_MAX_DROP) -> dict:
    """Derive the int8 variant of an existing artifact again from its fp32 model (training.int8's
    recipe), in place: validation gate, golden logits and their cross-CPU tolerance, IMDB test
    figures and card. The fp32 model and everything measured on it stay as they are."""
    meta = load_metadata(folder, task="sentiment")
    val = load_corpus(data_dir).val
    if limit_eval:
        val = {d: rows[:limit_eval] for d, rows in val.items()}
    metrics = {k: v for k, v in meta["metrics"].items() if k not in ("int8", "imdb_test_int8", "served_precision")}
    meta = _try_int8(folder, {**meta, "metrics": metrics}, val, max_drop)
    served = "int8" if (folder / INT8_FILE).exists() else "fp32"
    write_metadata(folder, meta)
    if served == "int8":
        rt = SentimentModel(folder, precision="int8")
        rt.check_golden()
        test = load_split(data_dir, "test")
        if limit_eval:
            test = stratified_split(test, limit_eval / len(test), 0)[1]
        meta["metrics"]["imdb_test_int8"] = evaluate(rt, test, "IMDB test int8 (onnxruntime)")[0]
    meta["metrics"]["served_precision"] = served
    (folder / "README.md").write_text(card(meta), encoding="utf-8")
    return write_metadata(folder, meta)


def main(argv: list[str] | None = None) -> None:
    """python -m training.sentiment.export --artifact models/sentiment: requantize in place."""
    import argparse

    p = argparse.ArgumentParser(description=requantize.__doc__)
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--limit-eval", type=int, default=0, help="texts per validation source (tests); 0 = all")
    a = p.parse_args(argv)
    meta = requantize(a.artifact, a.data_dir or default_data_dir(), limit_eval=a.limit_eval)
    summary = {k: v for k, v in meta["metrics"]["int8"].items() if k != "validation_by_domain"}
    print(json.dumps({**summary, "imdb_test_int8": meta["metrics"].get("imdb_test_int8")}, indent=2))
    print(json.dumps(meta["golden"]["int8_cross_cpu"], indent=2))


if __name__ == "__main__":
    main()
