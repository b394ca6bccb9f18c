"""Sentiment checkpoint -> verified ONNX artifact (see training.export for the CLI)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from tqdm import tqdm

from service.artifacts import write_metadata
from service.sentiment_model import INT8_FILE, MODEL_FILE, VOCAB_FILE, SentimentModel
from service.text import Vocab
from training.card import base_metadata, training_metadata
from training.onnx_io import ParityError, io_spec, onnx_export, op_types
from training.sentiment.data import IMDB_URL, Review, load_split, stratified_split
from training.sentiment.model import SentimentClassifier, SentimentConfig
from training.sentiment.train import TrainConfig, encode_reviews, make_batch

ATOL = 1e-4
GOLDEN_TEXTS = [
    "One of the best films I have seen in years. The acting is superb and the story moved me.",
    "A dull, badly written mess. I want my two hours back.",
    "It was okay, I guess.",
    "<br /><br />Not bad at all!",
]


def load_checkpoint(run: Path) -> tuple[SentimentClassifier, Vocab, dict]:
    ck = torch.load(run / "best.pt", weights_only=False)
    model = SentimentClassifier(SentimentConfig.from_dict(ck["config"]))
    model.load_state_dict(ck["model"])
    return model.eval(), Vocab(ck["vocab"]), ck


def parity_batch(reviews: list[Review], n: int = 32) -> list[Review]:
    """n real reviews spread over the length range, so the batch carries heavy padding."""
    by_len = sorted(reviews, key=lambda r: len(r.text))
    return [by_len[int(i)] for i in np.linspace(0, len(by_len) - 1, n)]


def check_sentiment_parity(model: SentimentClassifier, onnx_path: Path, vocab: Vocab, reviews: list[Review]) -> dict:
    """Same padded batch through PyTorch and onnxruntime: max |dlogit| <= ATOL, same labels."""
    import onnxruntime as ort

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


def evaluate(runtime: SentimentModel, reviews: list[Review], desc: str, chunk: int = 512) -> dict:
    probs = np.concatenate(
        [
            runtime.predict([r.text for r in reviews[s : s + chunk]])
            for s in tqdm(range(0, len(reviews), chunk), desc=desc, unit="chunk")
        ]
    )
    return classification_metrics(probs, [r.label for r in reviews])


def export_sentiment(
    run: Path,
    out: Path,
    data_dir: Path,
    *,
    version: str | None = None,
    quantize: bool = False,
    limit_eval: int = 0,
    int8_max_drop: float = 0.3,
) -> dict:
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

    train_all = load_split(data_dir, "train")
    if tcfg.limit:
        train_all = stratified_split(train_all, tcfg.limit / len(train_all), tcfg.seed)[1]
    _, val = stratified_split(train_all, tcfg.val_fraction, tcfg.seed)
    parity = check_sentiment_parity(model, onnx_path, vocab, parity_batch(val))

    cfg = model.cfg
    meta = {
        **base_metadata("imdb-sentiment-bilstm", "sentiment", version),
        **training_metadata(ck, "best_acc", "best_val_acc_pytorch"),
        "tokenizer": {"module": "service.text", "vocab_size": len(vocab), "vocab_sha256": vocab.sha256()},
        "data": {
            "dataset": "IMDB Large Movie Review Dataset v1.0",
            "source": IMDB_URL,
            "citation": "Maas et al., Learning Word Vectors for Sentiment Analysis, ACL 2011",
            "train": len(train_all) - len(val),
            "validation": len(val),
            "validation_split": f"stratified {tcfg.val_fraction:.0%} of train, seed {tcfg.seed}",
        },
        "interface": io_spec(onnx_path),
        "parity": parity,
        "serving_model": MODEL_FILE,
        "labels": list(cfg.labels),
        "golden": {"texts": GOLDEN_TEXTS, "logits": []},
    }
    write_metadata(out, meta)  # provisional, so the runtime loader can open the folder
    runtime = SentimentModel(out)
    meta["golden"]["logits"] = runtime.logits(runtime.encode(GOLDEN_TEXTS)).round(6).tolist()
    test = load_split(data_dir, "test")
    if limit_eval:
        val, test = val[:limit_eval], stratified_split(test, limit_eval / len(test), 0)[1]
    meta["metrics"] = {
        "validation": evaluate(runtime, val, "validation (onnxruntime)"),
        "test": evaluate(runtime, test, "test (onnxruntime)"),
        "computed_with": "onnxruntime, CPU",
    }
    if quantize:
        meta = _try_int8(out, meta, val, test, int8_max_drop)
    write_metadata(out, meta)
    for precision in ("fp32", "int8") if (out / INT8_FILE).exists() else ("fp32",):
        SentimentModel(out, precision=precision).check_golden()
    (out / "README.md").write_text(_card(meta), encoding="utf-8")
    for src, dst in (("curve.png", "training_curve.png"), ("pooling.png", "pooling_selection.png")):
        if (run / src).exists():  # the pictures people look at, shipped beside the model
            shutil.copy(run / src, out / dst)
    return write_metadata(out, meta)


def _try_int8(out: Path, meta: dict, val: list[Review], test: list[Review], max_drop: float = 0.3) -> dict:
    """Ship an int8 dynamically quantized model only if test accuracy is within `max_drop` points."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    q = out / INT8_FILE
    # The exporter's stored intermediate shapes confuse the quantizer's shape inference; drop them.
    m = onnx.load(str(out / MODEL_FILE))
    del m.graph.value_info[:]
    with tempfile.TemporaryDirectory() as td:
        plain = Path(td) / "plain.onnx"
        onnx.save(m, str(plain))
        quantize_dynamic(str(plain), str(q), weight_type=QuantType.QInt8)
    write_metadata(out, meta)
    rt = SentimentModel(out, model_file=q.name)
    m = {"test": evaluate(rt, test, "test int8 (onnxruntime)")}
    drop = meta["metrics"]["test"]["accuracy"] - m["test"]["accuracy"]
    m["accuracy_drop_points"] = round(100 * drop, 3)
    m["max_drop_points"] = max_drop
    m["shipped"] = bool(drop * 100 <= max_drop)
    meta["metrics"]["int8"] = m
    if m["shipped"]:  # what the loader's golden check compares the int8 model with
        meta["golden"]["logits_int8"] = rt.logits(rt.encode(GOLDEN_TEXTS)).round(6).tolist()
    else:
        q.unlink()
    return meta


def _card(meta: dict) -> str:
    t, v = meta["metrics"]["test"], meta["metrics"]["validation"]
    return (
        f"# {meta['name']} {meta['version']}\n\nBiLSTM sentiment classifier trained on IMDB; see metadata.json.\n\n"
        f"| split | accuracy | F1 |\n|---|---|---|\n| validation | {v['accuracy']:.4f} | {v['f1']:.4f} |\n"
        f"| test | {t['accuracy']:.4f} | {t['f1']:.4f} |\n\nParity: {json.dumps(meta['parity'])}\n"
    )
