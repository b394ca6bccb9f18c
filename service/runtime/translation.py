"""The translator at run time: verified artifact, SentencePiece, ONNX encoder + decoder step,
and the shared numpy search (service.runtime.decoding). Training's evaluation uses this same class.

`translate_texts` is what the service calls: each text is split into sentences
(service.runtime.sentences), every sentence of the batch is decoded in one search, and each text's
translations are joined again. `translate` translates its inputs as single sentences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.runtime.artifacts import ArtifactError, GoldenError, golden_tolerance, load_metadata
from service.runtime.copythrough import LEXICON_FILE, CopyLexicon, mask_batch, unmask
from service.runtime.decoding import Hypothesis, State, numpy_topk, translate_batched
from service.runtime.providers import CUDA, Device, Precision, create_session
from service.runtime.sentences import split_texts
from service.runtime.subword import BOS_ID, EOS_ID, PAD_ID, Subword

ENCODER, DECODER, SPM_SRC, SPM_TGT = "encoder.onnx", "decoder.onnx", "spm.src.model", "spm.tgt.model"
DECODER_INT8 = "decoder.int8.onnx"  # optional: int8 weights, made by training.translation.optimize
EMBEDDING = "embedding.bin"  # optional: the embedding table encoder and decoder share (ONNX external data)
# optional: names and numbers copied through as placeholders (service.runtime.copythrough); its
# presence says the model was trained with them
COPY_LEXICON = LEXICON_FILE
FP32_SCORE_ATOL = 1e-4  # fp32 scores agree to ~1e-6 across CPUs and ONNX Runtime builds
MAX_SRC_TOKENS = 256  # longer inputs are cut (the request limit on characters keeps this rare)


@dataclass
class Translation:
    text: str
    score: float
    hypothesis: Hypothesis
    source_ids: list[int]


@dataclass
class TextTranslation:
    """One text's translation, joined from its sentences' (one sentence for most texts).

    `score` is the lowest of its sentences' scores, so that one badly translated sentence is not
    hidden by good ones; `alternatives` are the n-best lists joined rank by rank (the k-th
    alternative takes each sentence's k-th hypothesis). `source_ids` and `best` are per sentence."""

    text: str
    score: float
    alternatives: list[tuple[str, float]]
    source_ids: list[list[int]]
    best: list[Hypothesis]


def with_slots(hyps: list[list[Hypothesis]], slots: list[dict[str, str]]) -> list[list[Hypothesis]]:
    """Each source's placeholders onto its hypotheses, for detok() to put the strings back."""
    for hs, sl in zip(hyps, slots, strict=True):
        for h in hs:
            h.slots = sl
    return hyps


class OnnxStepper:
    """encode(), step() and step_topk() over the two ONNX sessions; numpy in and out."""

    def __init__(self, encoder, decoder):
        self.encoder, self.decoder = encoder, decoder
        self.steps = 0  # decoder calls, for metrics
        # top_k has a default (an initializer), so onnxruntime lists it among the overridable ones
        self.has_topk = any(i.name == "top_k" for i in (*decoder.get_inputs(), *decoder.get_overridable_initializers()))
        v = next(o.shape[1] for o in decoder.get_outputs() if o.name == "log_probs")
        self.vocab = v if isinstance(v, int) else None
        self._topk_outputs = ["top_log_probs", "top_ids", "h_out", "c_out", "attention"]

    def encode(self, ids: np.ndarray, lens: np.ndarray) -> tuple[State, State]:
        states, keys, h, c = self.encoder.run(None, {"src_ids": ids, "src_lengths": lens})
        mask = np.arange(ids.shape[1])[None, :] < lens[:, None]
        return {"h": h, "c": c}, {"states": states, "keys": keys, "mask": mask}

    def _run(self, outputs: list[str], tokens: np.ndarray, state: State, memory: State, **extra: np.ndarray):
        """One decoder call (counted for metrics): previous tokens, state and encoder memory in."""
        self.steps += 1
        feed = {
            "prev_tokens": tokens,
            "h": state["h"],
            "c": state["c"],
            "enc_states": memory["states"],
            "enc_keys": memory["keys"],
            "src_mask": memory["mask"],
            **extra,
        }
        return self.decoder.run(outputs, feed)

    def step(self, tokens: np.ndarray, state: State, memory: State) -> tuple[np.ndarray, State, np.ndarray]:
        logp, h, c, attn = self._run(["log_probs", "h_out", "c_out", "attention"], tokens, state, memory)
        return logp, {"h": h, "c": c}, attn

    def step_topk(
        self, tokens: np.ndarray, state: State, memory: State, m: int
    ) -> tuple[np.ndarray, np.ndarray, State, np.ndarray]:
        """Each row's best m tokens (log-probs best first, ids), from the decoder's own TopK when
        it has one (older files: selected in numpy from the full log-probs)."""
        if not self.has_topk:
            return numpy_topk(self.step)(tokens, state, memory, m)
        k = np.array([min(m, self.vocab) if self.vocab else m], dtype=np.int64)
        vals, ids, h, c, attn = self._run(self._topk_outputs, tokens, state, memory, top_k=k)
        return vals, ids, {"h": h, "c": c}, attn


class TranslationModel:
    def __init__(
        self,
        folder: Path,
        *,
        device: Device = "cpu",
        threads: int = 1,
        precision: Precision = "fp32",
        spin: bool = True,
    ):
        """`precision` is the decoder step's: fp32; int8 (refused when the artifact ships none);
        auto = int8 when it ships and the encoder's session runs on CPU, else fp32 (on CUDA the
        int8 kernels would run on the CPU). The encoder is always fp32."""
        self.folder = Path(folder)
        self.meta = load_metadata(self.folder, required=(ENCODER, DECODER, SPM_SRC, SPM_TGT), task="translation")
        cfg = self.meta["config"]
        self.src_lang, self.tgt_lang = cfg["src_lang"], cfg["tgt_lang"]
        self.pair = f"{self.src_lang}-{self.tgt_lang}"
        self.src_tok, self.tgt_tok = Subword(self.folder / SPM_SRC), Subword(self.folder / SPM_TGT)
        self.lexicon = CopyLexicon.load(self.folder / COPY_LEXICON) if COPY_LEXICON in self.meta["files"] else None
        has_int8 = DECODER_INT8 in self.meta["files"]
        if precision == "int8" and not has_int8:
            raise ArtifactError(
                f"{self.folder}: precision int8 asked for, but this artifact ships no {DECODER_INT8} (it is shipped "
                "only when validation BLEU stays within its gate); use precision auto or fp32"
            )
        enc, self.provider = create_session(self.folder / ENCODER, device, threads, spin)
        int8 = precision == "int8" or (precision == "auto" and has_int8 and self.provider != CUDA)
        self.decoder_file = DECODER_INT8 if int8 else DECODER
        self.precision = "int8" if int8 else "fp32"
        dec, _ = create_session(self.folder / self.decoder_file, "cpu" if int8 else device, threads, spin)
        self.stepper = OnnxStepper(enc, dec)
        self.name, self.version = self.meta["name"], self.meta["version"]
        d = self.meta.get("decoding", {})
        self.alpha = float(d.get("length_penalty", 0.6))
        self.max_ratio, self.max_extra = float(d.get("max_len_ratio", 1.5)), int(d.get("max_len_extra", 10))

    def prepare(self, texts: Sequence[str]) -> tuple[list[list[int]], list[dict[str, str]]]:
        """Source ids of single sentences (names and numbers masked when the model copies them
        through), and each sentence's placeholders."""
        masked, slots = mask_batch(texts, self.lexicon)
        return [ids[:MAX_SRC_TOKENS] for ids in self.src_tok.encode_batch(masked)], slots

    def encode_texts(self, texts: Sequence[str]) -> list[list[int]]:
        return self.prepare(texts)[0]

    def translate_ids(
        self,
        src: Sequence[Sequence[int]],
        *,
        beam_size: int = 5,
        n_best: int = 1,
        max_length: int | None = None,
        batch_size: int = 64,
        attention: bool = True,
    ) -> list[list[Hypothesis]]:
        """Hypotheses (n_best, best first) per source, in input order (service.runtime.decoding.translate_batched).
        `attention=False` skips collecting the attention rows that `alignment()` needs."""
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
            attention=attention,
        )

    def translate(self, texts: Sequence[str], **kw) -> list[list[Hypothesis]]:
        ids, slots = self.prepare(texts)
        return with_slots(self.translate_ids(ids, **kw), slots)

    def detok(self, h: Hypothesis) -> str:
        return unmask(self.tgt_tok.decode(h.tokens), h.slots)

    def translate_texts(self, texts: Sequence[str], *, n_best: int = 1, **kw) -> list[TextTranslation]:
        """Texts of any number of sentences: split into sentences, all sentences decoded in one
        search (`kw`: translate_ids's options; max_length applies per sentence), joined again."""
        split = split_texts(texts, self.src_lang)
        src_ids, slots = self.prepare(split.sentences)
        hyps = with_slots(self.translate_ids(src_ids, n_best=n_best, **kw), slots)
        out = []
        for span in split.spans:
            hs = hyps[span]
            ranks = []
            for k in range(max(len(h) for h in hs)):
                pick = [h[min(k, len(h) - 1)] for h in hs]
                ranks.append((split.join_span(span, [self.detok(p) for p in pick]), min(p.score for p in pick)))
            out.append(TextTranslation(ranks[0][0], ranks[0][1], ranks[1:n_best], src_ids[span], [h[0] for h in hs]))
        return out

    def text_alignment(self, t: TextTranslation) -> dict:
        """alignment() over a whole text: its sentences' source and target subwords one after the
        other, and their weights block by block (a sentence's words attend only to its source)."""
        parts = [self.alignment(ids, h) for ids, h in zip(t.source_ids, t.best, strict=True)]
        if len(parts) == 1:
            return parts[0]
        n_src = sum(len(p["source_tokens"]) for p in parts)
        weights, offset = [], 0
        for p in parts:
            n = len(p["source_tokens"])
            weights += [[0.0] * offset + row + [0.0] * (n_src - offset - n) for row in p["weights"]]
            offset += n
        return {
            "source_tokens": [x for p in parts for x in p["source_tokens"]],
            "target_tokens": [x for p in parts for x in p["target_tokens"]],
            "weights": weights,
        }

    def alignment(self, src_ids: Sequence[int], h: Hypothesis) -> dict:
        """Source and target subwords and the [target][source] attention weights (EOS row dropped)."""
        w = h.attention[: len(h.tokens), : len(src_ids)]
        return {
            "source_tokens": self.src_tok.pieces(list(src_ids)),
            "target_tokens": self.tgt_tok.pieces(h.tokens),
            "weights": np.round(w, 4).tolist(),
        }

    def check_golden(self, atol: float = FP32_SCORE_ATOL) -> float:
        """Translate the golden inputs stored at export; refuse a model that disagrees. Returns
        the largest score deviation. The int8 decoder is checked against its own stored outputs,
        at the tolerance its export measured across CPUs (golden_tolerance)."""
        g = self.meta["golden"]
        ref, ref_scores = g["translations"], g["scores"]
        if self.precision == "int8":
            ref, ref_scores, atol = g["translations_int8"], g["scores_int8"], golden_tolerance(g)
        where = self.folder / self.decoder_file
        hyps = self.translate(g["texts"], beam_size=int(g.get("beam_size", 5)))
        got = [self.detok(h[0]) for h in hyps]
        diff = max(abs(h[0].score - s) for h, s in zip(hyps, ref_scores, strict=True))
        changed = [(a, b) for a, b in zip(got, ref, strict=True) if a != b]
        if changed:
            raise GoldenError(
                where,
                f"{len(changed)} of {len(ref)} translations differ, first: {changed[0][0]!r} != {changed[0][1]!r}",
                self.precision,
            )
        if diff > atol:
            raise GoldenError(where, f"scores differ by {diff:.2e} > tolerance {atol:.1e}", self.precision)
        return diff
