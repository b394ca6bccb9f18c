"""The shipped sentiment model (models/sentiment) against the behavioural suite and the one-liners that
started issue 12. The failure rates may not rise above what its model card records: a retrained
model that forgets negation or idioms fails `make test` instead of surprising a user."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.runtime.sentiment import SentimentModel
from tests.conftest import ROOT
from training.sentiment.behaviour import MIXED_MAX, all_cases, run_suite
from training.sentiment.calibration import expected_calibration_error, fit_temperature, reliability_table

SHIPPED = ROOT / "models" / "sentiment"


@pytest.fixture(scope="module")
def shipped() -> SentimentModel:
    return SentimentModel(SHIPPED, precision="auto")  # what `make serve` serves on CPU


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((SHIPPED / "metadata.json").read_text())


def test_the_suite_has_at_least_300_cases_over_every_capability():
    cases = all_cases()
    assert len(cases) >= 300
    caps = {c.capability for c in cases}
    assert caps >= {"negation", "intensifiers and hedges", "idioms", "contrast", "typos", "casing", "emoji"}
    assert caps >= {"names and products", "mixed", "short sentiment"}
    assert len({(c.text, c.other) for c in cases}) == len(cases)  # no case counted twice


def test_no_capability_fails_more_often_than_the_model_card_records(shipped, card):
    recorded = card["behaviour"]["failure_rates"]
    got = run_suite(shipped.predict)
    assert set(got) == set(recorded)
    worse = {
        cap: (r["failure_rate"], recorded[cap], r["failed"])
        for cap, r in got.items()
        if r["failure_rate"] > recorded[cap]
    }
    assert not worse, f"capabilities that regressed (now, card, failing texts): {worse}"


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Two hours I will never get back.", "negative"),
        ("I hated it.", "negative"),
        ("The battery died after two days.", "negative"),
        ("Not bad at all.", "positive"),
    ],
)
def test_the_one_liners_of_issue_12_are_answered_right(shipped, text, label):
    probs = shipped.predict([text])[0]
    assert shipped.labels[int(probs.argmax())] == label, (text, probs)


def test_a_mixed_review_is_not_answered_with_confidence(shipped):
    probs = shipped.predict(["Great phone, terrible customer service."])[0]
    assert probs.max() < MIXED_MAX, probs


def test_the_suite_scores_what_it_says():
    # A model that always answers positive with certainty: fails every negative case and every
    # mixed one; passes every invariance pair whose original is positive.
    cases = all_cases()

    def always_positive(texts):
        return np.tile([0.0, 1.0], (len(texts), 1))

    result = run_suite(always_positive, cases)
    assert result["mixed"]["failure_rate"] == 1.0
    neg = [c for c in cases if c.capability == "idioms" and c.label == 0]
    assert result["idioms"]["failures"] == len(neg)
    assert result["casing"]["failures"] == 0
    assert result["casing"]["cases"] == sum(c.label == 1 for c in cases if c.capability == "casing")


def test_temperature_scaling_recovers_a_known_temperature_and_lowers_ece():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20_000)
    labels = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)  # calibrated at T = 1 ...
    logits = np.stack([np.zeros_like(z), 3 * z], axis=1)  # ... shown three times too confident
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(3.0, rel=0.05)

    def probs(temp):
        e = np.exp(logits / temp - (logits / temp).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    assert expected_calibration_error(probs(1.0), labels) > 0.08
    assert expected_calibration_error(probs(t), labels) < 0.02
    table = reliability_table(probs(t), labels)
    assert sum(r["n"] for r in table) == z.size
    assert all(abs(r["accuracy"] - r["confidence"]) < 0.05 for r in table if r["n"] > 500)
