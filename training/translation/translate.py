"""Translate with a PyTorch Seq2Seq through the shared numpy search (service.runtime.decoding).

The same search runs over the ONNX step in the service, so PyTorch-vs-ONNX parity compares the
models and nothing else.
"""

from __future__ import annotations

import numpy as np
import torch

from service.runtime.decoding import Hypothesis, State, translate_batched
from service.runtime.subword import BOS_ID, EOS_ID, PAD_ID
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
