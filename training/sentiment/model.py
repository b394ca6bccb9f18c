"""Many-to-one recurrent sentiment classifier.

embedding -> BiLSTM (or BiGRU) over right-padded ids, masked by lengths -> pooling over time
-> dropout -> linear -> logits [B, 2].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from training.rnn import BiRNN, length_mask

POOLINGS = ("last", "max", "mean", "attention")


@dataclass(frozen=True)
class SentimentConfig:
    vocab_size: int = 40_000  # most frequent train tokens; the rest map to <unk>
    min_freq: int = 2  # a word seen once in train is noise, not vocabulary
    max_len: int = 400  # tokens kept per review (head + tail); covers ~80% of reviews whole
    head_len: int = 100  # of which taken from the start; the rest from the end
    embed_dim: int = 128
    hidden_dim: int = 128  # per direction
    cell: str = "lstm"  # "lstm" or "gru"
    pooling: str = "attention"  # one of POOLINGS, chosen by validation (docs/history.md: IMDB, then the mixture)
    embed_dropout: float = 0.3  # dropout on embeddings: the model's main regularizer
    dropout: float = 0.5  # before the classifier
    num_classes: int = 2
    labels: tuple[str, ...] = ("negative", "positive")

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {self.pooling!r}")
        if not 0 < self.head_len <= self.max_len:
            raise ValueError("head_len must be in (0, max_len]")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SentimentConfig:
        d = dict(d)
        if "labels" in d:
            d["labels"] = tuple(d["labels"])
        return cls(**d)


class SentimentClassifier(nn.Module):
    def __init__(self, cfg: SentimentConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=0)
        self.embed_drop = nn.Dropout(cfg.embed_dropout)
        self.rnn = BiRNN(cfg.cell, cfg.embed_dim, cfg.hidden_dim)
        if cfg.pooling == "attention":
            self.attn = nn.Linear(2 * cfg.hidden_dim, 1)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.hidden_dim, cfg.num_classes)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids [B, T] int64 right-padded with 0, lengths [B] int64 >= 1 -> logits [B, C]."""
        x = self.embed_drop(self.embed(ids))
        states, last = self.rnn(x, lengths)  # [B, T, 2H], [B, 2H]
        mask = length_mask(lengths, ids.shape[1]).unsqueeze(-1)  # [B, T, 1]
        pool = self.cfg.pooling
        if pool == "last":
            pooled = last
        elif pool == "max":
            pooled = states.masked_fill(~mask, -1e4).max(dim=1).values
        elif pool == "mean":
            pooled = (states * mask).sum(1) / lengths.unsqueeze(1).to(states.dtype)
        else:
            scores = self.attn(states).masked_fill(~mask, -1e4)  # [B, T, 1]
            pooled = (torch.softmax(scores, dim=1) * states).sum(1)
        return self.out(self.drop(pooled))
