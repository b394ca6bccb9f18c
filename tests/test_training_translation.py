"""Translation training and export (training.translation.*): a tiny attention seq2seq trained for a
few steps on synthetic Multi30k and pushed through the real export + parity code (conftest); the
parity gates catching an altered model; resume; the runtime's translations and alignments."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import training.translation.export as tr_export
import training.translation.from_artifact as from_artifact
import training.translation.train as tr_train
from service.runtime.artifacts import ArtifactError, load_metadata, sha256_file
from service.runtime.subword import EOS_ID, PAD_ID, Subword
from service.runtime.translation import DECODER, EMBEDDING, ENCODER, SPM_SRC, SPM_TGT, OnnxStepper, TranslationModel
from training.cross_cpu import has_bf16_matmul
from training.export import main as export_main
from training.onnx_io import ParityError, op_types
from training.rnn import length_mask
from training.translation.data import load_pair
from training.translation.evaluate import OUT_OF_DOMAIN, check_runtime
from training.translation.export import check_search_parity, check_step_parity
from training.translation.model import Seq2Seq, TranslationConfig, load_checkpoint
from training.translation.train import TrainConfig, bf16_lstm_runs, resolve_amp, train
from training.translation.translate import TorchStepper, translate_ids

TINY = TranslationConfig(
    src_vocab=120, tgt_vocab=120, embed_dim=16, enc_hidden=16, dec_hidden=32, attn_dim=16, dropout=0.1
)
TEXTS = ["A dog runs in the park.", "A big red man plays in the snow.", "A child sits."]


@pytest.fixture(scope="module")
def artifact(models_dir):
    return models_dir / "translate-en-de"


@pytest.fixture(scope="module")
def meta(artifact):
    return json.loads((artifact / "metadata.json").read_text())


@pytest.fixture(scope="module")
def onnx_stepper(artifact):
    sess = [ort.InferenceSession(str(artifact / f), providers=["CPUExecutionProvider"]) for f in (ENCODER, DECODER)]
    return OnnxStepper(*sess)


@pytest.fixture(scope="module")
def val_ids(artifact, data_dir):
    src, tgt = load_pair(data_dir, "val", "en", "de")
    return Subword(artifact / SPM_SRC).encode_batch(src), Subword(artifact / SPM_TGT).encode_batch(tgt)


def altered(run, **noise: float):
    """The run's model with Gaussian noise of the given scale added to the named parameters."""
    model, _ = load_checkpoint(run)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, scale in noise.items():
            params[name].add_(scale * torch.randn(params[name].shape, generator=g))
    return model


# --- the training run --------------------------------------------------------------------------


def test_training_run_writes_its_outputs(translation_run):
    for name in ("last.pt", "best.pt", "history.json", "report.json", "curve.png", "spm.src.model", "spm.tgt.model"):
        assert (translation_run / name).is_file(), name
    report = json.loads((translation_run / "report.json").read_text())
    assert report["epochs_run"] == 2 and [r["epoch"] for r in report["history"]] == [1, 2]
    assert json.loads((translation_run / "history.json").read_text()) == report["history"]
    # joint vocabulary: one SentencePiece model under both names, sized into the config
    assert sha256_file(translation_run / "spm.src.model") == sha256_file(translation_run / "spm.tgt.model")
    best = torch.load(translation_run / "best.pt", weights_only=False)
    assert best["config"]["src_vocab"] == len(Subword(translation_run / "spm.src.model")) <= 120
    assert best["state"]["best_bleu"] == max(r["val_bleu_greedy"] for r in report["history"])


def test_interrupted_run_resumes_at_the_next_epoch_as_if_never_stopped(
    translation_run, data_dir, tmp_path, monkeypatch, capsys
):
    tcfg = TrainConfig(epochs=2, batch_size=32, lr=5e-3)  # the conftest run, uninterrupted
    real = tr_train.bucketed_batches

    def power_cut(lengths, batch_size, *, shuffle, seed=0, **kw):
        if shuffle and seed == tcfg.seed + 2:
            raise RuntimeError("power cut during epoch 2")
        return real(lengths, batch_size, shuffle=shuffle, seed=seed, **kw)

    monkeypatch.setattr(tr_train, "bucketed_batches", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        train(tmp_path / "run", data_dir, TINY, tcfg)
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["state"]["epoch"] == 1
    monkeypatch.setattr(tr_train, "bucketed_batches", real)
    resumed = train(tmp_path / "run", data_dir, TINY, tcfg)
    assert "resumed from" in capsys.readouterr().out

    def strip(h):
        return [{k: v for k, v in r.items() if "seconds" not in k and not k.endswith("_per_s")} for r in h]  # timings

    straight = json.loads((translation_run / "report.json").read_text())["history"]
    assert strip(resumed["history"]) == strip(straight)
    a = torch.load(translation_run / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and a finished run trains no further
    assert train(tmp_path / "run", data_dir, TINY, tcfg)["history"] == resumed["history"]


@pytest.mark.parametrize("attention", [True, False])
def test_teacher_forcing_computes_what_step_by_step_decoding_does(attention):
    """Training's forward batches what does not depend on the recurrence; the exported decoder
    runs Decoder.forward one step at a time. Both must be the same function."""
    cfg = TranslationConfig(
        src_vocab=50, tgt_vocab=50, embed_dim=8, enc_hidden=6, dec_hidden=10, attn_dim=5, attention=attention
    )
    torch.manual_seed(0)
    model = Seq2Seq(cfg).eval()
    src, src_len, tgt_in = torch.randint(4, 50, (3, 7)), torch.tensor([7, 4, 2]), torch.randint(4, 50, (3, 5))
    with torch.no_grad():
        batched = model(src, src_len, tgt_in)
        states, keys, h, c, summary = model.encoder(src, src_len)
        mask, outs = length_mask(src_len, 7), []
        for t in range(tgt_in.shape[1]):
            r, h, c, _ = model.decoder(tgt_in[:, t], h, c, states, keys, mask, summary)
            outs.append(r)
        stepwise = model.decoder.out(torch.stack(outs, dim=1))
    torch.testing.assert_close(batched, stepwise)


def test_bf16_training_follows_the_fp32_run_where_the_cpu_runs_it_and_is_refused_where_not(
    translation_run, data_dir, tmp_path
):
    tcfg = TrainConfig(epochs=1, batch_size=32, lr=5e-3, amp="bf16")
    if not bf16_lstm_runs():  # an AVX2-only CPU: a clear refusal before any work, not oneDNN's error mid-run
        with pytest.raises(ValueError, match=r"cannot run torch's LSTM in bfloat16.*--amp auto or off"):
            train(tmp_path / "bf16", data_dir, TINY, tcfg)
        assert not (tmp_path / "bf16").exists()
    else:
        report = train(tmp_path / "bf16", data_dir, TINY, tcfg)
        assert report["train_config"]["amp"] == "bf16"
        fp32 = json.loads((translation_run / "report.json").read_text())["history"][0]
        # the same first epoch (same data, order and initial weights) with bfloat16 matrix products
        assert report["history"][0]["train_loss"] == pytest.approx(fp32["train_loss"], rel=0.03)
    with pytest.raises(ValueError, match="amp must be"):
        train(tmp_path / "fp16", data_dir, TINY, TrainConfig(epochs=1, amp="fp16"))


def test_amp_auto_takes_bf16_only_where_the_cpu_multiplies_it():
    auto = TrainConfig(amp="auto")
    assert resolve_amp(auto, flags="fpu sse4_2 avx2 fma").amp == "off"  # e.g. an AVX2-only AMD EPYC
    assert resolve_amp(auto, flags="avx512f avx512_vnni avx512_bf16").amp == "bf16"
    assert resolve_amp(auto, flags="avx2 amx_bf16 amx_tile").amp == "bf16"
    assert resolve_amp(TrainConfig(amp="off"), flags="amx_bf16").amp == "off"  # an explicit mode stays
    assert bf16_lstm_runs() or not has_bf16_matmul()  # auto's bf16 is always one this CPU runs
    runs, fails = (lambda: True), (lambda: False)  # whether torch runs a bfloat16 LSTM there
    assert resolve_amp(TrainConfig(amp="bf16"), flags="avx512f avx512_bf16", probe=runs).amp == "bf16"
    with pytest.raises(ValueError, match="cannot run torch's LSTM in bfloat16"):
        resolve_amp(TrainConfig(amp="bf16"), flags="avx2", probe=fails)


def test_amp_bf16_without_bfloat16_units_warns_that_it_is_emulated(capsys):
    resolve_amp(TrainConfig(amp="bf16"), announce=True, flags="avx512f avx512_vnni", probe=lambda: True)
    assert "emulated, slower than fp32" in capsys.readouterr().out
    resolve_amp(TrainConfig(amp="bf16"), announce=True, flags="avx512f amx_bf16", probe=lambda: True)
    assert capsys.readouterr().out == ""


def test_the_command_line_judges_amp_once(data_dir, tmp_path, capsys):
    """`--amp auto` is resolved (and announced) once, before the workers start, and the run's
    report records the concrete mode that trained."""
    tiny = "--src-vocab 120 --tgt-vocab 120 --embed-dim 16 --enc-hidden 16 --dec-hidden 32 --attn-dim 16"
    run = "--pair en-de --epochs 1 --limit 64 --batch-size 32 --amp auto"
    tr_train.main([*f"{run} {tiny}".split(), "--out", str(tmp_path / "run"), "--data-dir", str(data_dir)])
    assert capsys.readouterr().out.count("--amp auto:") == 1
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["train_config"]["amp"] == ("bf16" if has_bf16_matmul() else "off")


def test_speed_step_is_a_training_step_over_the_non_pad_targets():
    """training.translation.speed.step (which bench.training_speed times too): counts the batch's
    target tokens without padding, and its updates fit a fixed batch (the loss falls)."""
    from training.translation.speed import step

    torch.manual_seed(0)
    model = Seq2Seq(TINY).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = tr_train.make_batch([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]], [0, 1])
    assert step(model, opt, batch) == (4 + 1) + (1 + 1)  # each target and its end token

    def loss():
        model.eval()
        with torch.no_grad():
            lg = model(*batch[:3])
        model.train()
        return torch.nn.functional.cross_entropy(
            lg.reshape(-1, lg.shape[-1]), batch[3].reshape(-1), ignore_index=PAD_ID
        )

    before = loss()
    for _ in range(20):
        step(model, opt, batch)
    assert loss() < before / 2


def test_the_subset_softmax_is_the_full_one_over_the_whole_vocabulary_and_trains_only_its_classes():
    """summed_loss with `frequent`: over every class but padding it is the full cross-entropy (the
    padding class gets no probability from a trained model, but a fresh one gives it some, so the
    figures differ by that alone); over a few classes the loss is smaller, only those classes'
    output biases get a gradient, and frequent_targets ranks by count and adds EOS."""
    torch.manual_seed(0)
    model = Seq2Seq(TINY).eval()
    batch = tr_train.make_batch([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]], [0, 1])
    with torch.no_grad():
        model.decoder.out.bias[PAD_ID] = -1e4  # no probability on padding, as training leaves it
    every = torch.arange(1, TINY.tgt_vocab)
    full = tr_train.summed_loss(model, batch)
    torch.testing.assert_close(tr_train.summed_loss(model, batch, frequent=every), full, rtol=1e-5, atol=1e-5)
    few = tr_train.frequent_targets([[10, 10, 11], [10, 12, 12]], TINY.tgt_vocab, 2)
    assert few.tolist() == sorted([10, 12, EOS_ID])
    sub = tr_train.summed_loss(model, batch, frequent=few)
    assert sub < full
    sub.backward()
    classes = set(few.tolist()) | {10, 11, 12, 13, 14, EOS_ID}  # and the batch's own targets
    grad = model.decoder.out.bias.grad
    assert all((grad[i] != 0) == (i in classes) for i in range(TINY.tgt_vocab))


def test_focal_loss_weighs_each_target_by_how_badly_it_is_predicted():
    """focal_sum: gamma 0 is the summed (label-smoothed) cross-entropy; gamma 2 weights each
    target's cross-entropy by (1 - p)^2, so a target predicted at 0.9 weighs 0.01 and one at 0.1
    weighs 0.81; summed_loss passes gamma to both of its branches, the whole vocabulary and the
    subset one, and they agree over every class as without it."""
    logits = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.1, 0.45, 0.45]]))
    targets = torch.tensor([0, 0])
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(tr_train.focal_sum(logits, targets, 0.0, 0.0), ce.sum())
    torch.testing.assert_close(tr_train.focal_sum(logits, targets, 0.0, 2.0), 0.01 * ce[0] + 0.81 * ce[1])
    smooth = torch.nn.functional.cross_entropy(logits, targets, label_smoothing=0.1, reduction="none")
    torch.testing.assert_close(tr_train.focal_sum(logits, targets, 0.1, 2.0), 0.01 * smooth[0] + 0.81 * smooth[1])

    torch.manual_seed(0)
    model = Seq2Seq(TINY).eval()
    batch = tr_train.make_batch([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]], [0, 1])
    with torch.no_grad():
        model.decoder.out.bias[PAD_ID] = -1e4
    plain = tr_train.summed_loss(model, batch)
    focal = tr_train.summed_loss(model, batch, focal_gamma=2.0)
    assert 0 < focal < plain  # every weight is below 1
    every = torch.arange(1, TINY.tgt_vocab)
    torch.testing.assert_close(
        tr_train.summed_loss(model, batch, frequent=every, focal_gamma=2.0), focal, rtol=1e-5, atol=1e-5
    )


ADAPTIVE = TranslationConfig(
    src_vocab=60, tgt_vocab=60, embed_dim=8, enc_hidden=6, dec_hidden=10, attn_dim=5, adaptive_cutoffs=(10, 30)
)


def adaptive_model(seed: int = 0) -> Seq2Seq:
    """ADAPTIVE with a frequency order that is not the ids' own and cluster weights not zero."""
    torch.manual_seed(seed)
    model = Seq2Seq(ADAPTIVE).eval()
    model.decoder.set_vocab_order(torch.randperm(ADAPTIVE.tgt_vocab).float())
    with torch.no_grad():
        torch.nn.init.normal_(model.decoder.cluster.weight)
    return model


def test_the_adaptive_softmax_is_a_distribution_over_the_whole_vocabulary_and_its_loss_is_exact():
    """log_probs sums to one over every id; adaptive_loss (the head's rows for every target, a
    cluster's rows for its own) is the cross-entropy of that distribution, with padding excluded
    by summed_loss; label smoothing changes it; training's forward gives the same log-probabilities
    as decoding step by step does."""
    model = adaptive_model()
    r = torch.randn(9, ADAPTIVE.embed_dim)
    lp = model.decoder.log_probs(r)
    assert lp.shape == (9, ADAPTIVE.tgt_vocab)
    torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(9), atol=1e-5, rtol=0)
    targets = torch.tensor([int(model.decoder.vocab_order[k]) for k in (0, 5, 12, 29, 31, 59, 3, 20, 45)])
    exact = -lp.gather(1, targets[:, None]).sum()
    torch.testing.assert_close(model.decoder.adaptive_loss(r, targets), exact)
    assert not torch.isclose(model.decoder.adaptive_loss(r, targets, label_smoothing=0.1), exact)

    batch = tr_train.make_batch([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14]], [0, 1])
    with torch.no_grad():
        lg = model(*batch[:3])
        summed = tr_train.summed_loss(model, batch)
    ce = torch.nn.functional.cross_entropy(
        lg.reshape(-1, lg.shape[-1]), batch[3].reshape(-1), ignore_index=PAD_ID, reduction="sum"
    )
    torch.testing.assert_close(summed, ce)
    src, src_len, tgt_in = batch[:3]
    with torch.no_grad():
        states, keys, h, c, summary = model.encoder(src, src_len)
        mask, outs = length_mask(src_len, src.shape[1]), []
        for t in range(tgt_in.shape[1]):
            r_t, h, c, _ = model.decoder(tgt_in[:, t], h, c, states, keys, mask, summary)
            outs.append(model.decoder.log_probs(r_t))
    torch.testing.assert_close(lg, torch.stack(outs, dim=1))


def test_the_adaptive_softmax_multiplies_only_the_rows_its_targets_need():
    """The speed of the adaptive softmax: targets in the head and the first cluster leave the last
    cluster's output rows without a gradient; the head's rows always get one."""
    model = adaptive_model()
    order = model.decoder.vocab_order
    r = torch.randn(4, ADAPTIVE.embed_dim)
    model.decoder.adaptive_loss(r, order[torch.tensor([0, 3, 12, 25])]).backward()
    grad = model.decoder.out.bias.grad
    assert bool((grad[order[:30]] != 0).all())
    assert bool((grad[order[30:]] == 0).all())


def test_the_vocabulary_order_ranks_ids_by_count_and_the_cutoffs_are_checked():
    """set_vocab_order: most frequent first, ties by id, and vocab_rank its inverse; the cutoffs
    must increase within the vocabulary, and read back from JSON (a list) they are the same."""
    model = Seq2Seq(ADAPTIVE)
    counts = torch.zeros(ADAPTIVE.tgt_vocab)
    counts[[7, 3, 9]] = torch.tensor([5.0, 9.0, 5.0])
    model.decoder.set_vocab_order(counts)
    assert model.decoder.vocab_order[:4].tolist() == [3, 7, 9, 0]
    assert all(int(model.decoder.vocab_rank[i]) == k for k, i in enumerate(model.decoder.vocab_order.tolist()))
    assert TranslationConfig.from_dict(json.loads(json.dumps(ADAPTIVE.to_dict()))) == ADAPTIVE
    for cuts in ((30, 10), (0, 10), (10, 60), (10, 10)):
        with pytest.raises(ValueError, match="adaptive_cutoffs"):
            TranslationConfig(tgt_vocab=60, src_vocab=60, adaptive_cutoffs=cuts)


def test_an_adaptive_model_exports_with_step_parity_and_reads_back_from_its_onnx_files(tmp_path):
    """The decoder step's ONNX graph computes the same whole-vocabulary log-probabilities as
    PyTorch (the frequency order travels as two initializers), and from_artifact reads every
    weight and the order back."""
    model = adaptive_model(seed=1)
    tr_export.export_onnx(model, tmp_path)
    sess = [ort.InferenceSession(str(tmp_path / f), providers=["CPUExecutionProvider"]) for f in (ENCODER, DECODER)]
    rng = np.random.default_rng(0)
    src = [rng.integers(4, 60, size=n).tolist() for n in (7, 3, 5, 9)]
    tgt = [rng.integers(4, 60, size=n).tolist() for n in (6, 2, 8, 4)]
    parity = check_step_parity(model, OnnxStepper(*sess), src, tgt, batch_size=4, max_batches=1)
    assert parity["steps_compared"] == 8 and parity["step_max_abs_diff"] <= tr_export.STEP_ATOL
    back = from_artifact.state_dict_from_artifact(tmp_path, ADAPTIVE)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(back[k], v, rtol=0, atol=0, msg=k)


# --- the exported artifact ---------------------------------------------------------------------


def test_a_shipped_artifact_reads_back_into_the_exact_weights_it_was_exported_from(
    artifact, translation_run, data_dir, tmp_path, monkeypatch
):
    """from_artifact: the tiny export's ONNX files give back every weight of the run's best.pt
    exactly, with the tokenizers beside them, and a later stage trains from them (--init); read
    with the LSTM gates in ONNX order (a wrong mapping) the weights fail the parity check and
    nothing is written."""
    run = tmp_path / "from-artifact"
    parity = from_artifact.run_from_artifact(artifact, run)
    assert parity["step_max_abs_diff"] <= tr_export.STEP_ATOL and parity["steps_compared"] > 0
    back = torch.load(run / "best.pt", weights_only=False)
    original = torch.load(translation_run / "best.pt", weights_only=False)
    assert back["config"] == original["config"]
    assert set(back["model"]) == set(original["model"])
    for k, v in original["model"].items():
        torch.testing.assert_close(back["model"][k], v, rtol=0, atol=0, msg=k)
    assert (run / SPM_SRC).read_bytes() == (artifact / SPM_SRC).read_bytes()

    stage = tmp_path / "stage"
    train(
        stage,
        data_dir,
        TranslationConfig.from_dict(back["config"]),
        TrainConfig(epochs=1, batch_size=32, init=str(run / "best.pt")),
    )
    assert json.loads((stage / "history.json").read_text())[0]["epoch"] == 1

    monkeypatch.setattr(from_artifact, "_lstm_gates", lambda w, hidden: w)
    with pytest.raises(ParityError):
        from_artifact.run_from_artifact(artifact, tmp_path / "wrong")
    assert not (tmp_path / "wrong" / "best.pt").exists()


def test_onnx_encoder_has_native_lstm_nodes_and_no_loops(artifact):
    enc = onnx.load(str(artifact / ENCODER)).graph
    assert sum(n.op_type == "LSTM" for n in enc.node) == 2  # both directions
    assert not (op_types(artifact / ENCODER) | op_types(artifact / DECODER)) & {"Loop", "Scan"}


def test_onnx_interfaces_have_dynamic_batch_and_source_axes(artifact, meta):
    def dims(path):
        g = onnx.load(str(path)).graph
        return {
            v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*g.input, *g.output]
        }

    enc, dec = dims(artifact / ENCODER), dims(artifact / DECODER)
    assert enc["src_ids"] == ["batch", "src_len"] and enc["src_lengths"] == ["batch"]
    assert enc["enc_states"][:2] == enc["enc_keys"][:2] == ["batch", "src_len"]
    assert dec["prev_tokens"] == ["rows"] and dec["src_mask"] == ["rows", "src_len"]
    assert dec["enc_states"][:2] == dec["enc_keys"][:2] == ["rows", "src_len"]
    assert dec["h"][0] == dec["c"][0] == dec["log_probs"][0] == "rows"
    assert dec["attention"] == ["rows", "src_len"]
    assert [i["name"] for i in meta["interface"]["decoder"]["inputs"]] == [
        "prev_tokens",
        "h",
        "c",
        "enc_states",
        "enc_keys",
        "src_mask",
        "top_k",  # optional (it has a default): how many of each row's best tokens to return
    ]
    assert dec["top_log_probs"] == dec["top_ids"] == ["rows", "k"]


def test_metadata_records_parity_and_every_file(artifact, meta):
    step, search = meta["parity"]["step"], meta["parity"]["beam_search"]
    assert step["step_max_abs_diff"] <= step["atol"] == 1e-4 and step["steps_compared"] > 0
    assert search["sentences"] == 40 and search["identical_fraction"] >= 0.99 and search["beam_size"] == 5
    on_disk = {p.name for p in artifact.iterdir() if p.is_file()} - {"metadata.json"}
    assert (
        set(meta["files"])
        == on_disk
        >= {ENCODER, DECODER, SPM_SRC, SPM_TGT, EMBEDDING, "bleu_by_length.png", "training_curve.png"}
    )
    for name, digest in meta["files"].items():
        assert sha256_file(artifact / name) == digest, name
    assert meta["task"] == "translation" and meta["decoding"]["beam_size"] == 5
    for split in ("validation", "test"):
        assert {"bleu", "chrf", "bleu_lc_tok"} <= set(meta["metrics"][split]) and meta["metrics"][split]["n"] == 40


def test_artifact_ships_the_runs_tokenizers(artifact, translation_run):
    for name in (SPM_SRC, SPM_TGT):
        assert sha256_file(artifact / name) == sha256_file(translation_run / name)


def test_golden_check_passes(artifact):
    TranslationModel(artifact).check_golden()


def test_onnx_and_pytorch_translate_alike(artifact, translation_run):
    tm = TranslationModel(artifact)
    model, _ = load_checkpoint(translation_run)
    ids = tm.encode_texts(TEXTS)
    for beam in (1, 3):
        ref = translate_ids(TorchStepper(model), ids, beam_size=beam, alpha=tm.alpha)
        got = tm.translate_ids(ids, beam_size=beam)
        assert [h[0].tokens for h in got] == [h[0].tokens for h in ref]
        np.testing.assert_allclose([h[0].score for h in got], [h[0].score for h in ref], atol=1e-4)


# --- the runtime: n-best and alignments --------------------------------------------------------


def test_runtime_alignment_has_one_row_per_target_token(artifact):
    tm = TranslationModel(artifact)
    src = tm.encode_texts(TEXTS)
    hyps = tm.translate(TEXTS, beam_size=4, n_best=3)
    width = max(len(s) for s in src)  # one batch: attention is as wide as the longest source
    for ids, hs in zip(src, hyps, strict=True):
        assert 1 <= len(hs) <= 3 and [h.score for h in hs] == sorted((h.score for h in hs), reverse=True)
        h = hs[0]
        assert h.tokens, "the tiny model translates to something"
        assert h.attention.shape == (len(h.tokens) + int(h.finished), width)
        assert np.abs(h.attention[:, len(ids) :]).max(initial=0) < 1e-6  # padding gets no attention
        al = tm.alignment(ids, h)
        assert al["source_tokens"] == tm.src_tok.pieces(ids) and al["target_tokens"] == tm.tgt_tok.pieces(h.tokens)
        w = np.asarray(al["weights"])
        assert w.shape == (len(h.tokens), len(ids))  # the EOS row dropped, padding columns dropped
        np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-3)
        assert tm.detok(h) == tm.tgt_tok.decode(h.tokens)


def test_runtime_respects_max_length(artifact):
    tm = TranslationModel(artifact)
    for beam in (1, 3):
        for h in tm.translate(TEXTS, beam_size=beam, max_length=2):
            assert len(h[0].tokens) + int(h[0].finished) <= 2


# --- the parity gates --------------------------------------------------------------------------


def test_step_parity_passes_the_exported_model(translation_run, onnx_stepper, val_ids):
    model, _ = load_checkpoint(translation_run)
    report = check_step_parity(model, onnx_stepper, *val_ids)
    assert report["step_max_abs_diff"] <= 1e-4 and report["steps_compared"] > 0


@pytest.mark.parametrize(
    "param",
    ["decoder.cell.weight_hh", "decoder.readout.bias", "decoder.query.weight", "decoder.v.weight", "decoder.out.bias"],
)
def test_step_parity_fails_on_an_altered_decoder(translation_run, onnx_stepper, val_ids, param):
    with pytest.raises(ParityError, match=r"decoder step 0: log-probs differ by .* > 0.0001"):
        check_step_parity(altered(translation_run, **{param: 0.05}), onnx_stepper, *val_ids)


def test_step_parity_fails_on_an_altered_encoder(translation_run, onnx_stepper, val_ids):
    with pytest.raises(ParityError, match="differ"):
        check_step_parity(altered(translation_run, **{"encoder.rnn.bwd.weight_hh_l0": 0.05}), onnx_stepper, *val_ids)


def test_search_parity_fails_when_translations_differ(translation_run, onnx_stepper, val_ids):
    model, _ = load_checkpoint(translation_run)
    assert check_search_parity(model, onnx_stepper, val_ids[0], beam=3, alpha=0.6)["identical_fraction"] == 1.0
    with torch.no_grad():
        model.decoder.out.bias[EOS_ID] += 50.0  # PyTorch now stops at once; ONNX does not
    with pytest.raises(ParityError, match=r"beam search: only 0.00% of 40 translations identical"):
        check_search_parity(model, onnx_stepper, val_ids[0], beam=3, alpha=0.6)


def test_export_writes_nothing_when_parity_fails(translation_run, data_dir, tmp_path, monkeypatch):
    real = tr_export.export_onnx

    def faulty_export(model, out):  # exports a decoder that differs from the checkpoint's
        bad = copy.deepcopy(model)
        with torch.no_grad():
            bad.decoder.readout.weight.mul_(1.1)
        real(bad, out)

    monkeypatch.setattr(tr_export, "export_onnx", faulty_export)
    out = tmp_path / "models" / "translate-en-de"
    out.parent.mkdir()
    with pytest.raises(ParityError, match="decoder step"):
        export_main(["translation", "--run", str(translation_run), "--out", str(out), "--data-dir", str(data_dir)])
    assert list(out.parent.iterdir()) == []


def test_export_writes_metadata_once_from_measured_values(translation_run, data_dir, tmp_path, monkeypatch):
    """The artifact's metadata.json is written once (the cross-CPU measurement writes its own into a
    staged copy elsewhere)."""
    writes = []
    real = Path.write_text
    out = tmp_path / "translate-en-de"

    def counting(self, text, *args, **kw):
        if self == out / "metadata.json":
            writes.append(json.loads(text))
        return real(self, text, *args, **kw)

    monkeypatch.setattr(Path, "write_text", counting)
    out.mkdir()
    meta = tr_export.export_translation(translation_run, out, data_dir, quantize=True, limit_eval=20)
    assert len(writes) == 1 and writes[0] == meta  # once, with the int8 figures and the score guide in it
    assert {"metrics", "golden", "score_guide", "selection"} <= set(meta) and "int8" in meta["metrics"]
    load_metadata(out, task="translation")


def test_folder_is_small(artifact):
    assert 0 < sum(p.stat().st_size for p in artifact.iterdir()) < 40e6


# --- evaluation against the no-attention baseline ------------------------------------------------


def test_baseline_comparison_by_source_length(artifact, data_dir, tmp_path):
    from dataclasses import replace

    from training.translation.evaluate import BUCKETS, evaluate_artifact

    # A no-attention run with its own, smaller vocabulary: translating with the artifact's
    # tokenizer instead of the baseline's own would feed it ids it has no embedding for.
    base_run = tmp_path / "baseline"
    cfg = replace(TINY, attention=False, src_vocab=48, tgt_vocab=48)
    report = train(base_run, data_dir, cfg, TrainConfig(epochs=1, batch_size=32, lr=5e-3))
    assert not report["config"]["attention"]
    assert report["config"]["src_vocab"] < len(Subword(artifact / SPM_SRC))
    out = tmp_path / "eval"
    out.mkdir()
    m = evaluate_artifact(TranslationModel(artifact), data_dir, out, baseline_run=base_run, limit=40)
    tables = m["test_bleu_by_source_length"]
    assert list(tables) == ["attention (shipped)", "no attention (baseline)"]
    for rows in tables.values():
        assert sum(r["n"] for r in rows) == 40 and len(rows) <= len(BUCKETS)
        assert all(0 <= r["bleu"] <= 100 for r in rows)
    assert m["baseline_no_attention_test"]["n"] == 40 and 0 <= m["baseline_no_attention_test"]["bleu"] <= 100
    assert json.loads((out / "bleu_by_length.json").read_text()) == tables
    assert (out / "bleu_by_length.png").stat().st_size > 5000

    # The CLI's --update-artifact writes the comparison into a shipped artifact, keeping its int8 figures.
    from training.translation.evaluate import main as evaluate_main

    art = tmp_path / "translate-en-de"
    shutil.copytree(artifact, art)
    meta = json.loads((art / "metadata.json").read_text())
    meta["metrics"]["int8"] = {"shipped": False, "note": "kept"}
    (art / "metadata.json").write_text(json.dumps(meta))
    evaluate_main(
        ["--artifact", str(art), "--baseline-run", str(base_run), "--data-dir", str(data_dir), "--update-artifact"]
    )
    updated = load_metadata(art, task="translation")  # every hash rewritten and verified
    assert updated["metrics"]["test_bleu_by_source_length"] == tables
    assert updated["metrics"]["baseline_no_attention_test"]["bleu"] == m["baseline_no_attention_test"]["bleu"]
    assert updated["metrics"]["int8"] == {"shipped": False, "note": "kept"}
    assert json.loads((art / "bleu_by_length.json").read_text()) == tables


# --- the card: what was chosen on which split, and how to read `score` --------------------------


def test_every_choice_is_recorded_with_its_split_and_test_is_never_one(meta):
    sel = meta["selection"]
    assert {"checkpoint", "vocabulary", "decoding", "score_threshold"} <= set(sel)
    assert all(s["split"] in ("validation", None) for k, s in sel.items() if k != "rule")
    assert sel["checkpoint"]["value"] == meta["training"]["best_val_bleu_greedy_pytorch"]
    assert sel["score_threshold"]["value"] == meta["score_guide"]["threshold"]


def test_score_guide_is_measured_on_validation_and_out_of_domain_text(artifact, meta, data_dir):
    g = meta["score_guide"]
    assert g["validation"]["n"] == 40 and sum(b["n"] for b in g["validation"]["bands"]) == 40
    p5 = g["validation"]["percentiles"]["5"]
    assert g["threshold"] <= p5 < g["threshold"] + 0.5 + 0.01  # p5 (rounded to 0.01) rounded down to 0.5
    assert [o["text"] for o in g["out_of_domain"]] == OUT_OF_DOMAIN
    tm = TranslationModel(artifact)
    hyps = tm.translate(OUT_OF_DOMAIN)
    assert [o["translation"] for o in g["out_of_domain"]] == [tm.detok(h[0]) for h in hyps]
    below = sum(h[0].score < g["threshold"] for h in hyps)
    assert g["out_of_domain_below_threshold"] == below
    card = (artifact / "README.md").read_text(encoding="utf-8")
    assert "image captions" in card and f"below {g['threshold']:.2f}" in card and OUT_OF_DOMAIN[0] in card


def test_the_runtime_check_refuses_a_card_that_misquotes_the_model(artifact, meta, tmp_path):
    check_runtime(artifact, meta)
    lying = copy.deepcopy(meta)
    lying["score_guide"]["out_of_domain"][0]["translation"] = "Bitte senden Sie mir die Rechnung bis Freitag."
    with pytest.raises(ArtifactError, match="the card says"):
        check_runtime(artifact, lying)
