"""The sentiment model at run time: verified artifact + tokenizer + ONNX Runtime session.

Used by the server and by training's evaluation, so the figures in metadata.json are what the
service computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.artifacts import ArtifactError, load_metadata
from service.providers import Device, create_session
from service.text import PAD_ID, Vocab, tokenize, truncate_head_tail

MODEL_FILE, VOCAB_FILE = "model.onnx", "vocab.json"


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
    def __init__(self, folder: Path, *, device: Device = "cpu", threads: int = 1, model_file: str | None = None):
        self.folder = Path(folder)
        self.meta = load_metadata(self.folder, required=(VOCAB_FILE,), task="sentiment")
        self.model_file = model_file or self.meta.get("serving_model", MODEL_FILE)
        if self.model_file not in self.meta["files"]:
            raise ArtifactError(f"{self.folder}: model file {self.model_file} is not listed in metadata")
        cfg = self.meta["config"]
        self.labels: list[str] = list(cfg["labels"])
        self.max_len, self.head_len = int(cfg["max_len"]), int(cfg["head_len"])
        self.vocab = Vocab.load(self.folder / VOCAB_FILE)
        if self.vocab.sha256() != self.meta["tokenizer"]["vocab_sha256"]:
            raise ArtifactError(f"{self.folder / VOCAB_FILE}: vocabulary hash differs from metadata")
        self.session, self.provider = create_session(self.folder / self.model_file, device, threads)
        self.name = self.meta["name"]
        self.version = self.meta["version"]

    def encode(self, texts: Sequence[str]) -> Encoded:
        return Encoded(
            [truncate_head_tail(self.vocab.encode(tokenize(t)), self.max_len, self.head_len) or [PAD_ID] for t in texts]
        )

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

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities [N, C] (softmax of logits), in input order."""
        return softmax(self.logits(self.encode(texts)))

    def check_golden(self, atol: float = 1e-4) -> None:
        """Recompute the golden examples stored at export; refuse a model that disagrees."""
        g = self.meta["golden"]
        got = self.logits(self.encode(g["texts"]))
        diff = float(np.abs(got - np.asarray(g["logits"], dtype=np.float32)).max())
        if diff > atol:
            raise ArtifactError(
                f"{self.folder}: golden-input check failed (max abs logit difference {diff:.2e} > {atol})"
            )
