"""Behavioural tests for the sentiment model, in the spirit of CheckList (Ribeiro et al., ACL 2020).

Accuracy on a held-out set says little about *what* a model gets wrong. These cases probe one
capability at a time, each case of one of three kinds:

- `label`: a text whose label is unambiguous ("I hated it." is negative);
- `mixed`: a text that praises and blames in equal measure: the top probability must stay below 0.8;
- `same`: a pair of texts that must get the same label (a typo, a change of case, of name or
  product): only pairs whose original is itself labelled right count, as in CheckList's INV tests.

The cases are written here by hand and from small templates; nothing is drawn from a training
set. `run_suite` returns the failure rate per capability; the model card records them, and
`make test` fails when the shipped model does worse than its card.

    >>> rates = run_suite(SentimentModel(Path("models/sentiment")).predict)
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

NEG, POS = 0, 1
MIXED_MAX = 0.8  # a "mixed" text's top probability must stay below this


@dataclass(frozen=True)
class Case:
    capability: str
    kind: str  # "label", "mixed" or "same"
    text: str
    label: int = -1  # for "label"
    other: str = ""  # for "same": the perturbed text


def _labelled(cap: str, rows: Sequence[tuple[str, int]]) -> list[Case]:
    return [Case(cap, "label", t, y) for t, y in rows]


THINGS = ["The movie", "The food", "This phone", "The hotel", "The service", "The book", "This laptop", "The staff"]
POS_ADJ = ["great", "excellent", "wonderful", "amazing", "fantastic", "superb", "delightful", "perfect"]
NEG_ADJ = ["terrible", "awful", "horrible", "disappointing", "dreadful", "useless", "boring", "bad"]


def short_sentiment() -> list[Case]:
    rng = random.Random(1)
    rows = [(f"{t} was {a}.", POS) for t, a in zip(THINGS, POS_ADJ, strict=True)]
    rows += [(f"{t} was {a}.", NEG) for t, a in zip(THINGS, rng.sample(NEG_ADJ, len(NEG_ADJ)), strict=True)]
    rows += _pairs(
        pos=[
            "I loved it.",
            "Absolutely loved this place!",
            "Best purchase I have made all year.",
            "What a great experience.",
            "Fast delivery and works perfectly.",
            "Highly recommended.",
            "The staff were friendly and helpful.",
            "Delicious food and a lovely atmosphere.",
            "Exceeded my expectations.",
            "A beautiful, moving film.",
            "Works like a charm.",
            "Very happy with it.",
        ],
        neg=[
            "I hated it.",
            "The battery died after two days.",
            "Worst customer service ever.",
            "It broke the first time I used it.",
            "The food was cold and tasteless.",
            "Never buying from them again.",
            "A complete waste of time.",
            "Rude staff and a dirty room.",
            "It stopped working after a week.",
            "Very disappointed.",
            "The plot made no sense and the acting was wooden.",
            "My flight was delayed for five hours and nobody told us why.",
        ],
    )
    return _labelled("short sentiment", rows)


def _pairs(pos: Sequence[str], neg: Sequence[str]) -> list[tuple[str, int]]:
    return [(t, POS) for t in pos] + [(t, NEG) for t in neg]


def negation() -> list[Case]:
    rows = []
    for t, a in zip(THINGS, POS_ADJ, strict=True):
        rows.append((f"{t} was not {a}.", NEG))
    for t, a in zip(
        THINGS, ["bad", "terrible", "awful", "boring", "disappointing", "horrible", "bad", "rude"], strict=True
    ):
        rows.append((f"{t} was not {a} at all.", POS))
    rows += _pairs(
        pos=[
            "Not bad at all.",
            "I was not disappointed.",
            "Never had a problem with it.",
            "I can't complain.",
            "Nothing to dislike here.",
            "Not a single complaint.",
            "I don't regret buying it.",
            "It never lets me down.",
        ],
        neg=[
            "Not good.",
            "I don't like it.",
            "Not worth the money.",
            "I would not recommend it.",
            "Not what I expected, and not in a good way.",
            "It doesn't work.",
            "I didn't enjoy it.",
            "Nothing good to say about it.",
            "Not impressed.",
            "Never again.",
        ],
    )
    return _labelled("negation", rows)


def intensifiers_hedges() -> list[Case]:
    rows = []
    mods = ["really", "very", "extremely", "incredibly", "pretty", "quite", "fairly", "somewhat"]
    for m, t in zip(mods, THINGS, strict=True):
        rows.append((f"{t} was {m} good.", POS))
    for m, t in zip(mods, THINGS, strict=True):
        rows.append((f"{t} was {m} bad.", NEG))
    rows += _pairs(
        pos=["Absolutely brilliant.", "So so good!", "Truly the best.", "Pretty decent, honestly."],
        neg=["Absolutely awful.", "So so bad.", "Truly the worst.", "Pretty poor, honestly."],
    )
    return _labelled("intensifiers and hedges", rows)


def idioms() -> list[Case]:
    rows = _pairs(
        pos=[
            "Worth every penny.",
            "A must-see.",
            "Two thumbs up!",
            "I would buy it again in a heartbeat.",
            "Five stars, no question.",
            "Blew me away.",
            "Money well spent.",
            "Could not be happier.",
            "It does exactly what it says on the box.",
            "A real gem.",
            "Keeps getting better.",
            "Ten out of ten.",
        ],
        neg=[
            "Two hours I will never get back.",
            "I want my money back.",
            "Don't waste your money.",
            "Save yourself the trouble.",
            "A total rip-off.",
            "Avoid at all costs.",
            "What a joke.",
            "Went straight back to the store.",
            "Fell apart in a week.",
            "Back to the drawing board.",
            "Zero stars if I could.",
            "I want those two hours of my life back.",
        ],
    )
    return _labelled("idioms", rows)


def contrast() -> list[Case]:
    pos_parts = ["the food was delicious", "the screen is gorgeous", "the staff were lovely", "the story is moving"]
    neg_parts = ["the service was slow", "the battery is weak", "the room was dirty", "the ending is awful"]
    rows = []
    for p, n in zip(pos_parts, neg_parts, strict=True):
        rows.append((f"{p.capitalize()}, but {n}.", NEG))
        rows.append((f"{n.capitalize()}, but {p}.", POS))
        rows.append((f"I expected {' '.join(n.split()[:2])} to be bad, but {p}.", POS))
        rows.append((f"Although {p}, {n} and I will not be back.", NEG))
    rows += _pairs(
        pos=["It looks cheap, but it works great.", "Slow start, but the second half is fantastic."],
        neg=["It looks great, but it stopped working after a day.", "Nice idea, but terribly executed."],
    )
    cases = _labelled("contrast", rows)
    mixed = [
        "Great phone, terrible customer service.",
        "Delicious food, awful service.",
        "Beautiful hotel, rude staff.",
        "Brilliant acting, terrible plot.",
        "Good screen, bad battery.",
        "Lovely staff, dirty rooms.",
        "Great price, poor quality.",
        "Excellent camera, horrible software.",
    ]
    return cases + [Case("mixed", "mixed", t) for t in mixed]


def _typo(text: str, rng: random.Random) -> str:
    """Swap two adjacent letters inside one word of four or more letters."""
    words = text.split(" ")
    cands = [i for i, w in enumerate(words) if sum(c.isalpha() for c in w) >= 4]
    i = rng.choice(cands)
    w = words[i]
    j = rng.randrange(1, len([c for c in w if c.isalpha()]) - 2)
    words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
    return " ".join(words)


def _bases() -> list[tuple[str, int]]:
    return [(c.text, c.label) for c in short_sentiment() + idioms()]


def typos() -> list[Case]:
    rng = random.Random(7)
    cases = []
    for t, y in _bases():
        if any(sum(c.isalpha() for c in w) >= 4 for w in t.split(" ")):
            cases.append(Case("typos", "same", t, y, _typo(t, rng)))
    return cases


def casing() -> list[Case]:
    return [Case("casing", "same", t, y, t.upper()) for t, y in _bases()[:20]] + [
        Case("casing", "same", t, y, t.lower()) for t, y in _bases()[20:40]
    ]


NAMES = ["John", "Maria", "Ahmed", "Mei", "Olga", "Kwame", "Priya", "Lucas"]
PRODUCTS = ["iPhone", "Galaxy", "Pixel", "ThinkPad", "Kindle", "PlayStation", "MacBook", "Fitbit"]


def names_products() -> list[Case]:
    cases = []
    name_t = [
        ("{} loved the movie and so did I.", POS),
        ("{} said the food was awful, and it was.", NEG),
        ("I went with {} and we both had a great time.", POS),
        ("{} recommended it, but it was a huge disappointment.", NEG),
    ]
    for (tpl, y), (a, b) in itertools.product(name_t, zip(NAMES[::2], NAMES[1::2], strict=True)):
        cases.append(Case("names and products", "same", tpl.format(a), y, tpl.format(b)))
    prod_t = [
        ("My new {} is amazing.", POS),
        ("The {} I bought is a piece of junk.", NEG),
        ("Switched to the {} and never looked back.", POS),
        ("The {} keeps crashing.", NEG),
    ]
    for (tpl, y), (a, b) in itertools.product(prod_t, zip(PRODUCTS[::2], PRODUCTS[1::2], strict=True)):
        cases.append(Case("names and products", "same", tpl.format(a), y, tpl.format(b)))
    return cases


def emoji() -> list[Case]:
    rows = _pairs(
        pos=["Loved it 😍", "Great service 👍", "Best day ever 😊", "So good ❤️", "Amazing 🎉🎉", "Delicious 😋"],
        neg=["Worst ever 😡", "Broke again 👎", "So disappointed 😞", "Terrible 🤮", "Never again 😠", "Awful 😢"],
    )
    cases = _labelled("emoji", rows)
    # The emoji alone must not flip a clear text.
    for t, y in _bases()[:16]:
        cases.append(Case("emoji", "same", t, y, f"{t} {'🙂' if y == POS else '🙁'}"))
    return cases


def all_cases() -> list[Case]:
    return (
        short_sentiment()
        + negation()
        + intensifiers_hedges()
        + idioms()
        + contrast()
        + typos()
        + casing()
        + names_products()
        + emoji()
    )


def run_suite(predict: Callable[[list[str]], np.ndarray], cases: Sequence[Case] | None = None) -> dict:
    """Failure rate per capability, and the failing texts. `predict` maps texts to probabilities [N, 2]."""
    cases = list(cases or all_cases())
    texts = [c.text for c in cases] + [c.other for c in cases if c.kind == "same"]
    probs = predict(texts)
    p_of = dict(zip(texts, probs, strict=True))
    by_cap: dict[str, dict] = {}
    for c in cases:
        row = by_cap.setdefault(c.capability, {"cases": 0, "failures": 0, "failed": []})
        p = p_of[c.text]
        if c.kind == "label":
            ok = int(p.argmax()) == c.label
        elif c.kind == "mixed":
            ok = float(p.max()) < MIXED_MAX
        else:
            if int(p.argmax()) != c.label:  # CheckList INV: only pairs whose original is right count
                continue
            ok = int(p_of[c.other].argmax()) == c.label
        row["cases"] += 1
        if not ok:
            row["failures"] += 1
            row["failed"].append(c.text if c.kind != "same" else f"{c.text} -> {c.other}")
    for row in by_cap.values():
        row["failure_rate"] = round(row["failures"] / max(1, row["cases"]), 4)
    return by_cap
