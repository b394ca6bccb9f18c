"""The sentiment model at run time: verified artifact + tokenizer + ONNX Runtime session.

Used by the server and by training's evaluation, so the figures in metadata.json are what the
service computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.runtime.artifacts import ArtifactError, GoldenError, golden_tolerance, load_metadata
from service.runtime.providers import CUDA, Device, Precision, create_session, may_run_on_cuda
from service.runtime.text import PAD_ID, Vocab, encode_tokens, tokenize

MODEL_FILE, INT8_FILE, VOCAB_FILE = "model.onnx", "model.int8.onnx", "vocab.json"
FP32_GOLDEN_ATOL = 1e-4  # fp32 logits agree to ~1e-6 across CPUs and ONNX Runtime builds


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Encoded:
    ids: list[list[int]]

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.ids)


class SentimentModel:
    def __init__(
        self,
        folder: Path,
        *,
        device: Device = "cpu",
        threads: int = 1,
        model_file: str | None = None,
        precision: Precision = "fp32",
        spin: bool = True,
    ):
        """`precision`: fp32; int8 (the dynamically quantized variant, refused when the artifact
        ships none); auto = int8 when it ships and the session runs on CPU, else fp32 (on CUDA the
        quantized LSTM would run on the CPU). An explicit `model_file` wins over `precision`."""
        self.folder = Path(folder)
        self.meta = load_metadata(self.folder, required=(VOCAB_FILE,), task="sentiment")
        fp32 = self.meta.get("serving_model", MODEL_FILE)
        int8 = INT8_FILE if INT8_FILE in self.meta["files"] else None
        if model_file is None and precision == "int8" and int8 is None:
            raise ArtifactError(
                f"{self.folder}: precision int8 asked for, but this artifact ships no int8 variant (it is shipped "
                "only when it passes the export's accuracy gate: see metrics.int8 in metadata.json); use precision "
                "auto or fp32"
            )
        # auto: int8 on CPU. Whether CUDA works is known only once a session exists, so when it may,
        # the fp32 session comes first and the int8 one replaces it only if that fell back to CPU.
        auto_int8 = model_file is None and precision == "auto" and int8 is not None
        if auto_int8:
            model_file = fp32 if may_run_on_cuda(device) else int8
        self.model_file = model_file or (int8 if precision == "int8" else fp32)
        if self.model_file not in self.meta["files"]:
            raise ArtifactError(f"{self.folder}: model file {self.model_file} is not listed in metadata")
        cfg = self.meta["config"]
        self.labels: list[str] = list(cfg["labels"])
        self.max_len, self.head_len = int(cfg["max_len"]), int(cfg["head_len"])
        self.vocab = Vocab.load(self.folder / VOCAB_FILE)
        if self.vocab.sha256() != self.meta["tokenizer"]["vocab_sha256"]:
            raise ArtifactError(f"{self.folder / VOCAB_FILE}: vocabulary hash differs from metadata")
        self.session, self.provider = create_session(self.folder / self.model_file, device, threads, spin)
        if auto_int8 and self.model_file == fp32 and self.provider != CUDA:
            self.model_file = int8
            self.session, self.provider = create_session(self.folder / int8, "cpu", threads, spin)
        self.precision = "int8" if self.model_file == INT8_FILE else "fp32"
        self.name = self.meta["name"]
        self.version = self.meta["version"]
        # Fitted on validation at export (temperature scaling); 1.0 for artifacts made before it.
        self.temperature = float(self.meta.get("temperature", 1.0))

    def encode(self, texts: Sequence[str]) -> Encoded:
        return Encoded([encode_tokens(tokenize(t), self.vocab, self.max_len, self.head_len) for t in texts])

    def logits(self, enc: Encoded, token_budget: int = 16_384) -> np.ndarray:
        """Logits [N, C] in input order. Sorted by length and cut into sub-batches of at most
        `token_budget` padded tokens, so one long review does not pad many short ones."""
        n = len(enc.ids)
        out = np.zeros((n, len(self.labels)), dtype=np.float32)
        order = sorted(range(n), key=lambda i: len(enc.ids[i]))
        start = 0
        while start < n:
            end = start + 1
            while end < n and len(enc.ids[order[end]]) * (end + 1 - start) <= token_budget:
                end += 1
            idx = order[start:end]
            width = len(enc.ids[idx[-1]])
            ids = np.full((len(idx), width), PAD_ID, dtype=np.int64)
            for r, i in enumerate(idx):
                ids[r, : len(enc.ids[i])] = enc.ids[i]
            lens = np.array([len(enc.ids[i]) for i in idx], dtype=np.int64)
            out[idx] = self.session.run(["logits"], {"ids": ids, "lengths": lens})[0]
            start = end
        return out

    def probabilities(self, logits: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """Calibrated class probabilities: softmax(logits / T), T the artifact's temperature."""
        return softmax(logits / (self.temperature if temperature is None else temperature))

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Calibrated class probabilities [N, C], in input order."""
        return self.probabilities(self.logits(self.encode(texts)))

    def check_golden(self, atol: float = FP32_GOLDEN_ATOL) -> float:
        """Recompute the golden examples stored at export; refuse a model that disagrees. Returns
        the largest logit deviation. fp32 is checked at `atol`; the int8 variant against its own
        stored logits at the tolerance its export measured across CPUs (golden_tolerance)."""
        g = self.meta["golden"]
        if self.precision == "int8":
            ref, atol = g["logits_int8"], golden_tolerance(g)
        else:
            ref = g["logits"]
        ref = np.asarray(ref, dtype=np.float32)
        got = self.logits(self.encode(g["texts"]))
        diff = float(np.abs(got - ref).max())
        flipped = int((got.argmax(-1) != ref.argmax(-1)).sum())
        if diff > atol or flipped:
            raise GoldenError(
                self.folder / self.model_file,
                f"max abs logit difference {diff:.2e}, tolerance {atol:.1e}, {flipped} of {len(ref)} labels differ",
                self.precision,
            )
        return diff
