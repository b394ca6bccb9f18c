"""training.translation.deadline_probe: which Tatoeba pairs it reads, how it counts, and its
command line on a real (tiny, test-made) exported translator."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

from tests.synthetic import write_general, write_multi30k
from training.translation.data import Corpus
from training.translation.deadline_probe import HELD_EVERY, deadline_split, marked, probe_pairs, run_probe
from training.translation.train import load_corpus, with_deadline_source

ROOT = Path(__file__).resolve().parent.parent

PAIRS = [
    ("Send it by Friday.", "Schick es bis Freitag."),
    ("Send it by Friday.", "Schicke es bis Freitag."),  # a second reference of the same source
    ("Be home by 2:30.", "Sei bis 2:30 zu Hause."),
    ("Finish it by the end of the week.", "Mach es bis zum Ende der Woche fertig."),
    ("I'll call you by tomorrow.", "Ich rufe dich morgen an."),  # the reference does not mark it
    ("She sat by the window.", "Sie saß bis zum Fenster."),  # "by" is not a deadline
    ("The book was written by Tom.", "Das Buch wurde von Tom geschrieben."),
]


def test_the_probe_reads_deadline_pairs_whose_reference_marks_them_once_per_source():
    src, tgt = zip(*PAIRS, strict=True)
    got = probe_pairs(list(src), list(tgt), "de")
    assert got == [PAIRS[0], PAIRS[2], PAIRS[3]]
    fr = probe_pairs(["Pay by Monday.", "Pay by Monday!"], ["Payez d'ici lundi.", "Payez lundi !"], "fr")
    assert fr == [("Pay by Monday.", "Payez d'ici lundi.")]


def test_the_probe_counts_the_translations_that_mark_the_deadline():
    assert marked(["Bis Freitag.", "Am Freitag.", "bis morgen"], "de") == [True, False, True]
    assert marked(["avant lundi", "par lundi", "d'ici demain"], "fr") == [True, False, True]
    pairs = [PAIRS[0], PAIRS[2], PAIRS[3]]
    answers = {"Send it by Friday.": "Schick es am Freitag.", "Be home by 2:30.": "Sei bis 2:30 da."}
    r = run_probe(lambda texts: [answers.get(t, "bis dann") for t in texts], pairs, "de")
    assert (r["pairs"], r["marked"], r["rate"]) == (3, 2, 0.6667)
    assert r["examples"][0] == {"source": PAIRS[0][0], "reference": PAIRS[0][1], "translation": "Schick es am Freitag."}


def deadline_rows(n: int) -> list[tuple[str, str]]:
    return [(f"Send it by Friday {i}.", f"Schick es bis Freitag {i}.") for i in range(n)]


def test_every_third_deadline_pair_is_held_out_of_an_upsampling_stage():
    rows = [*deadline_rows(7), PAIRS[4], PAIRS[5]]
    kept, held = deadline_split(*map(list, zip(*rows, strict=True)), "de")
    assert HELD_EVERY == 3
    assert held == [rows[2], rows[5]] and kept == [rows[i] for i in (0, 1, 3, 4, 6)]


def test_the_deadline_source_repeats_the_kept_pairs_and_drops_every_pair_of_a_held_out_source():
    rows = [*deadline_rows(6), ("Send it by Friday 2.", "Schicke es bis Freitag 2."), PAIRS[5], PAIRS[6]]
    src, tgt = map(list, zip(*rows, strict=True))
    corpus = Corpus(train={"tatoeba": (src, tgt), "news": (["A."], ["B."])}, valid={})
    with_deadline_source(corpus, "de")
    held = {"Send it by Friday 2.", "Send it by Friday 5."}
    # both references of a held-out source leave; the rest of Tatoeba stays as it was
    assert corpus.train["tatoeba"] == tuple(map(list, zip(*[r for r in rows if r[0] not in held], strict=True)))
    assert corpus.train["deadline"] == tuple(map(list, zip(*[rows[i] for i in (0, 1, 3, 4)], strict=True)))
    s, _t, names = corpus.mixture({"tatoeba": 1, "news": 1, "deadline": 3})
    assert names.count("deadline") == 12 and not held & set(s)


def test_only_a_deadline_weight_adds_the_source_and_holds_a_third_out(tmp_path):
    """The recipe's own mixture (no `deadline=` weight) trains on Tatoeba as it stands."""

    from training.translation.model import TranslationConfig
    from training.translation.train import TrainConfig

    write_multi30k(tmp_path)
    write_general(tmp_path, n_tatoeba=3000)
    extra = deadline_rows(30)
    for lang, col in (("en", 0), ("de", 1)):
        path = tmp_path / "translation" / "tatoeba" / f"train.en-de.{lang}.gz"
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.writelines(x + "\n" for x in [r[col] for r in extra] + lines)
    cfg = TranslationConfig(src_lang="en", tgt_lang="de")

    vocab_text = {}

    def counts(weights: str) -> dict[str, int]:
        src, _, vocab_src, vocab_tgt, _ = load_corpus(tmp_path, cfg, TrainConfig(corpus="general", weights=weights))
        vocab_text[weights] = (vocab_src, vocab_tgt)
        return {s: src.count(s) for s, _ in extra}

    plain = counts("tatoeba=1,news=1,multi30k=1")
    trained = [s for s, n in plain.items() if n == 1]  # the rest fell in the held-out validation slice
    assert len(trained) >= 5 and set(plain.values()) <= {0, 1}
    up = counts("tatoeba=1,news=1,multi30k=1,deadline=4")
    held = {trained[i] for i in range(HELD_EVERY - 1, len(trained), HELD_EVERY)}
    assert {s: up[s] for s in trained} == {s: 0 if s in held else 5 for s in trained}
    # the vocabulary learns from distinct text: the repeated pairs once, the held-out third not at all
    (plain_src, plain_tgt), (up_src, up_tgt) = vocab_text.values()
    assert up_src == [s for s in plain_src if s not in held]
    assert len(up_tgt) == len(up_src) == len(plain_tgt) - sum(s in held for s in plain_src)
    assert {s: up_src.count(s) for s in trained} == {s: 0 if s in held else 1 for s in trained}


def test_the_command_line_probes_an_exported_translator(models_dir, tmp_path):
    data = tmp_path / "data"
    tat = data / "translation" / "tatoeba"
    tat.mkdir(parents=True)
    # enough other pairs that the held-out slice (about 2,000 pairs) leaves a training split
    rows = PAIRS + [(f"A dog runs by the lake {i}.", f"Ein Hund läuft am See {i}.") for i in range(3000)]
    for lang, col in (("en", 0), ("de", 1)):
        with gzip.open(tat / f"train.en-de.{lang}.gz", "wt", encoding="utf-8") as f:
            f.writelines(r[col] + "\n" for r in rows)
    cmd = [
        sys.executable,
        "-m",
        "training.translation.deadline_probe",
        "--artifact",
        str(models_dir / "translate-en-de"),
    ]
    seen = set()
    for split in ("train", "val"):
        out = tmp_path / f"probe-{split}.json"
        r = subprocess.run(
            [*cmd, "--data-dir", str(data), "--split", split, "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-3000:]
        rec = json.loads(out.read_text())
        assert rec["split"] == f"tatoeba {split}" and rec["pairs"] == len(rec["examples"])
        assert rec["marked"] == sum("bis" in re.findall(r"\w+", e["translation"].lower()) for e in rec["examples"])
        assert f"{rec['marked']} of {rec['pairs']} deadline pairs marked" in r.stdout
        seen |= {e["source"] for e in rec["examples"]}
    # the two splits share no source, and between them they probe the three deadline sources
    assert seen == {PAIRS[0][0], PAIRS[2][0], PAIRS[3][0]}
