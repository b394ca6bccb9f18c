"""Greedy and beam search over a one-step decoder, batched across sentences, in numpy.

One implementation, shared by evaluation (PyTorch or ONNX step functions) and the service
(ONNX). The search never sees a model: it calls `step(tokens, state, memory)`, which returns
log-probabilities, the next state and the attention weights. So it is tested on made-up
log-probabilities, and PyTorch-vs-ONNX parity compares like with like.

Shapes: N rows = active sentences x beam; V vocabulary; S source positions.
- `state`: dict of arrays with leading dim N, reordered every step as beams move.
- `memory`: dict of arrays with leading dim N that are identical across a sentence's beams
  (encoder states, keys, mask); re-gathered only when finished sentences leave the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

State = dict[str, np.ndarray]
StepFn = Callable[[np.ndarray, State, State], tuple[np.ndarray, State, np.ndarray]]
# A step that returns only each row's best m tokens: (log-probs [N, m] best first, ids [N, m], state,
# attention). The search needs no more than that; a stepper may compute it inside its model (the
# ONNX decoder's TopK), which spares copying out and scanning [N, V] log-probabilities every step.
TopKStepFn = Callable[[np.ndarray, State, State, int], tuple[np.ndarray, np.ndarray, State, np.ndarray]]


def numpy_topk(step: StepFn) -> TopKStepFn:
    """The top-m step of a full log-probability step, selected in numpy (all V when m >= V)."""

    def top(tokens: np.ndarray, state: State, memory: State, m: int):
        logp, state, att = step(tokens, state, memory)
        v = logp.shape[1]
        if m >= v:
            return logp, np.broadcast_to(np.arange(v), logp.shape), state, att
        if m == 1:  # greedy: the first of equal maxima, as argmax
            ids = logp.argmax(axis=1)[:, None]
            return np.take_along_axis(logp, ids, 1), ids, state, att
        ids = np.argpartition(logp, v - m, axis=1)[:, v - m :]
        return np.take_along_axis(logp, ids, 1), ids, state, att

    return top


@dataclass
class Hypothesis:
    tokens: list[int]  # without BOS and EOS
    score: float  # log-probability divided by the length penalty
    log_prob: float  # sum of token log-probabilities, EOS included when emitted
    attention: np.ndarray = field(repr=False)  # [len(tokens) (+1 for EOS), S]
    finished: bool = True  # False when cut by the maximum length
    slots: dict[str, str] = field(default_factory=dict, repr=False)  # copy-through placeholders of its source


def length_penalty(length: int | np.ndarray, alpha: float) -> float | np.ndarray:
    """GNMT length penalty ((5 + len) / 6) ** alpha; alpha = 0 ranks by raw log-probability."""
    return ((5.0 + length) / 6.0) ** alpha


def max_lengths(src_lengths: np.ndarray, ratio: float, extra: int, cap: int) -> np.ndarray:
    """Output budget per sentence: ratio * source length + extra, at most cap, at least 1."""
    return np.clip(np.ceil(ratio * src_lengths).astype(np.int64) + extra, 1, cap)


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids [N, longest] and lengths [N] (an empty sequence counts as length 1)."""
    lens = np.array([max(1, len(s)) for s in seqs], dtype=np.int64)
    ids = np.full((len(seqs), int(lens.max())), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    return ids, lens


def _take(d: State, rows: np.ndarray) -> State:
    return {k: v[rows] for k, v in d.items()}


NO_ATTENTION = np.zeros((0, 0), np.float32)


def greedy_search(
    step: StepFn,
    state: State,
    memory: State,
    *,
    bos: int,
    eos: int,
    max_len: np.ndarray,
    attention: bool = True,
    topk: TopKStepFn | None = None,
) -> list[Hypothesis]:
    """Pick the most likely token at each step. Inputs have leading dim B (one row a sentence).
    `topk` replaces `step` when the stepper selects tokens itself; `attention=False` skips
    collecting attention rows (hypotheses then carry an empty array)."""
    top = topk or numpy_topk(step)
    b = len(max_len)
    active = np.arange(b)
    tokens = np.full(b, bos, dtype=np.int64)
    out: list[list[int]] = [[] for _ in range(b)]
    logp_sum = np.zeros(b)
    attn: list[list[np.ndarray]] = [[] for _ in range(b)]
    results: list[Hypothesis | None] = [None] * b
    t = 0
    while len(active):
        vals, ids, state, att = top(tokens, state, memory, 1)
        nxt = ids[:, 0]
        t += 1
        keep = []
        for row, sent in enumerate(active):
            tok = int(nxt[row])
            logp_sum[sent] += float(vals[row, 0])
            if attention:
                attn[sent].append(att[row])
            if tok == eos or t >= max_len[sent]:
                if tok != eos:
                    out[sent].append(tok)
                results[sent] = Hypothesis(
                    out[sent],
                    float(logp_sum[sent]),
                    float(logp_sum[sent]),
                    np.stack(attn[sent]) if attention else NO_ATTENTION,
                    finished=tok == eos,
                )
            else:
                out[sent].append(tok)
                keep.append(row)
        if len(keep) < len(active):
            rows = np.asarray(keep, dtype=np.int64)
            active, state, memory = active[rows], _take(state, rows), _take(memory, rows)
            nxt = nxt[rows]
        tokens = nxt.astype(np.int64)
    return results  # type: ignore[return-value]


def beam_search(
    step: StepFn,
    state: State,
    memory: State,
    *,
    bos: int,
    eos: int,
    max_len: np.ndarray,
    beam_size: int = 5,
    alpha: float = 0.6,
    n_best: int = 1,
    attention: bool = True,
    topk: TopKStepFn | None = None,
) -> list[list[Hypothesis]]:
    """Batched beam search. Inputs have leading dim B; returns n_best hypotheses per sentence,
    best first by length-normalized score.

    A sentence is done when it holds `beam_size` finished hypotheses or reaches its maximum
    length (its live beams are then returned unfinished, ranked with the finished ones).
    `topk` replaces `step` when the stepper selects tokens itself; `attention=False` skips
    collecting attention rows (hypotheses then carry an empty array).
    """
    top_step = topk or numpy_topk(step)
    if beam_size < 1 or not 1 <= n_best <= beam_size:
        raise ValueError("need beam_size >= 1 and 1 <= n_best <= beam_size")
    k = beam_size
    b = len(max_len)
    rep = np.repeat(np.arange(b), k)
    state, memory = _take(state, rep), _take(memory, rep)
    active = np.arange(b)  # sentence ids, in row-block order
    scores = np.full((b, k), -np.inf)
    scores[:, 0] = 0.0  # all beams start identical: expand only the first
    seqs = np.zeros((b, k, 0), dtype=np.int64)
    attns: np.ndarray | None = None  # [b, k, t, S]
    tokens = np.full(b * k, bos, dtype=np.int64)
    finished: list[list[Hypothesis]] = [[] for _ in range(b)]
    t = 0
    while len(active):
        # The best 2k of scores[j] + logp[j, :] over all (j, token) are among each beam's own best
        # 2k tokens (scores[j] is one number per beam): the step returns those, and k * 2k
        # candidates per sentence are ranked instead of k * V.
        vals, ids, state, att = top_step(tokens, state, memory, 2 * k)
        t += 1
        nb, m = len(active), vals.shape[1]
        # a[rs, idx] picks a[r, idx[r, j], ...] (np.take_along_axis along axis 1, at a fraction
        # of its per-call cost: it builds its index arrays in Python, ten times a step)
        rs = np.arange(nb)[:, None]
        cand = (scores[:, :, None] + vals.reshape(nb, k, m)).reshape(nb, k * m)
        sel = np.argpartition(-cand, min(2 * k, k * m) - 1, axis=1)[:, : 2 * k]
        top_scores = cand[rs, sel]
        order = np.argsort(-top_scores, axis=1, kind="stable")
        sel, top_scores = sel[rs, order], top_scores[rs, order]
        beam_of, tok_of = sel // m, ids.reshape(nb, k * m)[rs, sel]
        if attention:
            att = att.reshape(nb, k, -1)
            step_att = att[rs, beam_of]  # [nb, 2k, S]
            prev_att = attns[rs, beam_of] if attns is not None else np.zeros((nb, 2 * k, 0, att.shape[2]), att.dtype)
        prev_seqs = seqs[rs, beam_of] if t > 1 else np.zeros((nb, 2 * k, 0), np.int64)
        is_eos = tok_of == eos
        has_eos = is_eos[:, :k].any(axis=1).tolist()
        done_rows = []
        for r, sent in enumerate(active):
            # EOS candidates that rank among the first k become finished hypotheses.
            for j in np.flatnonzero(is_eos[r, :k]) if has_eos[r] else ():
                if np.isfinite(top_scores[r, j]):
                    a = np.concatenate([prev_att[r, j], step_att[r, j][None]], axis=0) if attention else NO_ATTENTION
                    finished[sent].append(
                        Hypothesis(
                            prev_seqs[r, j].tolist(),
                            float(top_scores[r, j] / length_penalty(t, alpha)),
                            float(top_scores[r, j]),
                            a,
                        )
                    )
            if len(finished[sent]) >= k or t >= max_len[sent]:
                done_rows.append(r)
        # Live beams: the best k non-EOS candidates (EOS ranked last so they are never picked).
        pick = np.argsort(is_eos, axis=1, kind="stable")[:, :k]
        new_scores, new_beam, new_tok = top_scores[rs, pick], beam_of[rs, pick], tok_of[rs, pick]
        seqs = np.concatenate([prev_seqs[rs, pick], new_tok[:, :, None]], axis=2)
        if attention:
            attns = np.concatenate([prev_att[rs, pick], step_att[rs, pick][:, :, None]], axis=2)
        rows = (np.arange(nb)[:, None] * k + new_beam).reshape(-1)
        state = _take(state, rows)
        scores = new_scores
        for r in done_rows:
            sent = active[r]
            if t >= max_len[sent] and len(finished[sent]) < k:
                for j in range(k):  # cut by the length budget: keep live beams as unfinished
                    if np.isfinite(scores[r, j]):
                        finished[sent].append(
                            Hypothesis(
                                seqs[r, j].tolist(),
                                float(scores[r, j] / length_penalty(t, alpha)),
                                float(scores[r, j]),
                                attns[r, j] if attention else NO_ATTENTION,
                                finished=False,
                            )
                        )
        if done_rows:
            keep = np.setdiff1d(np.arange(nb), done_rows)
            krows = (keep[:, None] * k + np.arange(k)).reshape(-1)
            active, scores, seqs = active[keep], scores[keep], seqs[keep]
            attns = attns[keep] if attention else None
            state, memory = _take(state, krows), _take(memory, krows)
            new_tok = new_tok[keep]
        tokens = new_tok.reshape(-1).astype(np.int64)
    return [sorted(f, key=lambda h: -h.score)[:n_best] for f in finished]


def translate_batched(
    stepper,
    src: Sequence[Sequence[int]],
    *,
    bos: int,
    eos: int,
    pad: int = 0,
    beam_size: int = 5,
    alpha: float = 0.6,
    n_best: int = 1,
    max_length: int | None = None,
    batch_size: int = 64,
    max_ratio: float = 1.5,
    max_extra: int = 10,
    max_cap: int = 256,
    attention: bool = True,
) -> list[list[Hypothesis]]:
    """Translate id sequences with any stepper (`encode(ids, lens)` and `step`, optionally
    `step_topk`: ONNX in the service, PyTorch in training): sorted by length and searched
    `batch_size` sentences at a time, returned in input order, n_best hypotheses each (best
    first). beam_size 1 is greedy search. `attention=False`: hypotheses without attention rows.
    """
    topk = getattr(stepper, "step_topk", None)  # the searches select in numpy without one
    order = np.argsort([len(s) for s in src], kind="stable")
    out: list[list[Hypothesis]] = [[] for _ in src]
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids, lens = pad_batch([src[i] for i in idx], pad)
        state, memory = stepper.encode(ids, lens)
        ml = max_lengths(lens, max_ratio, max_extra, max_cap)
        if max_length is not None:
            ml = np.minimum(ml, max_length)
        if beam_size == 1:
            hyps = [
                [h]
                for h in greedy_search(
                    stepper.step, state, memory, bos=bos, eos=eos, max_len=ml, attention=attention, topk=topk
                )
            ]
        else:
            hyps = beam_search(
                stepper.step,
                state,
                memory,
                bos=bos,
                eos=eos,
                max_len=ml,
                beam_size=beam_size,
                alpha=alpha,
                n_best=n_best,
                attention=attention,
                topk=topk,
            )
        for i, h in zip(idx, hyps, strict=True):
            out[i] = h
    return out
