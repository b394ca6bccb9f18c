"""How well a translator has learned one construct the README's invoice sentence needs: "by" +
a time ("by Friday", "by tomorrow", "by 2:30") meaning a deadline, which German says with "bis"
and French with "d'ici", "avant" or "pour". It takes the Tatoeba pairs whose English has the
construct and whose reference marks the deadline, and counts the translations that mark it too.

Its default reads the *training* pairs, so it measures fit, not generalisation: a model that does
not reproduce the construct on sentences it was trained on has not learned it (the held-out slice
has too few such pairs to count; `--split val` reads it anyway). A diagnostic for experiments,
never a selection figure: no test set is read.

    python -m training.translation.deadline_probe --artifact models/translate-en-de
    python -m training.translation.deadline_probe --run runs/translate-en-de --checkpoint epoch4.pt
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from training.data import default_data_dir
from training.translation.data import tatoeba_split

DEADLINE = re.compile(
    r"\bby (monday|tuesday|wednesday|thursday|friday|saturday|sunday|tomorrow|tonight|noon|midnight"
    r"|next (week|month|year|monday|tuesday|wednesday|thursday|friday|saturday|sunday)"
    r"|the end of (the|this|next) (day|week|month|year)|[0-9]{1,2}(:[0-9]{2})?( ?[ap]\.?m\.?| o'clock)?)\b",
    re.IGNORECASE,
)
# how each target language marks a deadline
MARKS = {
    "de": re.compile(r"\bbis\b", re.IGNORECASE),
    "fr": re.compile(r"\b(d'ici|avant|pour|au plus tard)\b", re.IGNORECASE),
}


def probe_pairs(src: list[str], tgt: list[str], tgt_lang: str) -> list[tuple[str, str]]:
    """The (source, reference) pairs with a deadline "by" whose reference marks it, one per
    distinct source (its first reference), in corpus order."""
    mark = MARKS[tgt_lang]
    out: dict[str, str] = {}
    for s, t in zip(src, tgt, strict=True):
        if s not in out and DEADLINE.search(s) and mark.search(t):
            out[s] = t
    return list(out.items())


HELD_EVERY = 3  # every third deadline pair, in corpus order, is held out of a stage that upsamples the rest


def deadline_split(
    src: list[str], tgt: list[str], tgt_lang: str
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The probe pairs of a corpus split in two: those a training stage may upsample
    (`--weights ...,deadline=K`), and every HELD_EVERY-th one, which such a stage leaves out of
    its training text altogether (every pair with that source), so the probe can tell learning
    the construct from repeating the upsampled pairs."""
    pairs = probe_pairs(src, tgt, tgt_lang)
    held = held_out(pairs)
    return [p for p in pairs if p not in held], held  # one pair per source: no pair is in both


def held_out(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Every HELD_EVERY-th of the probe pairs, in corpus order."""
    return pairs[HELD_EVERY - 1 :: HELD_EVERY]


def marked(translations: list[str], tgt_lang: str) -> list[bool]:
    return [bool(MARKS[tgt_lang].search(t)) for t in translations]


def run_probe(translate, pairs: list[tuple[str, str]], tgt_lang: str) -> dict:
    """`translate`: list of sources -> list of translations."""
    out = translate([s for s, _ in pairs])
    hits = marked(out, tgt_lang)
    return {
        "pairs": len(pairs),
        "marked": sum(hits),
        "rate": round(sum(hits) / len(pairs), 4) if pairs else None,
        "examples": [{"source": s, "reference": r, "translation": o} for (s, r), o in zip(pairs, out, strict=True)],
    }


def artifact_translator(folder: Path, beam: int):
    from service.runtime.translation import TranslationModel

    tm = TranslationModel(folder, precision="auto")
    return tm.tgt_lang, tm.src_lang, lambda texts: [t.text for t in tm.translate_texts(texts, beam_size=beam)]


def checkpoint_translator(run: Path, checkpoint: str, beam: int):
    import torch

    from training.translation.export import DECODING
    from training.translation.model import load_checkpoint
    from training.translation.translate import run_translator

    model, _ = load_checkpoint(run)  # best.pt: the config, and the weights unless another is named
    if checkpoint != "best.pt":  # epoch<N>.pt holds the weights only
        model.load_state_dict(torch.load(run / checkpoint, weights_only=False)["model"])
    tr = run_translator(model.eval(), run, DECODING)  # DECODING: what the export writes into metadata.json
    return tr.tgt_lang, tr.src_lang, lambda texts: [tr.detok(h[0]) for h in tr.translate(texts, beam_size=beam)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m training.translation.deadline_probe", description=__doc__.split("\n\n")[0]
    )
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--artifact", type=Path, help="an exported translator folder (ONNX Runtime, as served)")
    what.add_argument("--run", type=Path, help="a training run folder (PyTorch)")
    ap.add_argument("--checkpoint", default="best.pt", help="with --run: which checkpoint (best.pt, epoch3.pt...)")
    ap.add_argument("--split", choices=["train", "val"], default="train")
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--examples", type=int, default=8, help="print this many examples")
    ap.add_argument("--out", type=Path, default=None, help="write the whole result as JSON here")
    a = ap.parse_args(argv)
    if a.artifact:
        tgt_lang, src_lang, translate = artifact_translator(a.artifact, a.beam)
    else:
        tgt_lang, src_lang, translate = checkpoint_translator(a.run, a.checkpoint, a.beam)
    src, tgt = tatoeba_split(a.data_dir or default_data_dir(), src_lang, tgt_lang)[a.split]
    pairs = probe_pairs(src, tgt, tgt_lang)
    result = {
        "model": str(a.artifact or a.run / a.checkpoint),
        "split": f"tatoeba {a.split}",
        "beam": a.beam,
        **run_probe(translate, pairs, tgt_lang),
    }
    print(f"{result['model']}: {result['marked']} of {result['pairs']} deadline pairs marked ({result['split']})")
    if a.split == "train":  # the held-out third of a deadline-upsampling stage, counted on its own
        held = {s for s, _ in held_out(pairs)}  # the pairs already read, not a second pass
        hits = [e for e in result["examples"] if e["source"] in held]
        result["held_out"] = {"pairs": len(hits), "marked": sum(marked([e["translation"] for e in hits], tgt_lang))}
        print(f"  of which held out of --weights deadline=K stages: {result['held_out']['marked']} of {len(hits)}")
    for e in result["examples"][: a.examples]:
        print(f"  {e['source']} -> {e['translation']}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
