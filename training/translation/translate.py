"""Translate through the shared numpy search (service.runtime.decoding), with a PyTorch Seq2Seq
(`TorchStepper`) or with exported ONNX files (`onnx_translator`).

The same search runs over the ONNX step in the service, so PyTorch-vs-ONNX parity compares the
models and nothing else. `Translator` makes the calls the service's TranslationModel makes
(same tokenizers, truncation and search options); the export uses it on its files before
metadata.json exists, and the runtime's own class re-checks the result once it is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from service.runtime.copythrough import CopyLexicon, mask_batch, unmask
from service.runtime.decoding import Hypothesis, State, translate_batched
from service.runtime.providers import create_session
from service.runtime.subword import BOS_ID, EOS_ID, PAD_ID, Subword
from service.runtime.translation import COPY_LEXICON, ENCODER, MAX_SRC_TOKENS, SPM_SRC, SPM_TGT, OnnxStepper, with_slots
from training.rnn import length_mask
from training.translation.model import Seq2Seq


class TorchStepper:
    """encode() and step() of a Seq2Seq, numpy in and out."""

    def __init__(self, model: Seq2Seq):
        self.model = model.eval()

    @torch.no_grad()
    def encode(self, ids: np.ndarray, lens: np.ndarray) -> tuple[State, State]:
        src, sl = torch.from_numpy(ids), torch.from_numpy(lens)
        states, keys, h, c, summary = self.model.encoder(src, sl)
        mask = length_mask(sl, src.shape[1])
        memory = {"states": states.numpy(), "keys": keys.numpy(), "mask": mask.numpy(), "summary": summary.numpy()}
        return {"h": h.numpy(), "c": c.numpy()}, memory

    @torch.no_grad()
    def step(self, tokens: np.ndarray, state: State, memory: State) -> tuple[np.ndarray, State, np.ndarray]:
        t = torch.from_numpy
        r, h, c, a = self.model.decoder(
            t(tokens),
            t(state["h"]),
            t(state["c"]),
            t(memory["states"]),
            t(memory["keys"]),
            t(memory["mask"]),
            t(memory["summary"]),
        )
        return self.model.decoder.log_probs(r).numpy(), {"h": h.numpy(), "c": c.numpy()}, a.numpy()

    @torch.no_grad()
    def step_topk(self, tokens: np.ndarray, state: State, memory: State, m: int):
        """Each row's best m tokens (torch.topk), as the ONNX decoder's TopK output gives them."""
        logp, state, att = self.step(tokens, state, memory)
        vals, ids = torch.from_numpy(logp).topk(min(m, logp.shape[1]), dim=1)
        return vals.numpy(), ids.numpy(), state, att


def translate_ids(stepper, src: list[list[int]], **search) -> list[list[Hypothesis]]:
    """service.runtime.decoding.translate_batched with this project's special ids; `search` takes its
    options (beam_size, alpha, n_best, batch_size, max_ratio, max_extra, max_cap, ...)."""
    return translate_batched(stepper, src, bos=BOS_ID, eos=EOS_ID, pad=PAD_ID, **search)


class Translator:
    """Texts in, hypotheses out, through any stepper: what evaluation needs of a translator
    (translate, detok, alpha, src_lang, tgt_lang, pair), as TranslationModel offers it."""

    def __init__(
        self,
        stepper,
        src_tok: Subword,
        tgt_tok: Subword,
        *,
        src_lang: str,
        tgt_lang: str,
        decoding: dict,
        decoder_file: str = "pytorch",
        lexicon: CopyLexicon | None = None,
    ):
        self.lexicon = lexicon
        self.files: tuple | None = None  # onnx_translator's arguments, when it made this one
        self.stepper, self.src_tok, self.tgt_tok, self.decoder_file = stepper, src_tok, tgt_tok, decoder_file
        self.src_lang, self.tgt_lang, self.pair = src_lang, tgt_lang, f"{src_lang}-{tgt_lang}"
        self.alpha = float(decoding["length_penalty"])
        self.max_ratio, self.max_extra = float(decoding["max_len_ratio"]), int(decoding["max_len_extra"])

    def translate(self, texts: Sequence[str], *, beam_size: int = 5, n_best: int = 1) -> list[list[Hypothesis]]:
        masked, slots = mask_batch(texts, self.lexicon)
        ids = [s[:MAX_SRC_TOKENS] for s in self.src_tok.encode_batch(masked)]
        hyps = translate_ids(
            self.stepper,
            ids,
            beam_size=beam_size,
            n_best=n_best,
            alpha=self.alpha,
            max_ratio=self.max_ratio,
            max_extra=self.max_extra,
        )
        return with_slots(hyps, slots)

    def detok(self, h: Hypothesis) -> str:
        return unmask(self.tgt_tok.decode(h.tokens), h.slots)


def onnx_stepper(folder: Path, decoder_file: str) -> OnnxStepper:
    """The encoder and the given decoder-step file of an artifact folder, on CPU, one thread (as
    the runtime opens them by default), whether or not metadata.json is written yet."""
    return OnnxStepper(*(create_session(folder / f, "cpu", 1)[0] for f in (ENCODER, decoder_file)))


def onnx_translator(folder: Path, decoder_file: str, config: dict, decoding: dict) -> Translator:
    """A Translator over an artifact folder's ONNX files and SentencePiece models; its `files`
    say how to open it again (training.translation.decode_pool's workers do)."""
    tm = Translator(
        onnx_stepper(folder, decoder_file),
        Subword(folder / SPM_SRC),
        Subword(folder / SPM_TGT),
        src_lang=config["src_lang"],
        tgt_lang=config["tgt_lang"],
        decoding=decoding,
        decoder_file=decoder_file,
        lexicon=CopyLexicon.load(folder / COPY_LEXICON) if (folder / COPY_LEXICON).exists() else None,
    )
    tm.files = (folder, decoder_file, config, decoding)
    return tm


def run_translator(model: Seq2Seq, run: Path, decoding: dict) -> Translator:
    """A Translator over a PyTorch model of a training run folder: the run's own SentencePiece
    models, and its copy-through lexicon where it trained with one."""
    cfg = model.cfg
    lex = run / COPY_LEXICON
    return Translator(
        TorchStepper(model),
        Subword(run / "spm.src.model"),
        Subword(run / "spm.tgt.model"),
        src_lang=cfg.src_lang,
        tgt_lang=cfg.tgt_lang,
        decoding=decoding,
        lexicon=CopyLexicon.load(lex) if lex.exists() else None,
    )
