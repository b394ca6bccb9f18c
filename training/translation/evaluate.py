"""Evaluate translation: sacreBLEU and chrF on val and test2016, beam 5, from the ONNX artifact;
tokenized lowercase BLEU for older papers; BLEU by source length vs the no-attention baseline.

    python -m training.translation.evaluate --artifact models/translate-en-de [--baseline-run runs/baseline-en-de]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import sacrebleu
from tqdm import tqdm

from training.data import default_data_dir
from training.translation.data import load_pair

BUCKETS = [(1, 8), (9, 12), (13, 16), (17, 20), (21, 25), (26, 1000)]  # source words


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


def translate_all(translate, texts: list[str], desc: str, chunk: int = 256) -> list:
    """translate(chunk) over `texts` in chunks, with a progress bar; the results in order."""
    out = []
    for s in tqdm(range(0, len(texts), chunk), desc=desc, unit="chunk"):
        out += translate(texts[s : s + chunk])
    return out


def plot_by_length(tables: dict[str, list[dict]], path: Path, title: str) -> None:
    from training.plots import plt

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


def evaluate_artifact(
    tm, data_dir: Path, out: Path, *, baseline_run: Path | None = None, limit: int = 0, beam: int = 5
) -> dict:
    """Metrics dict for metadata.json; writes bleu_by_length.png (and .json) into `out`."""
    metrics: dict = {"computed_with": f"onnxruntime, beam {beam}, length penalty {tm.alpha}"}
    test_src = test_ref = test_hyp = None
    for split, key in (("val", "validation"), ("test", "test")):
        src, ref = load_pair(data_dir, split, tm.src_lang, tm.tgt_lang)
        if limit:
            src, ref = src[:limit], ref[:limit]
        hyp = translate_all(
            lambda t: [tm.detok(h[0]) for h in tm.translate(t, beam_size=beam)], src, f"{key} {tm.pair}"
        )
        metrics[key] = scores(hyp, ref)
        if split == "test":
            test_src, test_ref, test_hyp = src, ref, hyp
    tables = {"attention (shipped)": by_length(test_src, test_hyp, test_ref)}
    if baseline_run is not None:
        from service.runtime.subword import Subword
        from service.runtime.translation import MAX_SRC_TOKENS
        from training.translation.export import load_checkpoint
        from training.translation.translate import TorchStepper, translate_ids

        base, _ = load_checkpoint(baseline_run)
        stepper = TorchStepper(base)
        # The baseline's own SentencePiece models: same recipe, but trained in its own run.
        b_src, b_tgt = Subword(baseline_run / "spm.src.model"), Subword(baseline_run / "spm.tgt.model")

        def tr(texts):
            ids = [s[:MAX_SRC_TOKENS] for s in b_src.encode_batch(list(texts))]
            return [b_tgt.decode(h[0].tokens) for h in translate_ids(stepper, ids, beam_size=beam, alpha=tm.alpha)]

        base_hyp = translate_all(tr, test_src, f"baseline test {tm.pair}")
        metrics["baseline_no_attention_test"] = scores(base_hyp, test_ref)
        tables["no attention (baseline)"] = by_length(test_src, base_hyp, test_ref)
    metrics["test_bleu_by_source_length"] = tables
    (out / "bleu_by_length.json").write_text(json.dumps(tables, indent=2))
    plot_by_length(tables, out / "bleu_by_length.png", f"Multi30k test2016 {tm.pair}: BLEU by source length")
    return metrics


def main(argv: list[str] | None = None) -> None:
    from service.runtime.translation import TranslationModel

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--baseline-run", type=Path, default=None)
    p.add_argument("--out", type=Path, default=None, help="where to write the plot (default: a temp folder)")
    p.add_argument(
        "--update-artifact",
        action="store_true",
        help="write the figures (and the by-length plot) into the artifact's metadata.json and folder; the "
        "int8 figures already there are kept",
    )
    a = p.parse_args(argv)
    import tempfile

    out = a.artifact if a.update_artifact else (a.out or Path(tempfile.mkdtemp()))
    tm = TranslationModel(a.artifact)  # verifies every file before anything is rewritten
    m = evaluate_artifact(tm, a.data_dir or default_data_dir(), out, baseline_run=a.baseline_run)
    if a.update_artifact:
        from training.translation.export import write_card

        if "int8" in tm.meta["metrics"]:
            m["int8"] = tm.meta["metrics"]["int8"]
        write_card(a.artifact, {**tm.meta, "metrics": m})
    print(json.dumps(m, indent=2))


if __name__ == "__main__":
    main()
