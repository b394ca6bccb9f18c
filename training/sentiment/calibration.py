"""Temperature scaling (Guo et al., ICML 2017) and expected calibration error.

A classifier trained to low loss is usually over-confident: its top probability says 0.97 where it
is right 90% of the time. Dividing the logits by one temperature T > 1, fitted on validation by
minimizing the negative log-likelihood, fixes most of that without changing a single label. The
service applies T (stored in metadata.json), so `score` means what it says.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    lp = log_softmax(logits / temperature)
    return float(-lp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0) -> float:
    """The T minimizing validation NLL: golden-section search on log T (NLL is unimodal in it)."""
    labels = np.asarray(labels)
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    for _ in range(60):
        if nll(logits, labels, np.exp(c)) < nll(logits, labels, np.exp(d)):
            b, d = d, c
            c = b - g * (b - a)
        else:
            a, c = c, d
            d = a + g * (b - a)
    return float(np.exp((a + b) / 2))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE: |accuracy - confidence| averaged over equal-width confidence bins, weighted by their size."""
    labels = np.asarray(labels)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(ece)


def reliability_table(probs: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    """Per confidence bin: how many, mean confidence, accuracy (for the model card's plot)."""
    labels = np.asarray(labels)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.5, 1.0, bins + 1)  # two classes: confidence is at least 0.5
    rows = []
    for lo, hi in pairwise(edges):
        inside = (conf >= lo) & (conf <= hi) if lo == 0.5 else (conf > lo) & (conf <= hi)
        if inside.any():
            rows.append(
                {
                    "bin": [round(float(lo), 3), round(float(hi), 3)],
                    "n": int(inside.sum()),
                    "confidence": round(float(conf[inside].mean()), 4),
                    "accuracy": round(float(correct[inside].mean()), 4),
                }
            )
    return rows
