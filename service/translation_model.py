"""The translator at run time: verified artifact, SentencePiece, ONNX encoder + decoder step,
and the shared numpy search (service.decoding). Training's evaluation uses this same class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artifacts import ArtifactError, load_metadata
from service.decoding import Hypothesis, State, translate_batched
from service.providers import Device, create_session
from service.subword import BOS_ID, EOS_ID, PAD_ID, Subword

ENCODER, DECODER, SPM_SRC, SPM_TGT = "encoder.onnx", "decoder.onnx", "spm.src.model", "spm.tgt.model"
MAX_SRC_TOKENS = 256  # longer inputs are cut (the request limit on characters keeps this rare)


@dataclass
class Translation:
    text: str
    score: float
    hypothesis: Hypothesis
    source_ids: list[int]


class OnnxStepper:
    """encode() and step() over the two ONNX sessions; numpy in and out."""

    def __init__(self, encoder, decoder):
        self.encoder, self.decoder = encoder, decoder
        self.steps = 0  # decoder calls, for metrics

    def encode(self, ids: np.ndarray, lens: np.ndarray) -> tuple[State, State]:
        states, keys, h, c = self.encoder.run(None, {"src_ids": ids, "src_lengths": lens})
        mask = np.arange(ids.shape[1])[None, :] < lens[:, None]
        return {"h": h, "c": c}, {"states": states, "keys": keys, "mask": mask}

    def step(self, tokens: np.ndarray, state: State, memory: State) -> tuple[np.ndarray, State, np.ndarray]:
        self.steps += 1
        logp, h, c, attn = self.decoder.run(
            None,
            {
                "prev_tokens": tokens,
                "h": state["h"],
                "c": state["c"],
                "enc_states": memory["states"],
                "enc_keys": memory["keys"],
                "src_mask": memory["mask"],
            },
        )
        return logp, {"h": h, "c": c}, attn


class TranslationModel:
    def __init__(self, folder: Path, *, device: Device = "cpu", threads: int = 1):
        self.folder = Path(folder)
        self.meta = load_metadata(self.folder, required=(ENCODER, DECODER, SPM_SRC, SPM_TGT), task="translation")
        cfg = self.meta["config"]
        self.src_lang, self.tgt_lang = cfg["src_lang"], cfg["tgt_lang"]
        self.pair = f"{self.src_lang}-{self.tgt_lang}"
        self.src_tok, self.tgt_tok = Subword(self.folder / SPM_SRC), Subword(self.folder / SPM_TGT)
        enc, self.provider = create_session(self.folder / ENCODER, device, threads)
        dec, _ = create_session(self.folder / DECODER, device, threads)
        self.stepper = OnnxStepper(enc, dec)
        self.name, self.version = self.meta["name"], self.meta["version"]
        d = self.meta.get("decoding", {})
        self.alpha = float(d.get("length_penalty", 0.6))
        self.max_ratio, self.max_extra = float(d.get("max_len_ratio", 1.5)), int(d.get("max_len_extra", 10))

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        return [ids[:MAX_SRC_TOKENS] for ids in self.src_tok.encode_batch(list(texts))]

    def translate_ids(
        self,
        src: Sequence[Sequence[int]],
        *,
        beam_size: int = 5,
        n_best: int = 1,
        max_length: int | None = None,
        batch_size: int = 64,
    ) -> list[list[Hypothesis]]:
        """Hypotheses (n_best, best first) per source, in input order (service.decoding.translate_batched)."""
        return translate_batched(
            self.stepper,
            src,
            bos=BOS_ID,
            eos=EOS_ID,
            pad=PAD_ID,
            beam_size=beam_size,
            alpha=self.alpha,
            n_best=n_best,
            max_length=max_length,
            batch_size=batch_size,
            max_ratio=self.max_ratio,
            max_extra=self.max_extra,
        )

    def translate(self, texts: Sequence[str], **kw) -> list[list[Hypothesis]]:
        return self.translate_ids(self.encode_texts(texts), **kw)

    def detok(self, h: Hypothesis) -> str:
        return self.tgt_tok.decode(h.tokens)

    def alignment(self, src_ids: Sequence[int], h: Hypothesis) -> dict:
        """Source and target subwords and the [target][source] attention weights (EOS row dropped)."""
        w = h.attention[: len(h.tokens), : len(src_ids)]
        return {
            "source_tokens": self.src_tok.pieces(list(src_ids)),
            "target_tokens": self.tgt_tok.pieces(h.tokens),
            "weights": np.round(w, 4).tolist(),
        }

    def check_golden(self, atol: float = 1e-4) -> None:
        g = self.meta["golden"]
        hyps = self.translate(g["texts"], beam_size=int(g.get("beam_size", 5)))
        got = [self.detok(h[0]) for h in hyps]
        if got != g["translations"]:
            raise ArtifactError(f"{self.folder}: golden-input check failed: {got!r} != {g['translations']!r}")
        diff = max(abs(h[0].score - s) for h, s in zip(hyps, g["scores"], strict=True))
        if diff > atol:
            raise ArtifactError(f"{self.folder}: golden-input scores differ by {diff:.2e} > {atol}")
