"""Translation checkpoint -> verified ONNX encoder + decoder-step artifact (CLI: training.export).

In order: export both ONNX files, add the decoder's TopK and store the shared embedding once
(training.translation.optimize), prove parity with PyTorch on real validation batches, then
measure everything on the files themselves (golden outputs, validation and test figures, the
int8 decoder and its validation gate, the score guide), and write the card and metadata.json
once (training.translation.evaluate.publish), which the service's own class then re-checks.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from service.runtime.copythrough import PLACEHOLDERS, CopyLexicon, mask_pair
from service.runtime.decoding import pad_batch
from service.runtime.subword import BOS_ID, Subword
from service.runtime.translation import COPY_LEXICON, DECODER, ENCODER, SPM_SRC, SPM_TGT, OnnxStepper
from training.card import base_metadata, training_metadata
from training.onnx_io import ParityError, io_spec, onnx_export
from training.translation import optimize
from training.translation.data import GENERAL_DATA, MULTI30K_URL, evaluation_sets, evenly
from training.translation.decode_pool import decode_pool
from training.translation.evaluate import evaluate_artifact, publish, score_guide, served_files
from training.translation.model import Seq2Seq, load_checkpoint
from training.translation.translate import TorchStepper, onnx_stepper, onnx_translator, translate_ids

STEP_ATOL = 1e-4
MIN_IDENTICAL = 0.99
DECODING = {"beam_size": 5, "length_penalty": 0.6, "max_len_ratio": 1.5, "max_len_extra": 10}
GOLDEN_TEXTS = [
    "A man is riding a bicycle down the street.",
    "Two dogs play in the snow.",
    "A little girl in a pink dress is smiling.",
]


class EncoderExport(nn.Module):
    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, src_ids: Tensor, src_lengths: Tensor):
        states, keys, h, c, _ = self.encoder(src_ids, src_lengths)
        return states, keys, h, c


class DecoderStepExport(nn.Module):
    def __init__(self, model: Seq2Seq):
        super().__init__()
        self.decoder = model.decoder

    def forward(
        self, prev_tokens: Tensor, h: Tensor, c: Tensor, enc_states: Tensor, enc_keys: Tensor, src_mask: Tensor
    ):
        r, h, c, a = self.decoder(prev_tokens, h, c, enc_states, enc_keys, src_mask)
        return self.decoder.log_probs(r), h, c, a


def export_onnx(model: Seq2Seq, out: Path) -> None:
    ids, lens = pad_batch([[5, 6, 7, 8], [9, 10, 11]])
    src, sl = torch.from_numpy(ids), torch.from_numpy(lens)
    onnx_export(
        EncoderExport(model),
        (src, sl),
        out / ENCODER,
        inputs=["src_ids", "src_lengths"],
        outputs=["enc_states", "enc_keys", "h0", "c0"],
        dynamic={
            "src_ids": {0: "batch", 1: "src_len"},
            "src_lengths": {0: "batch"},
            "enc_states": {0: "batch", 1: "src_len"},
            "enc_keys": {0: "batch", 1: "src_len"},
            "h0": {0: "batch"},
            "c0": {0: "batch"},
        },
    )
    with torch.no_grad():
        states, keys, h, c, _ = model.encoder(src, sl)
    mask = torch.arange(src.shape[1])[None] < sl[:, None]
    prev = torch.full((2,), BOS_ID, dtype=torch.long)
    onnx_export(
        DecoderStepExport(model),
        (prev, h, c, states, keys, mask),
        out / DECODER,
        inputs=["prev_tokens", "h", "c", "enc_states", "enc_keys", "src_mask"],
        outputs=["log_probs", "h_out", "c_out", "attention"],
        dynamic={
            "prev_tokens": {0: "rows"},
            "h": {0: "rows"},
            "c": {0: "rows"},
            "enc_states": {0: "rows", 1: "src_len"},
            "enc_keys": {0: "rows", 1: "src_len"},
            "src_mask": {0: "rows", 1: "src_len"},
            "log_probs": {0: "rows"},
            "h_out": {0: "rows"},
            "c_out": {0: "rows"},
            "attention": {0: "rows", 1: "src_len"},
        },
    )


def check_step_parity(
    model: Seq2Seq,
    onnx: OnnxStepper,
    src: list[list[int]],
    tgt: list[list[int]],
    batch_size: int = 64,
    max_batches: int = 4,
) -> dict:
    """Encoder outputs, and one decoder step at a time, PyTorch vs ONNX, on real batches.

    Each component gets the same inputs on both sides: the encoders the same ids; each decoder
    step the same previous token, state and encoder memory (PyTorch's), teacher-forced along the
    reference. Both must agree within STEP_ATOL. How far the ONNX step drifts when it is fed the
    ONNX encoder's memory instead (both components' float error together) is reported too; the
    end-to-end gate for that is the beam-search comparison."""
    torch_step = TorchStepper(model)
    worst, n_steps, chained = 0.0, 0, 0.0
    order = np.argsort([len(s) for s in src])[::-1]  # longest first: most padding variety per batch
    picks = [order[i :: max(1, len(order) // (batch_size * max_batches))][:batch_size] for i in range(max_batches)]
    for idx in picks:
        ids, lens = pad_batch([src[i] for i in idx])
        st_t, mem_t = torch_step.encode(ids, lens)
        st_o, mem_o = onnx.encode(ids, lens)
        for k in ("states", "keys"):
            m = mem_t["mask"][:, :, None]
            worst = max(worst, float(np.abs((mem_t[k] - mem_o[k]) * m).max()))
        ref_tok = [tgt[i] for i in idx]
        tokens = np.full(len(idx), BOS_ID, dtype=np.int64)
        for t in range(min(max(len(r) for r in ref_tok), 30)):
            lp_t, st_t, a_t = torch_step.step(tokens, st_t, mem_t)
            lp_o, _, a_o = onnx.step(tokens, st_o, mem_t)
            chained = max(chained, float(np.abs(lp_t - onnx.step(tokens, st_o, mem_o)[0]).max()))
            d = float(np.abs(lp_t - lp_o).max())
            if d > STEP_ATOL:
                raise ParityError(
                    f"decoder step {t}: log-probs differ by {d:.3e} > {STEP_ATOL} "
                    f"(batch of {len(idx)}, source lengths {int(lens.min())}-{int(lens.max())})"
                )
            worst = max(worst, d, float(np.abs(a_t - a_o).max()))
            n_steps += 1
            tokens = np.array([r[t] if t < len(r) else 0 for r in ref_tok], dtype=np.int64)
            st_o = {k: v.copy() for k, v in st_t.items()}  # continue both from the same state
    if worst > STEP_ATOL:
        raise ParityError(f"encoder outputs or attention differ by {worst:.3e} > {STEP_ATOL}")
    return {
        "step_max_abs_diff": worst,
        "steps_compared": n_steps,
        "atol": STEP_ATOL,
        "method": "one decoder step from PyTorch's state and encoder memory, teacher-forced",
        "step_with_onnx_encoder_max_abs_diff": chained,
    }


def search_parity_options(beam: int, alpha: float) -> dict:
    """translate_ids's options for the beam-search parity check, the same for both searches."""
    return {
        "beam_size": beam,
        "alpha": alpha,
        "batch_size": 64,
        "max_ratio": DECODING["max_len_ratio"],
        "max_extra": DECODING["max_len_extra"],
        "max_cap": 256,
    }


def check_search_parity(model: Seq2Seq, onnx: OnnxStepper, src: list[list[int]], beam: int, alpha: float) -> dict:
    """Full beam search over every source, PyTorch vs ONNX step: at least 99% identical. The two
    searches run side by side, ONNX Runtime's in a thread (both release the GIL in their kernels),
    PyTorch on one thread meanwhile."""
    kw = search_parity_options(beam, alpha)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(1) as side:
            onnx_search = side.submit(translate_ids, onnx, src, **kw)
            ref = translate_ids(TorchStepper(model), src, **kw)
            got = onnx_search.result()
    finally:
        torch.set_num_threads(threads)
    same = [r[0].tokens == g[0].tokens for r, g in zip(ref, got, strict=True)]
    frac = float(np.mean(same))
    report = {
        "sentences": len(src),
        "identical": int(sum(same)),
        "identical_fraction": round(frac, 5),
        "beam_size": beam,
        "required": MIN_IDENTICAL,
    }
    if frac < MIN_IDENTICAL:
        bad = [i for i, s in enumerate(same) if not s][:5]
        raise ParityError(
            f"beam search: only {frac:.2%} of {len(src)} translations identical between PyTorch and "
            f"ONNX (need {MIN_IDENTICAL:.0%}); first differing sentences {bad}"
        )
    return report


PARITY_PER_SET = 500  # general recipe: parity sentences from each validation set


def training_stages(tc: dict) -> list[str]:
    """Each training stage's mixture and epochs, first to last, following `--init` back through
    the runs it started from: a stage's card must name the stages before it."""
    earlier: list[str] = list(tc.get("earlier_stages", []))  # an export records them (see general_data)
    if tc.get("init") and not earlier:
        init = Path(tc["init"])
        if not init.exists():
            raise FileNotFoundError(f"this run started from {init} (--init), which is gone: its data cannot be named")
        earlier = training_stages(torch.load(init, weights_only=False, map_location="cpu")["train_config"])
    return [*earlier, f"mixture weights {tc['weights']} for {tc['epochs']} epoch{'s' if tc['epochs'] != 1 else ''}"]


DEADLINE_SOURCE = (
    "deadline: the Tatoeba training pairs with a deadline 'by' whose reference marks it"
    " (training.translation.deadline_probe), less a held-out third"
)


def general_data(ck: dict, mixture_choice: str | None = None) -> dict:
    """metadata.json's "data" for the general-domain recipe: sources, terms, mixture, splits, and
    how the mixture was chosen on validation when it was (`mixture_choice`, for the card)."""
    tc = ck["train_config"]
    stages = training_stages(tc)
    if len(stages) > 1:  # into metadata.json's train_config too, so the artifact names them without the runs
        tc["earlier_stages"] = stages[:-1]
    mixture = ", then ".join(stages) + ("; " + DEADLINE_SOURCE if "deadline=" in tc["weights"] else "")
    return {
        **GENERAL_DATA,
        "corpus": "general",
        "train": f"Tatoeba (minus its validation slice) + WMT news + Multi30k train, {mixture}",
        "vocabulary_trained_on": "the union of the training text, each sentence once (no validation or test text)",
        **({"mixture_choice": mixture_choice} if mixture_choice else {}),
    }


def export_translation(
    run: Path,
    out: Path,
    data_dir: Path,
    *,
    version: str | None = None,
    baseline_run: Path | None = None,
    limit_eval: int = 0,
    quantize: bool = False,
    average: int = 0,
    mixture_choice: str | None = None,
) -> dict:
    """`quantize`: also derive the int8 decoder step (training.translation.optimize.int8_decoder),
    shipped only within its validation BLEU gate. `average` > 1: export the mean weights of the
    run's last `average` epochs instead of best.pt (compare the two exports on validation).
    `mixture_choice`: how the mixture's weights were chosen on validation, for the card; without
    it the card says they were set beforehand. Decodes run on every core (decode_pool)."""
    with decode_pool():
        return _export_translation(
            run, out, data_dir, version, baseline_run, limit_eval, quantize, average, mixture_choice
        )


def _export_translation(
    run: Path,
    out: Path,
    data_dir: Path,
    version: str | None,
    baseline_run: Path | None,
    limit_eval: int,
    quantize: bool,
    average: int,
    mixture_choice: str | None,
) -> dict:
    model, ck = load_checkpoint(run, average)
    cfg = model.cfg
    export_onnx(model, out)
    optimize.add_topk(out / DECODER)  # before parity: what is checked is what ships
    optimize.share_embedding(out)
    shutil.copy(run / "spm.src.model", out / SPM_SRC)
    shutil.copy(run / "spm.tgt.model", out / SPM_TGT)
    lexicon = None
    if ck["train_config"].get("copy_through"):
        shutil.copy(run / COPY_LEXICON, out / COPY_LEXICON)
        lexicon = CopyLexicon.load(out / COPY_LEXICON)
    src_tok, tgt_tok = Subword(out / SPM_SRC), Subword(out / SPM_TGT)
    corpus = ck["train_config"].get("corpus", "multi30k")
    # Parity on real validation sentences: all of Multi30k val (the caption recipe), or up to
    # PARITY_PER_SET of each validation set, evenly spaced (the general recipe).
    src_va, tgt_va = [], []
    for pair in evaluation_sets(data_dir, cfg.src_lang, cfg.tgt_lang, corpus)["validation"].values():
        s, t = evenly(pair, PARITY_PER_SET) if corpus != "multi30k" else pair
        src_va += s[:limit_eval] if limit_eval else s
        tgt_va += t[:limit_eval] if limit_eval else t
    if lexicon is not None:  # the model sees masked text
        src_va, tgt_va = (
            list(x) for x in zip(*(mask_pair(s, t, lexicon) for s, t in zip(src_va, tgt_va, strict=True)))
        )
    va_s, va_t = src_tok.encode_batch(src_va), tgt_tok.encode_batch(tgt_va)
    onnx = onnx_stepper(out, DECODER)
    parity = {"step": check_step_parity(model, onnx, va_s, va_t)}
    print("step parity", parity["step"], flush=True)
    parity["beam_search"] = check_search_parity(model, onnx, va_s, DECODING["beam_size"], DECODING["length_penalty"])
    print("search parity", parity["beam_search"], flush=True)

    fp32 = onnx_translator(out, DECODER, ck["config"], DECODING)
    hyps = fp32.translate(GOLDEN_TEXTS, beam_size=DECODING["beam_size"])
    if (run / "curve.png").exists():  # the training curve, shipped beside the model
        shutil.copy(run / "curve.png", out / "training_curve.png")
    name = f"{corpus}-{cfg.src_lang}-{cfg.tgt_lang}-{'attention' if cfg.attention else 'noattn'}"
    meta = {
        **base_metadata(name, "translation", version),
        **training_metadata(ck, "best_bleu", "best_val_bleu_greedy_pytorch"),
        "tokenizer": {
            "module": "service.runtime.subword",
            "kind": "sentencepiece unigram",
            "joint": cfg.joint_vocab,
            "src_vocab": len(src_tok),
            "tgt_vocab": len(tgt_tok),
            **(
                {
                    "copy_through": f"numbers, and the capitalized words {COPY_LEXICON} says the references keep "
                    f"verbatim, become placeholders ({PLACEHOLDERS[0]}...) that the translation gets back "
                    "(service.runtime.copythrough)"
                }
                if lexicon is not None
                else {}
            ),
        },
        "data": general_data(ck, mixture_choice)
        if corpus == "general"
        else {
            "dataset": "Multi30k task 1",
            "source": MULTI30K_URL,
            "citation": "Elliott et al., Multi30K: Multilingual English-German Image Descriptions, 2016"
            + ("; Elliott et al., 2017 (French)" if cfg.tgt_lang == "fr" else ""),
            "train": "train (29,000)",
            "validation": "val (1,014)",
            "test": "test_2016_flickr (1,000)",
        },
        "decoding": DECODING,
        "parity": parity,
        "interface": {"encoder": io_spec(out / ENCODER), "decoder": io_spec(out / DECODER)},
        "golden": {
            "texts": GOLDEN_TEXTS,
            "beam_size": DECODING["beam_size"],
            "translations": [fp32.detok(h[0]) for h in hyps],
            "scores": [round(h[0].score, 6) for h in hyps],
        },
        "metrics": evaluate_artifact(fp32, data_dir, out, baseline_run=baseline_run, limit=limit_eval, corpus=corpus),
    }
    if quantize:
        meta = optimize.int8_decoder(out, meta, data_dir, limit=limit_eval)
    meta["score_guide"] = score_guide(served_files(out, meta), data_dir, limit=limit_eval, corpus=corpus)
    return publish(out, meta)
