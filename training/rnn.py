"""A bidirectional RNN over right-padded batches that exports to native ONNX RNN nodes.

`nn.LSTM(bidirectional=True)` on a padded batch reads padding first in its backward direction,
and packed sequences do not survive every ONNX exporter. Here the backward direction runs a
second unidirectional RNN over each sequence reversed *within its own length*; padding then sits
at the end for both directions, valid positions are exact, and the export is two plain `LSTM`
(or `GRU`) nodes plus a `GatherElements`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def length_mask(lengths: Tensor, max_len: int) -> Tensor:
    """[B] lengths -> [B, T] bool, True at valid positions."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def reverse_within_length(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each x[b, :len_b] along time; padding positions stay where they are. x: [B, T, D]."""
    t = x.shape[1]
    pos = torch.arange(t, device=x.device).unsqueeze(0)  # [1, T]
    lens = lengths.unsqueeze(1)  # [B, 1]
    idx = torch.where(pos < lens, lens - 1 - pos, pos)  # [B, T]
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[2]))


def make_rnn(cell: str, input_size: int, hidden_size: int) -> nn.Module:
    if cell == "lstm":
        return nn.LSTM(input_size, hidden_size, batch_first=True)
    if cell == "gru":
        return nn.GRU(input_size, hidden_size, batch_first=True)
    raise ValueError(f"cell must be 'lstm' or 'gru', not {cell!r}")


class BiRNN(nn.Module):
    """Bidirectional single-layer RNN. Input [B, T, D] right-padded -> outputs [B, T, 2H].

    Also returns the final hidden states of both directions concatenated, [B, 2H]: the forward
    output at each sequence's last valid step and the backward output at step 0.
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int):
        super().__init__()
        self.cell = cell
        self.fwd = make_rnn(cell, input_size, hidden_size)
        self.bwd = make_rnn(cell, input_size, hidden_size)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        out_f, _ = self.fwd(x)
        out_b_rev, _ = self.bwd(reverse_within_length(x, lengths))
        out_b = reverse_within_length(out_b_rev, lengths)
        # Forward final state: output at the last valid step. Backward final state: its output at
        # position 0 of the original order, which is the last step it read.
        last = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out_f.shape[2])
        h_f = torch.gather(out_f, 1, last).squeeze(1)
        h_b = out_b[:, 0]
        return torch.cat([out_f, out_b], dim=2), torch.cat([h_f, h_b], dim=1)
