"""Data-parallel training (training.parallel): N worker processes summing their gradients take
the step one process takes on the union of their batches; and a translation run with two
workers trains, validates and checkpoints as the single-process run does."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F

from service.runtime.subword import PAD_ID
from tests.synthetic import write_general, write_multi30k
from training.parallel import Group, spawn
from training.translation.model import Seq2Seq, TranslationConfig
from training.translation.train import TrainConfig, build_tokenizers, load_corpus, train, validate

NO_DROPOUT = TranslationConfig(
    src_vocab=50, tgt_vocab=50, embed_dim=8, enc_hidden=8, dec_hidden=16, attn_dim=8, dropout=0.0
)


def _batches(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, s_len, t_len in ((5, 7, 6), (3, 4, 9)):  # two batches of different sizes and lengths
        src = torch.randint(4, 50, (n, s_len), generator=g)
        lengths = torch.randint(2, s_len + 1, (n,), generator=g)
        lengths[0] = s_len
        tgt = torch.randint(4, 50, (n, t_len + 1), generator=g)
        tgt[1:, -3:] = PAD_ID  # padded targets, so the batches' token counts differ
        out.append((src, lengths, tgt[:, :-1], tgt[:, 1:]))
    return out


def _loss_sum(model, batch):
    s, sl, ti, to = batch
    lg = model(s, sl, ti)
    return F.cross_entropy(lg.reshape(-1, lg.shape[-1]), to.reshape(-1), ignore_index=PAD_ID, reduction="sum")


def _worker_grads(group: Group, out_dir):
    torch.manual_seed(0)
    model = Seq2Seq(NO_DROPOUT)
    batch = _batches()[group.rank]
    n = int((batch[3] != PAD_ID).sum())
    (n_all,) = group.sum_scalars(n)
    (_loss_sum(model, batch) / n_all).backward()
    group.sum_grads(model.parameters())
    torch.save({k: p.grad for k, p in model.named_parameters()}, out_dir / f"grads{group.rank}.pt")


def test_two_workers_take_the_step_of_one_process_on_both_batches(tmp_path):
    spawn(_worker_grads, 2, tmp_path)
    torch.manual_seed(0)
    model = Seq2Seq(NO_DROPOUT)
    batches = _batches()
    n = sum(int((b[3] != PAD_ID).sum()) for b in batches)
    (sum(_loss_sum(model, b) for b in batches) / n).backward()
    g0, g1 = torch.load(tmp_path / "grads0.pt"), torch.load(tmp_path / "grads1.pt")
    for name, p in model.named_parameters():
        assert torch.equal(g0[name], g1[name]), f"workers disagree on {name}"
        torch.testing.assert_close(g0[name], p.grad, rtol=1e-5, atol=1e-7, msg=f"{name} differs")
    # the test can fail: a worker's own gradient alone is not the union's
    torch.manual_seed(0)
    alone = Seq2Seq(NO_DROPOUT)
    (_loss_sum(alone, batches[0]) / n).backward()
    assert not torch.allclose(alone.encoder.rnn.fwd.weight_ih_l0.grad, model.encoder.rnn.fwd.weight_ih_l0.grad)


def test_one_worker_is_a_no_op():
    g = Group()
    assert g.lead and g.sum_scalars(3, 4.5) == [3.0, 4.5] and g.broadcast_ints(1, 2) == [1, 2]
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 2.0)
    g.sum_grads([p])
    assert p.grad.tolist() == [2.0, 2.0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel-data")
    write_multi30k(root)
    write_general(root)
    return root


TINY = TranslationConfig(
    src_vocab=400, tgt_vocab=400, embed_dim=16, enc_hidden=16, dec_hidden=32, attn_dim=16, dropout=0.1
)


def _train(group: Group, out, data_dir, tcfg):
    report = train(out, data_dir, TINY, tcfg, group)
    if group.lead:
        (out / "lead_report.json").write_text(json.dumps(report))
    else:
        assert report == {}


def test_a_two_worker_run_trains_validates_and_checkpoints_once_per_step_pair(data_dir, tmp_path):
    tcfg = TrainConfig(
        epochs=2, corpus="general", token_budget=400, batch_size=32, lr=5e-3, schedule="cosine", val_max=15, workers=2
    )
    spawn(_train, 2, tmp_path / "run", data_dir, tcfg)
    report = json.loads((tmp_path / "run" / "lead_report.json").read_text())
    assert report["epochs_run"] == 2 and report["train_config"]["workers"] == 2
    h = report["history"]
    assert h[1]["train_loss"] < h[0]["train_loss"]
    assert all("val_bleu_tatoeba" in r for r in h)
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    single = TrainConfig(**{**tcfg.__dict__, "workers": 1})
    # the same data in half as many optimizer steps
    alone = train(tmp_path / "alone", data_dir, TINY, single)
    ck1 = torch.load(tmp_path / "alone" / "last.pt", weights_only=False)
    steps, steps1 = ck["scheduler"]["last_epoch"], ck1["scheduler"]["last_epoch"]
    assert abs(2 * steps - steps1) <= 2  # (an odd batch count per epoch adds a step)
    assert alone["history"][0]["train_tokens_per_s"] > 0
    assert ck["state"]["history"][0]["train_loss"] == pytest.approx(h[0]["train_loss"])


def _validate(group: Group, out_dir, data_dir):
    torch.manual_seed(0)
    src_tok, tgt_tok, model, valid = _tiny_model_and_sets(out_dir, data_dir)
    row = validate(model, src_tok, tgt_tok, valid, 15, group=group)
    (out_dir / f"val{group.rank}.json").write_text(json.dumps(row))


def _tiny_model_and_sets(out_dir, data_dir):
    tcfg = TrainConfig(corpus="general", val_max=15)
    *_, vocab_src, vocab_tgt, valid = load_corpus(data_dir, TINY, tcfg)
    src_tok, tgt_tok = build_tokenizers(
        out_dir, dataclasses.replace(TINY, src_vocab=200, tgt_vocab=200), vocab_src, vocab_tgt
    )
    model = Seq2Seq(dataclasses.replace(TINY, src_vocab=len(src_tok), tgt_vocab=len(tgt_tok)))
    return src_tok, tgt_tok, model, valid


def test_two_workers_validate_half_each_and_agree_with_one_process(data_dir, tmp_path):
    """The workers share the validation batches and sentences; the figures are the single
    process's (loss to float rounding, BLEU exactly: the same translations, put back in order)."""
    torch.manual_seed(0)
    src_tok, tgt_tok, model, valid = _tiny_model_and_sets(tmp_path, data_dir)  # the workers load its tokenizer
    alone = validate(model, src_tok, tgt_tok, valid, 15)
    spawn(_validate, 2, tmp_path, data_dir)
    rows = [json.loads((tmp_path / f"val{r}.json").read_text()) for r in (0, 1)]
    assert rows[0] == rows[1]
    assert set(alone) == set(rows[0]) and len(valid) == 3
    for k, v in alone.items():
        assert rows[0][k] == pytest.approx(v, rel=1e-6), k
