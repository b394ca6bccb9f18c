"""Sentiment training and export (training.sentiment.*, training.export): a tiny model trained for
a few steps on synthetic IMDB and short texts and pushed through the real export + parity code
(conftest), then checked for what the artifact promises; the parity gate refusing an altered
model; resume; the mixture sampler."""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import replace

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import training.sentiment.export as sent_export
import training.sentiment.train as sent_train
from service.runtime.artifacts import sha256_file
from service.runtime.sentiment import SentimentModel
from service.runtime.text import Vocab
from tests.synthetic import SHORT_SETS
from training.export import main as export_main
from training.onnx_io import ParityError, onnx_export, op_types
from training.sentiment.corpus import IMDB, load_corpus
from training.sentiment.data import bucketed_batches, load_split, stratified_split
from training.sentiment.export import check_sentiment_parity, load_checkpoint, parity_batch
from training.sentiment.model import SentimentClassifier, SentimentConfig
from training.sentiment.train import (
    TrainConfig,
    draw_mixture,
    encode_reviews,
    make_batch,
    parse_caps,
    token_budget_batches,
    train,
)

TINY = SentimentConfig(vocab_size=500, min_freq=1, max_len=48, head_len=16, embed_dim=16, hidden_dim=16)


@pytest.fixture(scope="module")
def artifact(models_dir):
    return models_dir / "sentiment"


@pytest.fixture(scope="module")
def meta(artifact):
    return json.loads((artifact / "metadata.json").read_text())


@pytest.fixture(scope="module")
def reviews(data_dir):
    """The validation texts the export's parity gate uses (real file formats, mixed lengths)."""
    return parity_batch([r for rows in load_corpus(data_dir).val.values() for r in rows])


# --- data helpers ------------------------------------------------------------------------------


def test_stratified_split_is_balanced_disjoint_and_reproducible(data_dir):
    reviews = load_split(data_dir, "train")
    tr, va = stratified_split(reviews, 0.1, seed=13)
    assert len(va) == 40 and len(tr) == 360
    assert sum(r.label for r in va) == 20  # the 50/50 balance of the whole set
    assert sorted(map(id, tr + va)) == sorted(map(id, reviews))  # a partition
    assert stratified_split(reviews, 0.1, seed=13) == (tr, va)
    assert stratified_split(reviews, 0.1, seed=14)[1] != va


def test_bucketed_batches_cover_everything_once_and_pad_little():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 400, size=1000).tolist()
    for shuffle in (False, True):
        batches = list(bucketed_batches(lengths, 32, shuffle=shuffle, seed=1, bucket_factor=10))
        assert sorted(i for b in batches for i in b) == list(range(1000))
        assert all(1 <= len(b) <= 32 for b in batches)
        padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
        random_padded = sum(32 * max(lengths[i : i + 32]) for i in range(0, 1000, 32))
        assert padded < 0.75 * random_padded
    a = list(bucketed_batches(lengths, 32, shuffle=True, seed=1))
    assert a == list(bucketed_batches(lengths, 32, shuffle=True, seed=1))
    assert a != list(bucketed_batches(lengths, 32, shuffle=True, seed=2))


def test_corpus_has_a_validation_split_per_domain_disjoint_from_train(data_dir):
    corpus = load_corpus(data_dir)
    assert set(corpus.train) == set(corpus.val) == {IMDB, "sst2", "yelp_shen_sentences", "semeval_twitter"}
    assert len(corpus.val[IMDB]) == 40 and len(corpus.val["sst2"]) == 60  # SST-2's dev set as given
    for d in corpus.train:
        assert corpus.train[d] and corpus.val[d]
        if d not in (IMDB, "sst2"):  # a partition of the source's files
            assert len(corpus.train[d]) + len(corpus.val[d]) == sum(SHORT_SETS[d].values())
        assert abs(sum(r.label for r in corpus.val[d]) / len(corpus.val[d]) - 0.5) < 0.05  # stratified
    assert load_corpus(data_dir).val == corpus.val  # fixed seed


def test_an_unknown_source_folder_is_refused_with_its_name(data_dir, tmp_path):
    shutil.copytree(data_dir, tmp_path / "d")
    (tmp_path / "d" / "sentiment" / "my_tweets").mkdir()
    with pytest.raises(ValueError, match="unknown sentiment source 'my_tweets'"):
        load_corpus(tmp_path / "d")


def test_mixture_caps_each_domain_and_rotates_through_it():
    enc = sent_train.Encoded
    train = {"big": enc([[i] for i in range(100)], [i % 2 for i in range(100)]), "small": enc([[7]] * 5, [1] * 5)}
    caps = parse_caps(30, "small=10")
    assert caps == {"": 30, "small": 10}
    epochs = [draw_mixture(train, caps, e, seed=1) for e in (1, 2, 3, 4)]
    for rows in epochs:
        assert sum(d == "big" for _, _, d in rows) == 30 and sum(d == "small" for _, _, d in rows) == 5
    seen = [ids[0] for rows in epochs[:3] for ids, _, d in rows if d == "big"]
    assert len(set(seen)) == 90  # three windows of a fixed permutation: no repeats before it wraps
    assert draw_mixture(train, caps, 1, seed=1) == epochs[0]


def test_composed_pairs_take_the_verdict_after_but_and_are_mixed_otherwise():
    texts = ["the food was great .", "i loved the staff", "service was slow !", "the room smelled bad"]
    vocab = Vocab.build(
        [t.split() for t in texts] + [["but", ",", "however", "yet", "honestly", "and", ";"]] * 2, 100, 1
    )
    train_sets = {"yelp_shen_sentences": sent_train.Encoded([vocab.encode(t.split()) for t in texts], [1, 1, 0, 0])}
    rows = sent_train.compose_pairs(train_sets, vocab, 200, epoch=1, seed=0)
    assert len(rows) == 200 and rows == sent_train.compose_pairs(train_sets, vocab, 200, epoch=1, seed=0)
    clauses = {tuple(vocab.encode(t.split())): y for t, y in zip(texts, [1, 1, 0, 0], strict=True)}
    for ids, label, domain, eps in rows:
        words = [vocab.itos[i] for i in ids]
        (last,) = [c for c in clauses if tuple(ids[-len(c) :]) == c]  # every text ends with a whole clause
        if domain == "pairs: contrast":
            assert eps == 0.0 and {"but", "however", "yet"} & set(words)
            assert label == clauses[last]  # the clause after the conjunction decides
        else:
            assert domain == "pairs: mixed" and eps == 1.0  # a 50/50 target
        assert "." not in words[:-1] and "!" not in words[:-1]  # the first clause lost its full stop
    assert {d for *_, d, _ in rows} == {"pairs: contrast", "pairs: mixed"}
    assert sent_train.compose_pairs(train_sets, vocab, 0, epoch=1, seed=0) == []


def test_negations_come_from_adjectives_the_data_marks_polar_and_flip_their_label():
    enc = sent_train.Encoded
    texts = {  # "dull" is negative in both sets although set b is mostly positive; "film" is no adjective
        "a": [("the film was great", 1), ("it is so great", 1), ("the film was dull", 0), ("so dull", 0)] * 40,
        "b": [("the film was great", 1), ("really great", 1), ("was dull", 0)] * 40 + [("film", 1)] * 200,
    }
    words = sorted({w for rows in texts.values() for t, _ in rows for w in t.split()} | {"not", "at", "all", "never"})
    vocab = Vocab.build([words] * 2 + [["it", "'", "s", "this", "that", "definitely", "."]] * 2, 100, 1)
    train_sets = {d: enc([vocab.encode(t.split()) for t, _ in rows], [y for _, y in rows]) for d, rows in texts.items()}
    lex = sent_train.polar_adjectives(train_sets, vocab)
    assert {vocab.itos[t]: y for t, y in lex.items()} == {"great": 1, "dull": 0}
    rows = sent_train.compose_negations(lex, vocab, 100, epoch=1, seed=0)
    assert len(rows) == 100 and rows == sent_train.compose_negations(lex, vocab, 100, epoch=1, seed=0)
    for ids, label, domain, eps in rows:
        words_in = [vocab.itos[i] for i in ids]
        assert domain == "negations" and eps == 0.0 and {"not", "never"} & set(words_in)
        adj = "great" if "great" in words_in else "dull"
        assert label == 1 - {"great": 1, "dull": 0}[adj]


def test_token_budget_batches_cover_everything_once_within_budget():
    import random

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 12, 900), rng.integers(200, 400, 100)]).tolist()
    batches = token_budget_batches(lengths, budget=4096, max_batch=128, rng=random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(len(b) * max(lengths[i] for i in b) <= 4096 or len(b) == 1 for b in batches)
    assert max(map(len, batches)) == 128  # short texts travel in wide batches
    assert min(map(len, batches)) <= 20  # long reviews in narrow ones


# --- the training run --------------------------------------------------------------------------


def test_training_run_writes_its_outputs(sentiment_run):
    for name in ("last.pt", "best.pt", "history.json", "report.json", "curve.png"):
        assert (sentiment_run / name).is_file(), name
    assert (sentiment_run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((sentiment_run / "report.json").read_text())
    assert report["epochs_run"] == 2 and [r["epoch"] for r in report["history"]] == [1, 2]
    assert json.loads((sentiment_run / "history.json").read_text()) == report["history"]
    best = torch.load(sentiment_run / "best.pt", weights_only=False)
    assert best["config"]["vocab_size"] == len(best["vocab"]) == report["vocab_size"] <= 500
    assert best["vocab"][:2] == ["<pad>", "<unk>"]
    assert best["state"]["best_acc"] == max(r["val_acc"] for r in report["history"])
    for r in report["history"]:
        assert set(r["val_acc_by_domain"]) == {IMDB, "sst2", "yelp_shen_sentences", "semeval_twitter"}
        assert r["val_acc"] == pytest.approx(np.mean(list(r["val_acc_by_domain"].values())))
    assert (sentiment_run / "domains.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    SentimentClassifier(SentimentConfig.from_dict(best["config"])).load_state_dict(best["model"])


def test_a_finished_run_resumes_without_retraining(sentiment_run, tmp_path, data_dir, capsys):
    run = tmp_path / "run"
    shutil.copytree(sentiment_run, run)
    before = json.loads((run / "report.json").read_text())["history"]
    weights = torch.load(run / "last.pt", weights_only=False)["model"]
    tcfg = TrainConfig(**torch.load(run / "last.pt", weights_only=False)["train_config"])
    report = train(run, data_dir, TINY, tcfg)
    assert "resumed from" in capsys.readouterr().out
    assert report["history"] == before and report["epochs_run"] == 2
    after = torch.load(run / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(after[k], weights[k]) for k in weights)


def test_interrupted_run_resumes_at_the_next_epoch_as_if_never_stopped(tmp_path, data_dir, monkeypatch, capsys):
    tcfg = TrainConfig(epochs=3, token_budget=1024, max_batch=32, lr=5e-3, limit=200)
    straight = train(tmp_path / "straight", data_dir, TINY, tcfg)

    real = sent_train.draw_mixture

    def power_cut(train, caps, epoch, seed):
        if epoch == 3:
            raise RuntimeError("power cut during epoch 3")
        return real(train, caps, epoch, seed)

    monkeypatch.setattr(sent_train, "draw_mixture", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        train(tmp_path / "cut", data_dir, TINY, tcfg)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["state"]["epoch"] == 2
    monkeypatch.setattr(sent_train, "draw_mixture", real)
    weights = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"]
    resumed = train(tmp_path / "cut", data_dir, TINY, tcfg)
    assert "resumed from" in capsys.readouterr().out
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]

    def strip(h):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in h]

    assert strip(resumed["history"]) == strip(straight["history"])
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(b[k], weights[k]) for k in b)  # epoch 3 did train


# --- the exported artifact ---------------------------------------------------------------------


def test_onnx_has_native_lstm_nodes_and_no_loops(artifact):
    ops = op_types(artifact / "model.onnx")
    assert "LSTM" in ops and not ops & {"Loop", "Scan"}
    graph = onnx.load(str(artifact / "model.onnx")).graph
    assert sum(n.op_type == "LSTM" for n in graph.node) == 2  # forward and backward directions
    assert {op.domain or "ai.onnx": op.version for op in onnx.load(str(artifact / "model.onnx")).opset_import}[
        "ai.onnx"
    ] == 18


def test_onnx_has_named_dynamic_batch_and_sequence_axes(artifact, meta):
    g = onnx.load(str(artifact / "model.onnx")).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*g.input, *g.output]}
    assert dims == {"ids": ["batch", "seq"], "lengths": ["batch"], "logits": ["batch", 2]}
    assert [i["name"] for i in meta["interface"]["inputs"]] == ["ids", "lengths"]
    assert meta["interface"]["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", 2]}]


def test_onnx_runs_other_batch_sizes_and_lengths_like_pytorch(artifact, sentiment_run):
    # The export example was 2 reviews of at most 4 tokens; real requests are anything.
    model, _, _ = load_checkpoint(sentiment_run)
    sess = ort.InferenceSession(str(artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for lens in ([1], [7, 3, 1, 48, 20], [60] * 3, list(range(1, 33))):
        seqs = [rng.integers(2, model.cfg.vocab_size, size=n).tolist() for n in lens]
        ids, lengths = make_batch(seqs, list(range(len(seqs))))
        with torch.no_grad():
            ref = model(ids, lengths).numpy()
        got = sess.run(["logits"], {"ids": ids.numpy(), "lengths": lengths.numpy()})[0]
        assert got.shape == (len(lens), 2)
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("pooling", ["last", "max", "mean", "attention"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_every_pooling_and_cell_exports_natively_and_matches_pytorch(pooling, cell, tmp_path):
    # The shipped pooling was chosen by validation; every choice must export and agree, padded.
    torch.manual_seed(0)
    model = SentimentClassifier(replace(TINY, pooling=pooling, cell=cell)).eval()
    path = tmp_path / "m.onnx"
    ex_ids, ex_lens = make_batch([[5, 6, 7, 8], [9, 10]], [0, 1])
    onnx_export(
        model,
        (ex_ids, ex_lens),
        path,
        inputs=["ids", "lengths"],
        outputs=["logits"],
        dynamic={"ids": {0: "batch", 1: "seq"}, "lengths": {0: "batch"}, "logits": {0: "batch"}},
    )
    assert cell.upper() in op_types(path) and not op_types(path) & {"Loop", "Scan"}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    seqs = [rng.integers(2, TINY.vocab_size, size=n).tolist() for n in (1, 9, 30, 4)]
    ids, lengths = make_batch(seqs, list(range(len(seqs))))
    with torch.no_grad():
        ref = model(ids, lengths).numpy()
    got = sess.run(["logits"], {"ids": ids.numpy(), "lengths": lengths.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)


def test_padding_does_not_change_a_review(artifact):
    # A review alone and the same review padded inside a batch of longer ones score the same.
    rt = SentimentModel(artifact)
    texts = ["Great film.", "The acting was awful and the plot was dull, boring and stupid. " * 3]
    alone = rt.logits(rt.encode(texts[:1]))
    batched = rt.logits(rt.encode(texts))
    np.testing.assert_allclose(batched[:1], alone, atol=1e-5)


def test_metadata_records_parity_figures(meta):
    p = meta["parity"]
    assert p["max_abs_logit_diff"] <= p["atol"] == 1e-4
    assert p["labels_identical"] is True
    assert p["batch_size"] == 32 and p["min_len"] < p["max_len"]  # a padded batch of mixed lengths


def test_metadata_records_every_file_with_its_sha256(artifact, meta):
    on_disk = {p.name for p in artifact.iterdir() if p.is_file()} - {"metadata.json"}
    assert set(meta["files"]) == on_disk >= {"model.onnx", "vocab.json", "README.md"}
    for name, digest in meta["files"].items():
        assert sha256_file(artifact / name) == digest, name
    assert meta["tokenizer"]["vocab_sha256"] == Vocab.load(artifact / "vocab.json").sha256()


def test_metadata_records_provenance_and_metrics(meta, sentiment_run):
    assert meta["task"] == "sentiment" and meta["git_commit"] and meta["version"]
    best = torch.load(sentiment_run / "best.pt", weights_only=False)
    assert SentimentConfig.from_dict(meta["config"]) == SentimentConfig.from_dict(best["config"])
    sources = meta["data"]["sources"]
    assert set(sources) == {IMDB, "sst2", "yelp_shen_sentences", "semeval_twitter"}
    assert all(s["terms"] and s["source"] and s["train"] > 0 and s["validation"] > 0 for s in sources.values())
    by_domain = meta["metrics"]["validation_by_domain"]
    assert {d: r["n"] for d, r in by_domain.items()} == {d: s["validation"] for d, s in sources.items()}
    assert meta["metrics"]["validation_mean_accuracy"] == pytest.approx(
        np.mean([r["accuracy"] for r in by_domain.values()]), abs=1e-5
    )
    assert meta["metrics"]["served_precision"] == "fp32"
    for split in ("validation_pooled", "imdb_test_fp32"):
        m = meta["metrics"][split]
        assert {"accuracy", "precision", "recall", "f1", "confusion_matrix"} <= set(m)
        assert sum(map(sum, m["confusion_matrix"]["rows_true_cols_pred"])) == m["n"]
        (tn, fp), (fn, tp) = m["confusion_matrix"]["rows_true_cols_pred"]
        assert m["accuracy"] == pytest.approx((tp + tn) / m["n"], abs=1e-5)
        assert m["precision"] == pytest.approx(tp / max(1, tp + fp), abs=1e-5)
        assert m["recall"] == pytest.approx(tp / max(1, tp + fn), abs=1e-5)
    assert meta["metrics"]["imdb_test_fp32"]["n"] == 200
    assert meta["metrics"]["validation_pooled"]["n"] == sum(s["validation"] for s in sources.values())


def test_metadata_records_calibration_and_the_service_applies_it(artifact, meta):
    cal = meta["calibration"]
    assert cal["temperature"] == meta["temperature"] > 0
    assert 0 <= cal["ece_after"] <= cal["ece_before"] + 1e-3  # fitted by NLL, so ECE usually falls too
    rt = SentimentModel(artifact)
    assert rt.temperature == meta["temperature"]
    texts = ["great film", "awful and boring"]
    logits = rt.logits(rt.encode(texts))
    t = meta["temperature"]
    expected = np.exp(logits / t) / np.exp(logits / t).sum(1, keepdims=True)
    np.testing.assert_allclose(rt.predict(texts), expected, rtol=1e-5)


def test_metadata_records_behavioural_failure_rates(meta):
    b = meta["behaviour"]
    assert b["cases"] >= 300
    assert set(b["failure_rates"]) >= {"negation", "idioms", "contrast", "typos", "emoji", "mixed"}
    assert all(0 <= r <= 1 for r in b["failure_rates"].values())


def test_golden_check_passes(artifact):
    SentimentModel(artifact).check_golden()
    assert len(json.loads((artifact / "metadata.json").read_text())["golden"]["logits"]) == 5


def test_runtime_and_training_encode_reviews_identically(artifact, reviews):
    rt = SentimentModel(artifact)
    cfg = SentimentConfig.from_dict(rt.meta["config"])
    assert rt.encode([r.text for r in reviews]).ids == encode_reviews(reviews, rt.vocab, cfg)


# --- the parity gate ---------------------------------------------------------------------------


def test_parity_gate_passes_the_exported_model(sentiment_run, artifact, reviews):
    model, vocab, _ = load_checkpoint(sentiment_run)
    report = check_sentiment_parity(model, artifact / "model.onnx", vocab, reviews)
    assert report["max_abs_logit_diff"] <= 1e-4 and report["labels_identical"]


@pytest.mark.parametrize("param", ["rnn.bwd.weight_hh_l0", "rnn.fwd.bias_ih_l0", "embed.weight", "out.weight"])
def test_parity_gate_fails_on_an_altered_pytorch_model(sentiment_run, artifact, reviews, param):
    model, vocab, _ = load_checkpoint(sentiment_run)
    with torch.no_grad():
        w = dict(model.named_parameters())[param]
        w.add_(0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ParityError, match=r"sentiment logits differ by .* > 0.0001"):
        check_sentiment_parity(model, artifact / "model.onnx", vocab, reviews)


def test_parity_gate_fails_on_an_altered_onnx_model(sentiment_run, artifact, reviews, tmp_path):
    model, vocab, _ = load_checkpoint(sentiment_run)
    m = onnx.load(str(artifact / "model.onnx"))
    bias = model.out.bias.detach().numpy()
    (init,) = [
        i for i in m.graph.initializer if tuple(i.dims) == (2,) and np.allclose(onnx.numpy_helper.to_array(i), bias)
    ]
    init.CopyFrom(onnx.numpy_helper.from_array(bias + np.float32([1e-3, 0]), init.name))
    onnx.save(m, str(tmp_path / "altered.onnx"))
    with pytest.raises(ParityError, match="logits differ"):
        check_sentiment_parity(model, tmp_path / "altered.onnx", vocab, reviews)


def test_parity_gate_names_rows_whose_label_differs(sentiment_run, artifact, reviews, monkeypatch):
    # Logits within tolerance but a different label must fail too: loosen the tolerance and
    # shift the class bias so that every review changes side.
    model, vocab, _ = load_checkpoint(sentiment_run)
    monkeypatch.setattr(sent_export, "ATOL", 1e6)
    with torch.no_grad():
        logits = model(*make_batch(encode_reviews(reviews, vocab, model.cfg), list(range(len(reviews)))))
        margin = float((logits[:, 1] - logits[:, 0]).abs().max()) + 1
        pred = logits.argmax(1)
        model.out.bias[1] += margin if pred.float().mean() < 0.5 else -margin
    with pytest.raises(ParityError, match=r"labels differ between PyTorch and ONNX for batch rows \[\d+, \d+"):
        check_sentiment_parity(model, artifact / "model.onnx", vocab, reviews)


def test_export_writes_nothing_when_parity_fails(sentiment_run, data_dir, tmp_path, monkeypatch):
    # An exporter that does not compute what PyTorch computes (here: it exports a perturbed copy)
    # must leave --out untouched.
    real = sent_export.onnx_export

    def faulty_export(module, args, path, **kw):
        bad = copy.deepcopy(module)
        with torch.no_grad():
            bad.rnn.fwd.weight_hh_l0.mul_(1.5)
        real(bad, args, path, **kw)

    monkeypatch.setattr(sent_export, "onnx_export", faulty_export)
    out = tmp_path / "models" / "sentiment"
    out.parent.mkdir()
    with pytest.raises(ParityError, match="logits differ"):
        export_main(["sentiment", "--run", str(sentiment_run), "--out", str(out), "--data-dir", str(data_dir)])
    assert list(out.parent.iterdir()) == []
