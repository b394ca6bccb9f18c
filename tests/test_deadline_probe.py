"""training.translation.deadline_probe: which Tatoeba pairs it reads, how it counts, and its
command line on a real (tiny, test-made) exported translator."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

from training.translation.deadline_probe import marked, probe_pairs, run_probe

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
