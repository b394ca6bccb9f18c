"""Evaluate translation: sacreBLEU and chrF on val and test2016, beam 5, from the ONNX artifact;
tokenized lowercase BLEU for older papers; BLEU by source length vs the no-attention baseline;
and the guide to `score` (validation captions vs out-of-domain sentences) that the card prints.

    python -m training.translation.evaluate --artifact models/translate-en-de [--baseline-run runs/baseline-en-de]
    python -m training.translation.evaluate --artifact models/translate-en-de --rewrite-card

`--update-artifact` writes the figures into the artifact; `--rewrite-card` re-measures only the
score guide and rewrites README.md and metadata.json from it (no model file is touched).
Every function takes any translator with translate/detok/alpha/src_lang/tgt_lang/pair: the
service's TranslationModel, or training.translation.translate.Translator.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np
import sacrebleu

from service.runtime.artifacts import ArtifactError, golden_tolerance
from service.runtime.translation import DECODER, DECODER_INT8, TranslationModel
from training.card import translation_readme, translation_selection, write_artifact
from training.cross_cpu import record_cross_cpu
from training.data import default_data_dir
from training.plots import plt
from training.translation.data import evaluation_sets, evenly
from training.translation.decode_pool import best_hypotheses
from training.translation.model import load_checkpoint
from training.translation.translate import Translator, onnx_translator, run_translator

# Out-of-domain probes for the score guide: everyday and business English, nothing like a caption.
OUT_OF_DOMAIN = [
    "Please send me the invoice by Friday.",
    "The meeting has been moved to next Tuesday.",
    "Our quarterly revenue grew by 12 percent.",
    "Click the button to reset your password.",
    "I would like to cancel my subscription.",
    "The server crashed after the last update.",
    "Can you recommend a good restaurant near the station?",
    "The contract must be signed by both parties.",
    "How much does a ticket to Berlin cost?",
    "Thank you for your quick reply.",
    "Call Anna at 555-0199 on Monday.",
]
SCORE_BANDS = (-8.0, -6.0, -4.0, -2.0)  # edges of the score bands the card tabulates
THRESHOLD_PERCENTILE = 5  # the threshold: this percentile of validation scores, rounded down to 0.5
GUIDE_ATOL = 1e-4  # the runtime must reproduce the guide's out-of-domain scores within this (int8: its golden atol)

BUCKETS = [(1, 8), (9, 12), (13, 16), (17, 20), (21, 25), (26, 1000)]  # source words


SAMPLES_PER_SET = 3  # validation sentences shown per set on a general model's card


def scores(hyps: list[str], refs: list[str]) -> dict:
    metric = sacrebleu.BLEU()
    bleu = metric.corpus_score(hyps, [refs])
    lc = sacrebleu.corpus_bleu(hyps, [refs], lowercase=True, tokenize="intl")
    return {
        "bleu": round(bleu.score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2),
        "bleu_lc_tok": round(lc.score, 2),
        "bleu_signature": str(metric.get_signature()),
        "bleu_lc_tok_note": "lowercased, sacreBLEU 'intl' tokenization: for comparison with older tokenized-BLEU papers",
        "n": len(hyps),
    }


def by_length(src: list[str], hyps: list[str], refs: list[str]) -> list[dict]:
    rows = []
    for lo, hi in BUCKETS:
        idx = [i for i, s in enumerate(src) if lo <= len(s.split()) <= hi]
        if idx:
            b = sacrebleu.corpus_bleu([hyps[i] for i in idx], [[refs[i] for i in idx]]).score
            rows.append({"bucket": f"{lo}-{hi}" if hi < 1000 else f"{lo}+", "n": len(idx), "bleu": round(b, 2)})
    return rows


def plot_by_length(tables: dict[str, list[dict]], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    names = list(tables)
    buckets = [r["bucket"] for r in tables[names[0]]]
    w = 0.8 / len(names)
    for k, name in enumerate(names):
        vals = {r["bucket"]: r["bleu"] for r in tables[name]}
        ax.bar(np.arange(len(buckets)) + k * w, [vals.get(b, 0) for b in buckets], w, label=name)
    ax.set_xticks(np.arange(len(buckets)) + w * (len(names) - 1) / 2)
    ax.set_xticklabels([f"{b}\n(n={r['n']})" for b, r in zip(buckets, tables[names[0]], strict=True)])
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("sacreBLEU")
    ax.set_title(title)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mean_scores(per_set: dict[str, dict]) -> dict:
    """The selection figure over several validation sets: the unweighted mean of each metric."""
    return {
        **{k: round(float(np.mean([m[k] for m in per_set.values()])), 2) for k in ("bleu", "chrf", "bleu_lc_tok")},
        "n": sum(m["n"] for m in per_set.values()),
        "mean_of": list(per_set),
    }


def validation_and_test(tm, beam: int, data_dir: Path, corpus: str, limit: int, tag: str = "") -> tuple[dict, dict]:
    """Scores of `tm`'s best translations (beam `beam`) on every validation set and on the test set,
    and the translations: ({"validation": ..., "validation_sets": {...} (several sets only),
    "test": ...}, {"validation": {set: translations}, "test": {"src", "ref", "hyp"}})."""
    sets = evaluation_sets(data_dir, tm.src_lang, tm.tgt_lang, corpus)

    def translations(src: list[str], desc: str) -> list[str]:
        return [tm.detok(h) for h in best_hypotheses(tm, src, desc, beam)]

    per, outputs = {}, {"validation": {}, "test": {}}
    for name, (src, ref) in sets["validation"].items():
        src, ref = (src[:limit], ref[:limit]) if limit else (src, ref)
        hyp = outputs["validation"][name] = translations(src, f"validation {name} {tm.pair}{tag}")
        per[name] = scores(hyp, ref)
        if len(sets["validation"]) > 1:  # the general card shows a few of each set, evenly spaced
            s, h, r = (evenly((src, x), SAMPLES_PER_SET)[1] for x in (src, hyp, ref))
            per[name]["samples"] = [{"source": a, "translation": b, "reference": c} for a, b, c in zip(s, h, r)]
    for name, (src, ref) in sets["test"].items():
        src, ref = (src[:limit], ref[:limit]) if limit else (src, ref)
        outputs["test"] = {"src": src, "ref": ref, "hyp": translations(src, f"test {name} {tm.pair}{tag}")}
    out = {"validation": per["multi30k"] if len(per) == 1 else mean_scores(per)}
    if len(per) > 1:
        out["validation_sets"] = per
    out["test"] = scores(outputs["test"]["hyp"], outputs["test"]["ref"])
    return out, outputs


def evaluate_artifact(
    tm,
    data_dir: Path,
    out: Path,
    *,
    baseline_run: Path | None = None,
    limit: int = 0,
    beam: int = 5,
    corpus: str = "multi30k",
) -> dict:
    """Metrics dict for metadata.json; writes bleu_by_length.png (and .json) into `out`. With the
    general corpus, "validation" is the mean over the validation sets (each in "validation_sets")."""
    metrics: dict = {"computed_with": f"onnxruntime, beam {beam}, length penalty {tm.alpha}"}
    m, outputs = validation_and_test(tm, beam, data_dir, corpus, limit)
    metrics.update(m)
    test_src, test_ref, test_hyp = (outputs["test"][k] for k in ("src", "ref", "hyp"))
    tables = {"attention (shipped)": by_length(test_src, test_hyp, test_ref)}
    if baseline_run is not None:
        base, _ = load_checkpoint(baseline_run)
        # The baseline's own SentencePiece models: same recipe, but trained in its own run.
        baseline = run_translator(
            base,
            baseline_run,
            {"length_penalty": tm.alpha, "max_len_ratio": tm.max_ratio, "max_len_extra": tm.max_extra},
        )

        base_hyp = [baseline.detok(h) for h in best_hypotheses(baseline, test_src, f"baseline test {tm.pair}", beam)]
        metrics["baseline_no_attention_test"] = scores(base_hyp, test_ref)
        tables["no attention (baseline)"] = by_length(test_src, base_hyp, test_ref)
    metrics["test_bleu_by_source_length"] = tables
    (out / "bleu_by_length.json").write_text(json.dumps(tables, indent=2))
    plot_by_length(tables, out / "bleu_by_length.png", f"Multi30k test2016 {tm.pair}: BLEU by source length")
    return metrics


SCORE_GUIDE_PER_SET = 1000  # the score guide reads at most this many sentences of each validation set


def score_guide(tm, data_dir: Path, *, limit: int = 0, beam: int = 5, corpus: str = "multi30k") -> dict:
    """How `score` reads on this model: its distribution over the validation captions, the
    quality (sentence chrF) per score band, a threshold taken from validation alone, and what
    OUT_OF_DOMAIN sentences come back as. `tm` should be what the service serves (its decoder
    file is recorded)."""
    src, ref = [], []
    for pair in evaluation_sets(data_dir, tm.src_lang, tm.tgt_lang, corpus)["validation"].values():
        s, r = evenly(pair, SCORE_GUIDE_PER_SET) if corpus != "multi30k" else pair
        src += s[:limit] if limit else s
        ref += r[:limit] if limit else r
    best = best_hypotheses(tm, src, f"score guide {tm.pair}", beam)
    s = np.array([h.score for h in best])
    chrf = np.array([sacrebleu.sentence_chrf(tm.detok(h), [r]).score for h, r in zip(best, ref, strict=True)])
    edges = [-np.inf, *SCORE_BANDS, np.inf]
    bands = []
    for lo, hi in itertools.pairwise(edges):
        idx = (s >= lo) & (s < hi)
        name = f"below {hi:g}" if lo == -np.inf else f"{lo:g} or more" if hi == np.inf else f"{lo:g} to {hi:g}"
        if idx.any():
            bands.append({"band": name, "n": int(idx.sum()), "mean_chrf": round(float(chrf[idx].mean()), 1)})
    threshold = float(np.floor(np.percentile(s, THRESHOLD_PERCENTILE) * 2) / 2)
    ood = [h[0] for h in tm.translate(OUT_OF_DOMAIN, beam_size=beam)]
    return {
        "definition": "sum of the output subwords' log-probabilities (EOS included) / ((5 + length) / 6) ** "
        f"{tm.alpha} (GNMT length penalty)",
        "measured_with": f"{tm.decoder_file}, beam {beam}",
        "validation": {
            "n": len(s),
            "percentiles": {str(p): round(float(np.percentile(s, p)), 2) for p in (1, 5, 10, 25, 50, 75)},
            "bands": bands,
        },
        "threshold": threshold,
        "threshold_rule": f"the {THRESHOLD_PERCENTILE}th percentile of the validation "
        + ("captions' scores" if corpus == "multi30k" else "sentences' scores (at most 1,000 of each set)")
        + ", rounded down to half a point",
        "validation_below_threshold": round(float(np.mean(s < threshold)), 4),
        "out_of_domain": [
            {"text": t, "translation": tm.detok(h), "score": round(h.score, 4)}
            for t, h in zip(OUT_OF_DOMAIN, ood, strict=True)
        ],
        "out_of_domain_below_threshold": int(sum(h.score < threshold for h in ood)),
    }


def validation_by_set(metrics: dict) -> dict[str, dict]:
    """The validation figures of a metrics dict (metadata.json's "metrics", or its "int8") by set:
    "validation_sets" where there are several (the general recipe), else {"multi30k": "validation"}
    (a caption model, whose one validation set is Multi30k val)."""
    return metrics.get("validation_sets") or {"multi30k": metrics["validation"]}


def corpus_of(meta: dict) -> str:
    """The training corpus an artifact's figures are measured for ("multi30k" before issue 21)."""
    return meta.get("data", {}).get("corpus", "multi30k")


def served(folder: Path) -> TranslationModel:
    """The translator as the service loads it on CPU by default (precision auto)."""
    return TranslationModel(folder, device="cpu", precision="auto")


def served_files(folder: Path, meta: dict) -> Translator:
    """What `served` will be, opened from the files alone (before metadata.json is written): the
    int8 decoder step when it ships, else the fp32 one."""
    int8 = meta["metrics"].get("int8", {}).get("shipped") and (folder / DECODER_INT8).is_file()
    return onnx_translator(folder, DECODER_INT8 if int8 else DECODER, meta["config"], meta["decoding"])


def check_runtime(folder: Path, meta: dict) -> None:
    """The written artifact through the service's own class: the golden check of every shipped
    decoder, and the score guide's out-of-domain outputs at the precision the service serves."""
    for precision in ("fp32", "int8") if DECODER_INT8 in meta["files"] else ("fp32",):
        TranslationModel(folder, precision=precision).check_golden()
    g = meta.get("score_guide")
    if g:
        tm = served(folder)
        atol = golden_tolerance(meta["golden"]) if tm.precision == "int8" else GUIDE_ATOL
        texts = [o["text"] for o in g["out_of_domain"]]
        for o, h in zip(g["out_of_domain"], tm.translate(texts), strict=True):
            got, score = tm.detok(h[0]), h[0].score
            if got == o["translation"] and abs(score - o["score"]) <= atol:
                continue
            # ONNX Runtime's int8 kernels differ by CPU (AVX2 against AVX-512 VNNI): on a sentence
            # the model cannot translate, the decoder may then pick other words with another score.
            # What the card says of the sentence must still hold: flagged by the threshold, or not.
            flagged = score < g["threshold"]
            if tm.precision == "int8" and flagged == (o["score"] < g["threshold"]):
                continue
            raise ArtifactError(
                f"{folder}: the service translates {o['text']!r} as {got!r} ({score:.4f}), "
                f"the card says {o['translation']!r} ({o['score']})"
            )


def publish(folder: Path, meta: dict) -> dict:
    """The selection record, README.md and metadata.json, written once; then the runtime's check."""
    meta = {**meta, "selection": translation_selection(meta)}
    if meta["metrics"].get("int8", {}).get("shipped"):  # the int8 golden tolerance, from other CPUs
        meta = record_cross_cpu(folder, meta)
    meta = write_artifact(folder, meta, translation_readme(meta))
    check_runtime(folder, meta)
    return meta


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--baseline-run", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="where to write the plot (default: a temp folder)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--update-artifact",
        action="store_true",
        help="write the figures (and the by-length plot) into the artifact's metadata.json and folder, with a "
        "new score guide and card; the int8 figures already there are kept",
    )
    mode.add_argument(
        "--rewrite-card",
        action="store_true",
        help="re-measure only the score guide and rewrite README.md and metadata.json from it; the BLEU "
        "figures, the plot and the model files stay as they are",
    )
    a = p.parse_args(argv)
    data_dir = a.data_dir or default_data_dir()
    tm = TranslationModel(a.artifact)  # verifies every file before anything is rewritten
    meta = tm.meta
    if a.update_artifact or a.rewrite_card:
        guide = score_guide(served(a.artifact), data_dir, corpus=corpus_of(meta))
        meta = {**meta, "score_guide": guide}  # before the plot changes a hash
    if a.rewrite_card:
        meta = publish(a.artifact, meta)
        print(json.dumps(meta["score_guide"], indent=2, ensure_ascii=False))
        return
    out = a.artifact if a.update_artifact else (a.out or Path(tempfile.mkdtemp()))
    m = evaluate_artifact(tm, data_dir, out, baseline_run=a.baseline_run, corpus=corpus_of(meta))
    if a.update_artifact:
        if "int8" in meta["metrics"]:
            m["int8"] = meta["metrics"]["int8"]
        publish(a.artifact, {**meta, "metrics": m})
    print(json.dumps(m, indent=2))


if __name__ == "__main__":
    main()
