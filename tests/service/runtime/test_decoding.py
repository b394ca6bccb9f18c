"""service.runtime.decoding on synthetic log-probabilities: no model, just a table of what each prefix
scores next. Every expectation is worked out by hand (or recomputed from the table)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.runtime.decoding import beam_search, greedy_search, length_penalty, max_lengths

BOS, EOS, A, B, C = 0, 1, 2, 3, 4
V, S = 5, 4  # vocabulary, source positions (attention width)
UNLISTED, UNLISTED_EOS = -30.0, -50.0  # tokens a table row does not mention: possible but hopeless
MAX_T = 64


class TableLM:
    """A decoder step over made-up scores.

    `rows(sent, prefix)` gives the next-token log-probabilities after `prefix` (tokens emitted
    so far, BOS excluded) for sentence `sent`; the state is the token history, so the search's
    reordering of beams is what decides which prefix a row sees. Attention is a fixed random
    distribution per (sentence, prefix), so a hypothesis's attention rows can be recomputed.
    """

    def __init__(self, rows):
        self.rows = rows
        self.calls = 0

    def start(self, sents: list[int]) -> tuple[dict, dict]:
        n = len(sents)
        return (
            {"hist": np.full((n, MAX_T), -1, np.int64), "n": np.zeros(n, np.int64)},
            {"sent": np.asarray(sents, np.int64)},
        )

    @staticmethod
    def attention(sent: int, prefix: tuple[int, ...]) -> np.ndarray:
        x = np.random.default_rng([7, sent, len(prefix), *prefix]).normal(size=S)
        return np.exp(x) / np.exp(x).sum()

    def __call__(self, tokens, state, memory):
        self.calls += 1
        hist, n = state["hist"].copy(), state["n"].copy()
        rows = np.arange(len(tokens))
        hist[rows, n] = tokens
        n = n + 1
        logp = np.empty((len(tokens), V))
        att = np.empty((len(tokens), S))
        for r in rows:
            prefix = tuple(int(t) for t in hist[r, 1 : n[r]])
            sent = int(memory["sent"][r])
            logp[r] = self.rows(sent, prefix)
            att[r] = self.attention(sent, prefix)
        return logp, {"hist": hist, "n": n}, att


def table(spec: dict[tuple[int, ...], dict[int, float]]):
    """Rows from {prefix: {token: probability}} (the same for every sentence)."""

    def rows(sent, prefix):
        row = np.full(V, UNLISTED)
        row[EOS] = UNLISTED_EOS
        for tok, p in spec.get(prefix, {}).items():
            row[tok] = math.log(p)
        return row

    return rows


def random_rows(seed: int, eos_bias: float = 0.0):
    """A normalized random distribution per (sentence, prefix); EOS made likelier by eos_bias."""

    def rows(sent, prefix):
        x = np.random.default_rng([seed, sent, len(prefix), *prefix]).normal(scale=2.0, size=V)
        x[EOS] += eos_bias
        return x - np.log(np.exp(x).sum())

    return rows


def recomputed(rows, sent: int, h) -> tuple[float, np.ndarray]:
    """Log-probability and attention of hypothesis h, recomputed from the table."""
    lp, att = 0.0, []
    for i, tok in enumerate(h.tokens):
        lp += rows(sent, tuple(h.tokens[:i]))[tok]
        att.append(TableLM.attention(sent, tuple(h.tokens[:i])))
    if h.finished:
        lp += rows(sent, tuple(h.tokens))[EOS]
        att.append(TableLM.attention(sent, tuple(h.tokens)))
    return lp, np.stack(att) if att else np.zeros((0, S))


def run_beam(rows, sents, max_len, **kw):
    lm = TableLM(rows)
    state, memory = lm.start(sents)
    return beam_search(lm, state, memory, bos=BOS, eos=EOS, max_len=np.asarray(max_len), **kw)


def run_greedy(rows, sents, max_len):
    lm = TableLM(rows)
    state, memory = lm.start(sents)
    return greedy_search(lm, state, memory, bos=BOS, eos=EOS, max_len=np.asarray(max_len))


# --- the search finds what greedy misses -------------------------------------------------------


def test_beam_finds_a_better_sequence_that_greedy_misses():
    # Greedy takes A (0.6) and then its likeliest continuation EOS (0.3): p = 0.18.
    # B looks worse first (0.4) but ends at once (0.9): p = 0.36. Beam 2 keeps B alive and finds it.
    rows = table({(): {A: 0.6, B: 0.4}, (A,): {EOS: 0.3, A: 0.25, B: 0.25, C: 0.2}, (B,): {EOS: 0.9, A: 0.1}})
    g = run_greedy(rows, [0], [10])[0]
    assert g.tokens == [A] and g.finished
    assert g.log_prob == pytest.approx(math.log(0.18))
    best = run_beam(rows, [0], [10], beam_size=2, alpha=0.0)[0][0]
    assert best.tokens == [B] and best.finished
    assert best.log_prob == pytest.approx(math.log(0.36))
    assert best.log_prob > g.log_prob


def test_beam_size_one_is_greedy():
    rows = random_rows(seed=3, eos_bias=1.0)
    sents, ml = list(range(8)), [3, 5, 8, 12, 4, 9, 1, 6]
    greedy = run_greedy(rows, sents, ml)
    beam = run_beam(rows, sents, ml, beam_size=1, alpha=0.0)
    for g, (b,) in zip(greedy, beam, strict=True):
        assert b.tokens == g.tokens and b.finished == g.finished
        assert b.log_prob == pytest.approx(g.log_prob)


# --- maximum length ----------------------------------------------------------------------------


def test_max_lengths_budget():
    got = max_lengths(np.array([1, 4, 100, 0]), ratio=1.5, extra=2, cap=50)
    assert got.tolist() == [4, 8, 50, 2]  # ceil(1.5 * len) + 2, capped at 50
    assert max_lengths(np.array([0, 3]), ratio=0.0, extra=0, cap=10).tolist() == [1, 1]  # never below 1


def never_ends(sent, prefix):
    row = random_rows(seed=11)(sent, prefix)
    row[EOS] = -1e9
    return row


def test_max_length_cuts_greedy_and_marks_unfinished():
    ml = [1, 3, 5]
    for sent, h in enumerate(run_greedy(never_ends, [0, 1, 2], ml)):
        assert len(h.tokens) == ml[sent] and not h.finished
        assert h.attention.shape == (ml[sent], S)  # no EOS row when cut


def test_max_length_cuts_beam_and_keeps_live_beams_unfinished():
    ml = [2, 4, 6]
    res = run_beam(never_ends, [0, 1, 2], ml, beam_size=3, n_best=3, alpha=0.6)
    for sent, hyps in enumerate(res):
        assert len(hyps) == 3
        for h in hyps:
            assert len(h.tokens) == ml[sent] and not h.finished
            assert h.attention.shape == (ml[sent], S)


def test_max_length_is_never_exceeded():
    rows = random_rows(seed=5, eos_bias=-0.5)
    sents = list(range(12))
    ml = [1, 2, 3, 4, 5, 6, 7, 8, 2, 3, 9, 10]
    for hyps in (run_beam(rows, sents, ml, beam_size=4, n_best=4), [[h] for h in run_greedy(rows, sents, ml)]):
        for sent, hs in enumerate(hyps):
            for h in hs:
                # tokens plus the EOS step, if emitted, fit the budget
                assert len(h.tokens) + int(h.finished) <= ml[sent]


# --- finished hypotheses -----------------------------------------------------------------------


def test_finished_hypothesis_is_kept_while_live_beams_run_on():
    # B then EOS finishes at step 2 with p = 0.45 * 0.9 = 0.405. The A-branch (0.55, then 0.8 per A,
    # never EOS) stays live until the length budget, ending at 0.55 * 0.8^5 = 0.18: the early
    # finished hypothesis must survive four more steps and win.
    rows = table({(A,) * n: {A: 0.8} for n in range(1, 10)} | {(): {A: 0.55, B: 0.45}, (B,): {EOS: 0.9}})
    for alpha in (0.0, 0.6):
        best, runner_up = run_beam(rows, [0], [6], beam_size=2, n_best=2, alpha=alpha)[0]
        assert best.tokens == [B] and best.finished
        assert best.log_prob == pytest.approx(math.log(0.405))
        assert runner_up.tokens == [A] * 6 and not runner_up.finished
        assert runner_up.log_prob == pytest.approx(math.log(0.55 * 0.8**5))
    assert run_greedy(rows, [0], [6])[0].tokens == [A] * 6  # greedy never sees it


def test_finished_hypotheses_end_the_search():
    # Both beams finish at step 2: the search must stop there, not run to the length budget.
    rows = table({(): {A: 0.5, B: 0.5}, (A,): {EOS: 0.9}, (B,): {EOS: 0.8}})
    lm = TableLM(rows)
    state, memory = lm.start([0])
    res = beam_search(lm, state, memory, bos=BOS, eos=EOS, max_len=np.array([50]), beam_size=2, n_best=2, alpha=0.0)[0]
    assert [h.tokens for h in res] == [[A], [B]]
    assert all(h.finished for h in res)
    assert lm.calls == 2


# --- length penalty ----------------------------------------------------------------------------


def test_length_penalty_function():
    assert length_penalty(7, 0.0) == 1.0  # alpha 0: raw log-probability
    assert length_penalty(1, 1.0) == pytest.approx(1.0)
    assert length_penalty(10, 0.6) > length_penalty(5, 0.6) > 1.0
    assert length_penalty(5, 1.0) == pytest.approx(10 / 6)


def test_length_penalty_changes_the_choice():
    # Short: B EOS, p = 0.52 (log -0.654, 2 steps). Long: A A A EOS, p = 0.48 (log -0.734, 4 steps).
    # alpha 0 ranks raw log-probability: the short one. alpha 1 divides by (5+len)/6:
    # short -0.654 / (7/6) = -0.560 < long -0.734 / (9/6) = -0.489: the long one.
    rows = table({(): {B: 0.52, A: 0.48}, (B,): {EOS: 1.0}, (A,): {A: 1.0}, (A, A): {A: 1.0}, (A, A, A): {EOS: 1.0}})
    raw = run_beam(rows, [0], [10], beam_size=2, n_best=2, alpha=0.0)[0]
    assert [h.tokens for h in raw] == [[B], [A, A, A]]
    normed = run_beam(rows, [0], [10], beam_size=2, n_best=2, alpha=1.0)[0]
    assert [h.tokens for h in normed] == [[A, A, A], [B]]
    short, long_ = normed[1], normed[0]
    assert short.score == pytest.approx(math.log(0.52) / (7 / 6))
    assert long_.score == pytest.approx(math.log(0.48) / (9 / 6))


# --- n-best, scores, attention -----------------------------------------------------------------


def test_n_best_ordering_and_scores():
    rows = random_rows(seed=21, eos_bias=0.5)
    sents, ml = list(range(6)), [4, 6, 8, 5, 7, 3]
    res = run_beam(rows, sents, ml, beam_size=4, n_best=4, alpha=0.6)
    one = run_beam(rows, sents, ml, beam_size=4, n_best=1, alpha=0.6)
    for sent, hyps in enumerate(res):
        assert 1 <= len(hyps) <= 4
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps), "n-best repeats a hypothesis"
        assert one[sent][0].tokens == hyps[0].tokens
        for h in hyps:
            lp, _ = recomputed(rows, sent, h)
            assert h.log_prob == pytest.approx(lp)
            steps = len(h.tokens) + int(h.finished)
            assert h.score == pytest.approx(h.log_prob / length_penalty(steps, 0.6))


def test_beam_wider_than_the_vocabulary_returns_only_possible_hypotheses():
    # With EOS impossible, step 1 has only V - 1 = 4 continuations, so a beam of 5 holds an
    # impossible (-inf) slot; cut by the length budget, it must not come back as a hypothesis.
    def no_eos(sent, prefix):
        row = never_ends(sent, prefix)
        row[EOS] = -np.inf
        return row

    (hyps,) = run_beam(no_eos, [0], [1], beam_size=5, n_best=5, alpha=0.6)
    assert len(hyps) == V - 1 and all(np.isfinite(h.score) for h in hyps)
    assert sorted(h.tokens[0] for h in hyps) == [BOS, A, B, C]
    rows = random_rows(seed=4)
    for ml in (1, 2, 3):
        (hyps,) = run_beam(rows, [0], [ml], beam_size=5, n_best=5, alpha=0.6)
        assert hyps and all(np.isfinite(h.score) and np.isfinite(h.log_prob) for h in hyps)
        assert len({(*h.tokens, h.finished) for h in hyps}) == len(hyps)
        for h in hyps:
            assert h.log_prob == pytest.approx(recomputed(rows, 0, h)[0])


def test_invalid_beam_arguments():
    with pytest.raises(ValueError):
        run_beam(random_rows(1), [0], [5], beam_size=2, n_best=3)
    with pytest.raises(ValueError):
        run_beam(random_rows(1), [0], [5], beam_size=0)


def test_attention_has_one_row_per_output_token_and_eos():
    rows = random_rows(seed=8, eos_bias=1.0)
    sents, ml = list(range(10)), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    beam = run_beam(rows, sents, ml, beam_size=3, n_best=3, alpha=0.6)
    greedy = [[h] for h in run_greedy(rows, sents, ml)]
    seen_finished = seen_cut = False
    for hyps in (beam, greedy):
        for sent, hs in enumerate(hyps):
            for h in hs:
                assert h.attention.shape == (len(h.tokens) + int(h.finished), S)
                _, att = recomputed(rows, sent, h)
                # the rows are the ones computed along this hypothesis's own prefixes
                np.testing.assert_allclose(h.attention, att, rtol=0, atol=1e-12)
                seen_finished |= h.finished
                seen_cut |= not h.finished
    assert seen_finished and seen_cut  # both kinds were exercised


# --- batching ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_search_equals_searching_each_sentence_alone(seed):
    rows = random_rows(seed=seed, eos_bias=0.3)
    sents = list(range(7))
    ml = [3, 9, 1, 6, 12, 4, 8]  # sentences leave the batch at different steps
    batched = run_beam(rows, sents, ml, beam_size=3, n_best=3, alpha=0.6)
    greedy = run_greedy(rows, sents, ml)
    for i, sent in enumerate(sents):
        alone = run_beam(rows, [sent], [ml[i]], beam_size=3, n_best=3, alpha=0.6)[0]
        assert [h.tokens for h in batched[i]] == [h.tokens for h in alone]
        assert [h.finished for h in batched[i]] == [h.finished for h in alone]
        np.testing.assert_allclose([h.score for h in batched[i]], [h.score for h in alone], rtol=1e-12)
        for hb, ha in zip(batched[i], alone, strict=True):
            np.testing.assert_array_equal(hb.attention, ha.attention)
        g = run_greedy(rows, [sent], [ml[i]])[0]
        assert greedy[i].tokens == g.tokens and greedy[i].log_prob == pytest.approx(g.log_prob)
        np.testing.assert_array_equal(greedy[i].attention, g.attention)


def _reference_beam(logp_of, k: int, alpha: float, max_len: int, bos: int, eos: int):
    """The search written plainly for one sentence: rank all k * V candidates every step."""
    beams, finished = [((), 0.0)], []
    for t in range(1, max_len + 1):
        cand = []
        for j, (seq, sc) in enumerate(beams):
            lp = logp_of((bos, *seq))
            cand += [(sc + float(lp[tok]), j * len(lp) + tok, seq, tok) for tok in range(len(lp))]
        cand.sort(key=lambda c: (-c[0], c[1]))
        top = cand[: 2 * k]
        finished += [(seq, s / length_penalty(t, alpha)) for s, _, seq, tok in top[:k] if tok == eos]
        beams = [((*seq, tok), s) for s, _, seq, tok in top if tok != eos][:k]
        if len(finished) >= k:
            break
    else:
        finished += [(seq, s / length_penalty(max_len, alpha)) for seq, s in beams]
    return sorted(finished, key=lambda f: -f[1])


@pytest.mark.parametrize("seed", range(4))
def test_beam_search_equals_a_plain_reference_over_a_larger_vocabulary(seed):
    # V = 40 > 2k: the search's per-beam preselection of 2k tokens must not change the result.
    v, k, ml = 40, 4, 7
    rng = np.random.default_rng(seed)
    table_ = rng.normal(size=(v, v)) * 3  # next-token scores given the previous token

    def logp_of(prefix):
        x = table_[prefix[-1]] - 0.4 * len(prefix) * (np.arange(v) != EOS)  # EOS grows likelier
        return (x - np.log(np.exp(x).sum())).astype(np.float32)

    def step(tokens, state, memory):
        hist = np.concatenate([state["hist"], tokens[:, None]], axis=1)
        return np.stack([logp_of(tuple(h)) for h in hist]), {"hist": hist}, np.ones((len(tokens), 1), np.float32)

    (got,) = beam_search(
        step,
        {"hist": np.zeros((1, 0), np.int64)},
        {"m": np.zeros((1, 1))},
        bos=BOS,
        eos=EOS,
        max_len=np.array([ml]),
        beam_size=k,
        n_best=k,
        alpha=0.6,
    )
    ref = _reference_beam(logp_of, k, 0.6, ml, BOS, EOS)[:k]
    assert [tuple(h.tokens) for h in got] == [seq for seq, _ in ref]
    np.testing.assert_allclose([h.score for h in got], [s for _, s in ref], rtol=1e-5)
