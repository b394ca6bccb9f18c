"""The general-domain translation recipe of issue 21 (training.translation.data, train.py's
corpus, batching and checkpoints) on a small synthetic copy of the staged data."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import training.translation.train as tr_train
from service.runtime.subword import UNK_ID, Subword
from tests.synthetic import write_general, write_multi30k
from training.translation.data import load_general, tatoeba_split
from training.translation.model import TranslationConfig
from training.translation.train import TrainConfig, parse_weights, token_batches, train, worker_steps

TINY = TranslationConfig(
    src_vocab=400, tgt_vocab=400, embed_dim=16, enc_hidden=16, dec_hidden=32, attn_dim=16, dropout=0.1
)
GENERAL = TrainConfig(
    epochs=2,
    corpus="general",
    weights="tatoeba=1,news=0.5,multi30k=2",
    token_budget=400,
    batch_size=32,
    lr=5e-3,
    schedule="cosine",
    warmup_steps=5,
    byte_fallback=True,
    split_digits=True,
    val_max=15,
    copy_through=True,
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("general-data")
    write_multi30k(root)
    write_general(root)
    return root


def test_tatoeba_slice_is_deterministic_and_never_shares_a_source_with_training(data_dir):
    a = tatoeba_split(data_dir, "en", "de", n_val=60)
    b = tatoeba_split(data_dir, "en", "de", n_val=60)
    assert a == b
    train_src = {s.lower() for s in a["train"][0]}
    assert 60 <= len(a["val"][0]) < 70 and not train_src & {s.lower() for s in a["val"][0]}
    assert len(a["train"][0]) + len(a["val"][0]) == 550
    assert tatoeba_split(data_dir, "en", "de", n_val=60, seed=1)["val"] != a["val"]


def test_general_corpus_has_three_sources_and_three_validation_sets(data_dir):
    c = load_general(data_dir, "en", "fr")
    assert list(c.train) == ["tatoeba", "news", "multi30k"]
    assert list(c.valid) == ["tatoeba", "newstest2013", "multi30k"]
    assert [len(s) for s, _ in c.valid.values()][1:] == [40, 40]
    src, tgt, names = c.mixture(parse_weights("tatoeba=1,news=0.5,multi30k=2"))
    assert names.count("tatoeba") == len(c.train["tatoeba"][0])
    assert names.count("news") == 40 and names.count("multi30k") == 1200
    assert len(src) == len(tgt) == len(names)
    assert c.mixture({"news": 0})[2].count("news") == 0


def test_token_batches_cover_every_pair_once_within_the_budget():
    lengths = [1 + (i * 7) % 40 for i in range(1000)]
    batches = token_batches(lengths, 200, 16, shuffle=True, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert all(len(b) <= 16 and len(b) * max(lengths[i] for i in b) <= 200 for b in batches)
    assert batches == token_batches(lengths, 200, 16, shuffle=True, seed=3)


def test_worker_steps_give_each_worker_a_batch_of_about_the_same_cost():
    lengths = [1 + (i * 7) % 40 for i in range(2000)]
    batches = token_batches(lengths, 200, 16, shuffle=True, seed=3)
    steps = worker_steps(batches, lengths, 2, seed=5)
    assert sorted(i for st in steps for b in st for i in b) == list(range(2000))
    assert sorted(len(st) for st in steps)[1:] == [2] * (len(steps) - 1)  # an odd batch out may make one step of one
    assert steps == worker_steps(batches, lengths, 2, seed=5)
    assert worker_steps(batches, lengths, 1, seed=5) == [[b] for b in batches]  # one worker: the order as it was

    def waiting(steps):  # the tokens a step waits for beyond its batches' mean
        cost = [[len(b) * max(lengths[i] for i in b) for b in st] for st in steps]
        return sum(max(c) - sum(c) / len(c) for c in cost)

    consecutive = [batches[i : i + 2] for i in range(0, len(batches), 2)]
    assert waiting(steps) < 0.25 * waiting(consecutive)
    longest = [[max(lengths[i] for i in b) for b in st] for st in steps if len(st) == 2]
    assert sum(abs(a - b) for a, b in longest) <= 40  # neighbours in length order: the gaps add up to the range


def test_general_run_never_produces_unk_and_records_each_validation_set(data_dir, tmp_path):
    report = train(tmp_path / "run", data_dir, TINY, GENERAL)
    row = report["history"][-1]
    for key in ("val_bleu_tatoeba", "val_bleu_newstest2013", "val_bleu_multi30k", "train_tokens_per_s"):
        assert key in row
    mean = (row["val_bleu_tatoeba"] + row["val_bleu_newstest2013"] + row["val_bleu_multi30k"]) / 3
    assert row["val_bleu_greedy"] == pytest.approx(mean)
    tok = Subword(tmp_path / "run" / "spm.src.model")
    ids = tok.encode("Call Anna at 555-0199 on Monday. Ünïcødé ☃ 東京")
    assert UNK_ID not in ids
    assert tok.decode(ids) == "Call Anna at 555-0199 on Monday. Ünïcødé ☃ 東京"
    # one piece per digit (here byte pieces: the synthetic corpus has no digits)
    assert len([p for p in tok.pieces(tok.encode("555")) if p != "\u2581"]) == 3


def test_the_last_epochs_can_be_averaged_for_export(data_dir, tmp_path):
    """Each epoch's weights are saved at its end; load_checkpoint(run, n) is their mean."""
    from training.translation.model import load_checkpoint

    train(tmp_path / "run", data_dir, TINY, GENERAL)
    e1, e2 = (torch.load(tmp_path / "run" / f"epoch{e}.pt", weights_only=False)["model"] for e in (1, 2))
    model, ck = load_checkpoint(tmp_path / "run", average=2)
    assert ck["averaged_epochs"] == [1, 2]
    got = model.state_dict()
    assert all(torch.allclose(got[k], (e1[k] + e2[k]) / 2, atol=1e-6) for k in e1)
    assert not torch.equal(got["encoder.embed.weight"], e2["encoder.embed.weight"])
    with pytest.raises(FileNotFoundError, match=r"epoch0\.pt"):
        load_checkpoint(tmp_path / "run", average=3)
    _, ck = load_checkpoint(tmp_path / "run")
    assert "averaged_epochs" not in ck


def test_run_killed_mid_epoch_resumes_from_its_last_batch_checkpoint(data_dir, tmp_path, monkeypatch, capsys):
    straight = train(tmp_path / "straight", data_dir, TINY, GENERAL)
    tcfg = GENERAL.__class__(**{**GENERAL.__dict__, "checkpoint_minutes": 1e-9})  # a checkpoint after every batch
    real, calls = tr_train.make_batch, {"n": 0}

    def power_cut(*a):
        calls["n"] += 1
        if calls["n"] == 25:
            raise RuntimeError("power cut")
        return real(*a)

    monkeypatch.setattr(tr_train, "make_batch", power_cut)
    with pytest.raises(RuntimeError, match="power cut"):
        train(tmp_path / "run", data_dir, TINY, tcfg)
    ck = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ck["partial"]["step"] > 0
    monkeypatch.setattr(tr_train, "make_batch", real)
    resumed = train(tmp_path / "run", data_dir, TINY, tcfg)
    assert "batches into epoch" in capsys.readouterr().out

    def strip(h):
        return [{k: v for k, v in r.items() if "seconds" not in k and not k.endswith("_per_s")} for r in h]

    assert strip(resumed["history"]) == strip(straight["history"])
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == resumed["history"]


@pytest.fixture(scope="module")
def general_models(data_dir, tmp_path_factory):
    """A tiny general-domain en-de model trained and exported through the real code into a models dir."""
    from training.translation.export import export_translation

    run = tmp_path_factory.mktemp("general-run")
    train(run, data_dir, TINY, GENERAL)
    models = tmp_path_factory.mktemp("general-models")
    (models / "translate-en-de").mkdir()
    export_translation(run, models / "translate-en-de", data_dir, quantize=True, limit_eval=12)
    return models


def test_export_of_a_general_model_measures_every_validation_set_and_names_its_data(general_models):
    from service.runtime.translation import TranslationModel

    art = general_models / "translate-en-de"
    meta = json.loads((art / "metadata.json").read_text())
    assert meta["name"] == "general-en-de-attention" and meta["data"]["corpus"] == "general"
    assert set(meta["data"]["sources"]) == {"tatoeba", "news", "multi30k"}
    m = meta["metrics"]
    assert list(m["validation_sets"]) == ["tatoeba", "newstest2013", "multi30k"]
    mean = sum(x["bleu"] for x in m["validation_sets"].values()) / 3
    assert m["validation"]["bleu"] == pytest.approx(mean, abs=0.01) and m["test"]["n"] == 12
    q = m["int8"]
    assert q["validation_bleu_drop"] == pytest.approx(m["validation"]["bleu"] - q["validation"]["bleu"], abs=0.01)
    assert meta["selection"]["rule"].startswith("every choice reads the validation sets")
    mixture = "source weights tatoeba=1,news=0.5,multi30k=2 per epoch, set beforehand and not tuned"
    assert meta["selection"]["mixture"] == {"split": None, "criterion": mixture}
    card = (art / "README.md").read_text()
    assert f"- mixture, on no split: {mixture}." in card
    assert "CC-BY 2.0" in card and "validation: newstest2013" in card
    # three samples of each validation set, as translated at export
    assert [card.count(f"| {k} | ") for k in m["validation_sets"]] == [3, 3, 3]
    assert all(len(x["samples"]) == 3 for x in m["validation_sets"].values())
    TranslationModel(art, precision="auto").check_golden()


def test_a_general_model_copies_names_and_numbers_through_placeholders(general_models):
    """The artifact ships the lexicon its training learned (listed and hashed in metadata.json);
    the service masks the source with it and puts the strings back into the translation."""
    from service.runtime.decoding import Hypothesis
    from service.runtime.translation import COPY_LEXICON, TranslationModel

    art = general_models / "translate-en-de"
    meta = json.loads((art / "metadata.json").read_text())
    assert COPY_LEXICON in meta["files"] and "copy_through" in meta["tokenizer"]
    assert "Names and numbers: numbers, and the capitalized words" in (art / "README.md").read_text()
    tm = TranslationModel(art, precision="auto")
    assert tm.lexicon is not None and "Anna" not in tm.lexicon.counts
    (h,) = tm.translate(["Call Anna at 555-0199 today."], beam_size=2)[0][:1]
    assert h.slots == {"⟦X0⟧": "Anna", "⟦N0⟧": "555-0199"}
    source = tm.alignment(tm.encode_texts(["Call Anna at 555-0199 today."])[0], h)["source_tokens"]
    assert "⟦X0⟧" in source and "⟦N0⟧" in source and "5" not in source
    # whatever the tiny model says, a placeholder it emits comes back as the source's string
    ids = tm.tgt_tok.encode("⟦N0⟧ ⟦X0⟧ ⟦X1⟧")
    assert {"⟦N0⟧", "⟦X0⟧", "⟦X1⟧"} <= set(tm.tgt_tok.pieces(ids))
    said = Hypothesis(ids, 0.0, 0.0, np.zeros((len(ids) + 1, 1)), slots=h.slots)
    assert tm.detok(said) == "555-0199 Anna"
    (text,) = tm.translate_texts(["Call Anna at 555-0199 on Monday. Anna?"], beam_size=2)
    assert "⟦" not in text.text


@pytest.mark.slow
def test_quality_over_http_is_what_the_served_model_translates(general_models, data_dir, tmp_path):
    """python -m bench.translation_quality (issue 21's acceptance figures) starts the real server,
    translates each set over HTTP and scores it: the same BLEU and chrF as the served artifact
    translating the same sentences in-process at beam 5."""
    import subprocess
    import sys

    import sacrebleu

    from bench.translation_quality import load_set
    from service.runtime.translation import TranslationModel
    from training.translation.data import evenly

    out = tmp_path / "quality.json"
    cmd = [sys.executable, "-m", "bench.translation_quality", "--models-dir", str(general_models)]
    cmd += [
        "--data-dir",
        str(data_dir),
        "--limit",
        "10",
        "--per-request",
        "10",
        "--concurrency",
        "1",
        "--out",
        str(out),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [(x["pair"], x["set"], x["n"]) for x in report["results"]] == [
        ("en-de", s, 10) for s in ("tatoeba", "newstest2013", "multi30k_test2016")
    ]
    assert report["models"][0]["precision"] == "int8" and "| en-de | tatoeba | 10 |" in r.stdout
    tm = TranslationModel(general_models / "translate-en-de", precision="auto")
    for row in report["results"]:
        assert row["ok"] is None  # a --limit run is no verdict
        src, ref = evenly(load_set(data_dir, row["set"], "en", "de"), 10)
        hyps = [t.text for t in tm.translate_texts(src, beam_size=5)]
        assert row["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [ref]).score, abs=0.01)
        assert row["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [ref]).score, abs=0.01)


def test_vocab_probe_cuts_words_as_the_recipes_vocabulary_would(data_dir, tmp_path, capsys):
    from training.translation import vocab_probe

    texts = vocab_probe.training_text(data_dir, "en-de")
    assert any("straße" in t for t in texts) and any("street" in t for t in texts)  # both sides
    out = tmp_path / "cuts.json"
    args = ["--pair", "en-de", "--sizes", "320", "360", "--words", "woman", "snowpark", "--data-dir", str(data_dir)]
    vocab_probe.main([*args, "--out", str(out)])
    found = json.loads(out.read_text())["cuts"]
    assert list(found) == ["320", "360"]
    for by_word in found.values():
        assert {w: "".join(p) for w, p in by_word.items()} == {"woman": "▁woman", "snowpark": "▁snowpark"}
    assert len(found["360"]["woman"]) < len(found["320"]["woman"])  # a larger vocabulary keeps more of it
    assert "joint 360: woman ▁w o man, snowpark" in capsys.readouterr().out


@pytest.fixture(scope="module")
def one_epoch(data_dir, tmp_path_factory):
    """One epoch of GENERAL: a first stage, and the whole-vocabulary run to compare with."""
    out = tmp_path_factory.mktemp("one-epoch") / "run"
    return out, train(out, data_dir, TINY, dataclasses.replace(GENERAL, epochs=1))


def test_a_second_stage_starts_from_the_first_stages_weights_and_tokenizers(data_dir, one_epoch, tmp_path):
    """--init: the first run's tokenizers copied as they are and its weights loaded (with a zero
    learning rate they come out unchanged; a fresh model would not); a model of another shape is
    refused."""
    first = one_epoch[0]
    second = tmp_path / "second"
    stage = dataclasses.replace(GENERAL, epochs=1, lr=0.0, init=str(first / "best.pt"), weights="tatoeba=1")
    train(second, data_dir, TINY, stage)
    for name in ("spm.src.model", "spm.tgt.model"):
        assert (second / name).read_bytes() == (first / name).read_bytes()
    a, b = (torch.load(d / "best.pt", weights_only=False)["model"] for d in (first, second))
    assert all(torch.equal(a[k], b[k]) for k in a)
    wider = dataclasses.replace(TINY, dec_hidden=48)
    with pytest.raises(ValueError, match="is not this run's"):
        train(tmp_path / "third", data_dir, wider, stage)


def test_a_run_with_the_subset_softmax_trains_on_it_and_validates_on_the_whole_vocabulary(
    data_dir, one_epoch, tmp_path
):
    """--softmax-subset reaches the training loss (the same seed and batches train to another
    loss than the full softmax's), while validation stays on the whole vocabulary."""
    full = one_epoch[1]["history"][0]
    sub = train(tmp_path / "sub", data_dir, TINY, dataclasses.replace(GENERAL, epochs=1, softmax_subset=20))
    sub = sub["history"][0]
    assert sub["train_loss"] != pytest.approx(full["train_loss"], rel=1e-3)
    assert np.isfinite(sub["val_loss"]) and sub["val_loss"] > 0 and "val_bleu_tatoeba" in sub


def test_a_run_with_the_adaptive_softmax_ranks_its_targets_and_keeps_the_order_through_init_and_resume(
    data_dir, tmp_path
):
    """--adaptive-cutoffs: the run counts its training targets for the frequency order (EOS, on
    every target, in the head), saves it with the weights, and validates on the whole vocabulary; a
    second stage from it loads that order rather than counting its own mixture."""
    cfg = dataclasses.replace(TINY, adaptive_cutoffs=(40, 150))
    first = tmp_path / "first"
    report = train(first, data_dir, cfg, dataclasses.replace(GENERAL, epochs=1))
    row = report["history"][0]
    assert np.isfinite(row["val_loss"]) and row["val_loss"] > 0 and "val_bleu_tatoeba" in row
    model = torch.load(first / "best.pt", weights_only=False)["model"]
    order = model["decoder.vocab_order"]
    assert sorted(order.tolist()) == list(range(len(order))) and order.tolist() != sorted(order.tolist())
    assert int(model["decoder.vocab_rank"][tr_train.EOS_ID]) < cfg.adaptive_cutoffs[0]  # it ends every target: the head
    second = tmp_path / "second"
    train(second, data_dir, cfg, dataclasses.replace(GENERAL, epochs=1, weights="news=1", init=str(first / "best.pt")))
    assert torch.equal(torch.load(second / "best.pt", weights_only=False)["model"]["decoder.vocab_order"], order)


def test_a_staged_runs_card_names_every_stage_and_the_artifact_keeps_them(tmp_path):
    from training.translation.export import general_data, training_stages

    first = {"weights": "tatoeba=1,news=1,multi30k=3", "epochs": 6}
    torch.save({"train_config": first}, tmp_path / "first.pt")
    second = {"weights": "tatoeba=1,news=1,multi30k=1,deadline=20", "epochs": 1, "init": str(tmp_path / "first.pt")}
    assert training_stages(first) == ["mixture weights tatoeba=1,news=1,multi30k=3 for 6 epochs"]
    last = "mixture weights tatoeba=1,news=1,multi30k=1,deadline=20 for 1 epoch"
    ck = {"train_config": dict(second)}
    train = general_data(ck)["train"]
    assert f"multi30k=3 for 6 epochs, then {last}; deadline: the Tatoeba training pairs" in train
    # the artifact's train_config keeps the earlier stages, so a stage started from it names
    # them without the first run's files
    (tmp_path / "first.pt").unlink()
    assert ck["train_config"]["earlier_stages"] == training_stages(first)
    assert training_stages(ck["train_config"]) == [*training_stages(first), last]
    with pytest.raises(FileNotFoundError, match="is gone"):
        training_stages(second)


@pytest.mark.parametrize("pair", ["en-de", "en-fr"])
def test_make_train_translation_runs_the_stages_the_shipped_model_was_trained_by(pair):
    """`make train-translation PAIR=...` reproduces what ships: its last stage has the shipped
    model's mixture, schedule and sizes, and the stage before it the mixture the card names."""
    from pathlib import Path

    from tests.conftest import ROOT, make_dry_run

    meta = json.loads((ROOT / "models" / f"translate-{pair}" / "metadata.json").read_text())
    tc, cfg = meta["train_config"], meta["config"]
    lines = make_dry_run("train-translation", f"PAIR={pair}")
    commands = [words for words in lines if "training.translation.train" in words]
    (export,) = [words for words in lines if "training.export" in words]
    assert len(commands) == 2, lines

    def flags(words: list[str]) -> dict[str, str]:
        return {
            w: words[i + 1]
            for i, w in enumerate(words[:-1])
            if w.startswith("--") and not words[i + 1].startswith("--")
        }

    first, last = map(flags, commands)
    assert Path(last["--init"]).parent.name == Path(first["--out"]).name == f"translate-{pair}"
    assert (last["--weights"], int(last["--epochs"])) == (tc["weights"], tc["epochs"])
    for flag, key in [("--lr", "lr"), ("--warmup-steps", "warmup_steps"), ("--min-lr-frac", "min_lr_frac"),
                      ("--token-budget", "token_budget"), ("--batch-size", "batch_size"),
                      ("--max-train-len", "max_train_len")]:  # fmt: skip
        assert float(last[flag]) == float(tc[key]), flag
    assert last["--schedule"] == tc["schedule"] and float(last["--dropout"]) == cfg["dropout"]
    assert int(first["--src-vocab"]) == cfg["src_vocab"] and int(first["--tgt-vocab"]) == cfg["tgt_vocab"]
    assert tc["earlier_stages"] == [f"mixture weights {first['--weights']} for {first['--epochs']} epochs"]
    # the export reads the last stage and records how its mixture was chosen, as the shipped card does
    assert flags(export)["--run"] == last["--out"]
    assert flags(export).get("--mixture-choice") == meta["data"].get("mixture_choice")


def test_the_card_records_a_mixture_chosen_on_validation(general_models, monkeypatch):
    """`python -m training.export translation --mixture-choice TEXT` hands the text to the export,
    and the selection record then names validation as the split the mixture was chosen on."""
    import training.export
    from training.card import translation_selection

    meta = json.loads((general_models / "translate-en-de" / "metadata.json").read_text())
    meta["data"]["mixture_choice"] = "deadline=50 chosen over 20 on validation"
    assert translation_selection(meta)["mixture"] == {
        "split": "validation",
        "criterion": "source weights tatoeba=1,news=0.5,multi30k=2 per epoch, deadline=50 chosen over 20 on validation",
    }
    seen = {}

    def fake_export(run, out, data_dir, **kw):
        seen.update(kw)
        return {k: None for k in ("name", "version", "metrics", "parity")}

    monkeypatch.setattr(training.export, "export_translation", fake_export)
    monkeypatch.setattr(training.export, "install", lambda tmp, out: None)
    training.export.main(["translation", "--run", "r", "--out", str(general_models / "x"), "--mixture-choice", "why"])
    assert seen["mixture_choice"] == "why"
