"""Encoder-decoder with additive (Bahdanau) attention.

Encoder: embedding -> bidirectional LSTM (GRU selectable) -> states H [B, S, 2He]; the attention
keys W_k H [B, S, A] are computed once per sentence, and the decoder's initial state comes from
the final encoder states.

Decoder step (Bahdanau et al., 2015): score the keys against the previous decoder state, take
the context, feed [y_{t-1}; context] to an LSTM cell, then a readout
tanh(W_o [s_t; context; y_{t-1}]) projected on the (tied) target embeddings.

`attention=False` gives the baseline of the same size: the context is the fixed final encoder
state at every step (Cho et al., 2014).

`adaptive_cutoffs` (e.g. (2000, 5000)) gives the output an adaptive softmax (Grave et al., 2017)
over the same tied output layer: the most frequent target ids (the first cutoff) and one entry per
tail cluster share a head softmax, each cluster has its own softmax, and p(w) = p(cluster) p(w |
cluster). The distribution stays exact and normalised over the whole vocabulary (`log_probs`, what
search, validation and the export read), but training needs only the head for most targets
(`adaptive_loss`): the output layer is the dearest part of a step. The frequency order is counted
on the training targets (`set_vocab_order`) and saved with the weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.rnn import BiRNN, length_mask


@dataclass(frozen=True)
class TranslationConfig:
    src_lang: str = "en"
    tgt_lang: str = "de"
    src_vocab: int = 8000
    tgt_vocab: int = 8000
    joint_vocab: bool = True  # one SentencePiece model for both sides (chosen by validation)
    embed_dim: int = 256
    enc_hidden: int = 256  # per direction
    dec_hidden: int = 512
    attn_dim: int = 256
    cell: str = "lstm"  # encoder cell, "lstm" or "gru"; the decoder is an LSTM
    attention: bool = True  # False: the no-attention baseline
    dropout: float = 0.3
    tie_embeddings: bool = True  # output projection = target embedding matrix
    share_embeddings: bool = True  # with a joint vocabulary, encoder and decoder share one table
    adaptive_cutoffs: tuple[int, ...] = ()  # () = one softmax over the vocabulary; else head size, cluster starts

    def __post_init__(self) -> None:
        cuts = tuple(int(c) for c in self.adaptive_cutoffs)  # a list when read back from JSON
        if cuts and (list(cuts) != sorted(set(cuts)) or cuts[0] < 1 or cuts[-1] >= self.tgt_vocab):
            raise ValueError(f"adaptive_cutoffs {cuts}: increasing, each within 1..{self.tgt_vocab - 1}")
        object.__setattr__(self, "adaptive_cutoffs", cuts)

    def to_dict(self) -> dict:
        return {**asdict(self), "adaptive_cutoffs": list(self.adaptive_cutoffs)}  # as JSON reads it back

    @classmethod
    def from_dict(cls, d: dict) -> TranslationConfig:
        return cls(**d)


class Encoder(nn.Module):
    def __init__(self, cfg: TranslationConfig, embed: nn.Embedding):
        super().__init__()
        self.embed = embed
        self.rnn = BiRNN(cfg.cell, cfg.embed_dim, cfg.enc_hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.key = nn.Linear(2 * cfg.enc_hidden, cfg.attn_dim, bias=False)
        self.init_h = nn.Linear(2 * cfg.enc_hidden, cfg.dec_hidden)
        self.init_c = nn.Linear(2 * cfg.enc_hidden, cfg.dec_hidden)

    def forward(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """src [B, S], lengths [B] -> states [B,S,2He], keys [B,S,A], h0 [B,Hd], c0 [B,Hd], summary [B,2He]."""
        states, last = self.rnn(self.drop(self.embed(src)), lengths)
        states = self.drop(states)
        return states, self.key(states), torch.tanh(self.init_h(last)), self.init_c(last), last


class Decoder(nn.Module):
    def __init__(self, cfg: TranslationConfig, embed: nn.Embedding):
        super().__init__()
        self.cfg = cfg
        self.embed = embed
        ctx = 2 * cfg.enc_hidden
        self.query = nn.Linear(cfg.dec_hidden, cfg.attn_dim, bias=True)
        self.v = nn.Linear(cfg.attn_dim, 1, bias=False)
        self.cell = nn.LSTMCell(cfg.embed_dim + ctx, cfg.dec_hidden)
        self.readout = nn.Linear(cfg.dec_hidden + ctx + cfg.embed_dim, cfg.embed_dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.embed_dim, cfg.tgt_vocab)
        if cfg.tie_embeddings:
            self.out.weight = embed.weight
        if cfg.adaptive_cutoffs:
            n = len(cfg.adaptive_cutoffs)  # tail clusters
            self.bounds = (0, *cfg.adaptive_cutoffs, cfg.tgt_vocab)  # in frequency rank
            self.cluster = nn.Linear(cfg.embed_dim, n)  # the head's entry for each tail cluster
            nn.init.zeros_(self.cluster.weight)
            nn.init.zeros_(self.cluster.bias)
            # vocab_order[k]: the id of frequency rank k; vocab_rank[id]: its rank (set_vocab_order)
            self.register_buffer("vocab_order", torch.arange(cfg.tgt_vocab))
            self.register_buffer("vocab_rank", torch.arange(cfg.tgt_vocab))

    def attend(self, h: Tensor, states: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """h [N,Hd], states [N,S,C], keys [N,S,A], mask [N,S] bool -> context [N,C], weights [N,S]."""
        e = self.v(torch.tanh(keys + self.query(h).unsqueeze(1))).squeeze(2)
        a = torch.softmax(e.masked_fill(~mask, -1e9), dim=1)
        return torch.bmm(a.unsqueeze(1), states).squeeze(1), a

    def forward(
        self,
        prev: Tensor,
        h: Tensor,
        c: Tensor,
        states: Tensor,
        keys: Tensor,
        mask: Tensor,
        summary: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One step. prev [N] -> readout [N,E] (pre-projection), h', c' [N,Hd], attention [N,S]."""
        y = self.drop(self.embed(prev))
        ctx, a, h, c = self.recur(y, h, c, states, keys, mask, summary)
        return self.read(h, ctx, y), h, c, a

    def recur(
        self, y: Tensor, h: Tensor, c: Tensor, states: Tensor, keys: Tensor, mask: Tensor, summary: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The recurrent part of a step: embedded input y [N,E] -> context [N,C], attention [N,S], h', c'."""
        if self.cfg.attention:
            ctx, a = self.attend(h, states, keys, mask)
        else:
            ctx, a = summary, mask.to(states.dtype) / mask.sum(1, keepdim=True).to(states.dtype)
        h, c = self.cell(torch.cat([y, ctx], dim=1), (h, c))
        return ctx, a, h, c

    def read(self, h: Tensor, ctx: Tensor, y: Tensor) -> Tensor:
        """The readout (pre-projection) from h, context and embedded input, of one step [N,...] or
        of all steps at once [B,T,...]: nothing in it feeds the recurrence."""
        return self.drop(torch.tanh(self.readout(torch.cat([h, ctx, y], dim=-1))))

    def log_probs(self, readout: Tensor) -> Tensor:
        """readout [..., E] -> log-probabilities over the whole target vocabulary [..., V]."""
        logits = self.out(readout)
        if not self.cfg.adaptive_cutoffs:
            return F.log_softmax(logits, dim=-1)
        ranked = logits.index_select(-1, self.vocab_order)  # columns in frequency rank
        b = self.bounds
        head = F.log_softmax(torch.cat([ranked[..., : b[1]], self.cluster(readout)], dim=-1), dim=-1)
        parts = [head[..., : b[1]]]
        for i in range(1, len(b) - 1):
            k = b[1] + i - 1  # the cluster's entry in the head
            parts.append(F.log_softmax(ranked[..., b[i] : b[i + 1]], dim=-1) + head[..., k : k + 1])
        return torch.cat(parts, dim=-1).index_select(-1, self.vocab_rank)

    def adaptive_loss(self, readout: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """The summed cross-entropy of `targets` [N] under the adaptive softmax from readout [N, E]:
        -log p(head entry) for every target, and -log p(w | cluster) for those in a tail cluster,
        whose output rows alone are multiplied. Equal to -log_probs(readout)[target] summed, without
        label smoothing; label smoothing applies within the head's and each cluster's softmax."""
        b = self.bounds
        rank = self.vocab_rank[targets]
        w, bias = self.out.weight, self.out.bias
        head_ids = self.vocab_order[: b[1]]
        head_logits = torch.cat([F.linear(readout, w[head_ids], bias[head_ids]), self.cluster(readout)], dim=-1)
        head_target = rank.clone()
        loss = readout.new_zeros(())
        for i in range(1, len(b) - 1):
            inside = (rank >= b[i]) & (rank < b[i + 1])
            head_target[inside] = b[1] + i - 1
            if bool(inside.any()):
                ids = self.vocab_order[b[i] : b[i + 1]]
                tail = F.linear(readout[inside], w[ids], bias[ids])
                loss = loss + F.cross_entropy(
                    tail, rank[inside] - b[i], label_smoothing=label_smoothing, reduction="sum"
                )
        return loss + F.cross_entropy(head_logits, head_target, label_smoothing=label_smoothing, reduction="sum")

    def set_vocab_order(self, counts: Tensor) -> None:
        """Rank the target ids by `counts` [V] (their frequency in the training targets, EOS
        included), most frequent first, ties by id: the adaptive softmax's head and clusters."""
        order = torch.sort(-counts.to(torch.float64), stable=True).indices
        self.vocab_order.copy_(order)
        self.vocab_rank.copy_(torch.argsort(order))


class Seq2Seq(nn.Module):
    def __init__(self, cfg: TranslationConfig):
        super().__init__()
        if cfg.share_embeddings and (not cfg.joint_vocab or cfg.src_vocab != cfg.tgt_vocab):
            raise ValueError("share_embeddings needs a joint vocabulary")
        self.cfg = cfg
        tgt_embed = nn.Embedding(cfg.tgt_vocab, cfg.embed_dim, padding_idx=0)
        src_embed = tgt_embed if cfg.share_embeddings else nn.Embedding(cfg.src_vocab, cfg.embed_dim, padding_idx=0)
        nn.init.normal_(tgt_embed.weight, std=cfg.embed_dim**-0.5)
        self.encoder = Encoder(cfg, src_embed)
        self.decoder = Decoder(cfg, tgt_embed)

    def forward(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing. src [B,S], tgt_in [B,T] (BOS-prefixed) -> logits [B,T,V].

        The same function as running `Decoder.forward` step by step (a test holds them equal),
        arranged for training speed: the loop runs only the recurrence (`Decoder.recur`), and the
        readout and output layer are one matrix product over all steps (`Decoder.read`) instead of
        T small ones, each of which autograd would also sum a weight gradient for: 4% more
        tokens/s on one synthetic batch here. (Lifting the embeddings' share of the LSTM gates out
        of the loop as well was slower: nn.LSTMCell's step beats the same gates written out.)
        """
        r = self.readouts(src, src_len, tgt_in)
        # with an adaptive softmax, its log-probabilities: the logits of the same distribution
        return self.decoder.log_probs(r) if self.cfg.adaptive_cutoffs else self.decoder.out(r)

    def readouts(self, src: Tensor, src_len: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing up to the output layer: [B,T,E], what `forward` projects on the vocabulary."""
        states, keys, h, c, summary = self.encoder(src, src_len)
        mask = length_mask(src_len, src.shape[1])
        d = self.decoder
        y = d.drop(d.embed(tgt_in))  # [B,T,E]
        hs, ctxs = [], []
        for t in range(tgt_in.shape[1]):
            ctx, _, h, c = d.recur(y[:, t], h, c, states, keys, mask, summary)
            hs.append(h)
            ctxs.append(ctx)
        return d.read(torch.stack(hs, dim=1), torch.stack(ctxs, dim=1), y)


def load_checkpoint(run: Path, average: int = 0) -> tuple[Seq2Seq, dict]:
    """The model of a training run's best.pt (in eval mode), and the checkpoint dict itself
    (config, train_config, training state and history). `average` > 1: instead, the mean of the
    weights of the run's last `average` epochs (`epoch<N>.pt`, saved at each epoch's end; the
    run's checkpoint dict gains "averaged_epochs")."""
    ck = torch.load(run / "best.pt", weights_only=False)
    model = Seq2Seq(TranslationConfig.from_dict(ck["config"]))
    if average > 1:
        last = max((int(p.stem[5:]) for p in run.glob("epoch*.pt") if p.stem[5:].isdigit()), default=0)
        epochs = list(range(last - average + 1, last + 1))
        if not all((run / f"epoch{e}.pt").exists() for e in epochs):  # epoch0.pt never is
            raise FileNotFoundError(f"{run}: averaging {average} epochs needs epoch{epochs[0]}.pt to epoch{last}.pt")
        states = [torch.load(run / f"epoch{e}.pt", weights_only=False)["model"] for e in epochs]
        model.load_state_dict(
            {k: sum(s[k].double() for s in states).div(len(states)).to(v.dtype) for k, v in states[0].items()}
        )
        return model.eval(), {**ck, "averaged_epochs": epochs}
    model.load_state_dict(ck["model"])
    return model.eval(), ck
