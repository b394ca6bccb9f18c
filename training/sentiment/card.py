"""The sentiment model card (`models/sentiment/README.md`), rendered from metadata.json alone."""

from __future__ import annotations

from training.card import cross_cpu_lines


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _reliability_sentence(cal: dict) -> str:
    """ "Texts scored 0.9 to 0.95 were right 92.6% of the time": the reliability bin holding 0.9."""
    rows = [r for r in cal.get("reliability_after", []) if r["bin"][0] <= 0.9 < r["bin"][1]]
    if not rows:
        return ""
    r = rows[0]
    return f" Texts scored {r['bin'][0]:g} to {r['bin'][1]:g} were right {_pct(r['accuracy'])}% of the time ({r['n']:,} texts)."


def card(meta: dict) -> str:
    m = meta["metrics"]
    ref = meta.get("reference")
    served = m.get("served_precision", "fp32")
    test = m.get(f"imdb_test_{served}", {})
    cal = meta["calibration"]
    lines = [
        f"# {meta['name']} {meta['version']}",
        "",
        "A bidirectional LSTM sentiment classifier (negative / positive) for English text of any length: one-line",
        "reviews, tweets, phrases and full movie reviews. Trained from scratch on IMDB and 15 public sets of short",
        "labelled texts, mixed so that every domain counts. All figures below were computed with ONNX Runtime on",
        "the exported model, as the service runs it; every number is also in `metadata.json`.",
        "",
        "**What it knows and what it does not.** It reads English reviews, tweets and one-liners about films,",
        "products, restaurants, hotels, airlines and finance. It has no neutral class: a neutral or off-topic text",
        "gets whichever label it leans to. It misses sarcasm and most texts whose sentiment depends on world",
        "knowledge. It does not read other languages.",
        "",
        f"**`score`** is the top class's probability after temperature scaling (T = {meta['temperature']}), fitted",
        f"on validation: expected calibration error {cal['ece_before']:.3f} before, {cal['ece_after']:.3f} after, on",
        f"{cal['n']:,} pooled validation texts.{_reliability_sentence(cal)}",
        "",
        "## Results",
        "",
        f"IMDB test (25,000 reviews, evaluated once at export, served precision {served}): "
        f"**{_pct(test.get('accuracy'))}%** accuracy, F1 {_pct(test.get('f1'))}.",
        "",
        "Validation accuracy by domain (%): every choice (mixture, architecture, epochs, temperature, int8) was",
        "made on these; none on a test set.",
        "",
        "| domain | n | " + (f"previous model ({ref['name']}) | " if ref else "") + "this model |",
        "|---|---:|" + ("---:|" if ref else "") + "---:|",
    ]
    for d, row in m["validation_by_domain"].items():
        old = f"{_pct(ref['validation_by_domain'][d]['accuracy'])} | " if ref else ""
        lines.append(f"| {d} | {row['n']:,} | {old}{_pct(row['accuracy'])} |")
    mean_old = f"{_pct(ref['validation_mean_accuracy'])} | " if ref else ""
    lines += [
        f"| **mean of domains** | | {mean_old}**{_pct(m['validation_mean_accuracy'])}** |",
        "",
        f"SST-2's row is its dev set ({m['validation_by_domain']['sst2']['n']} sentences) as given.",
        "",
        f"## Behavioural tests ({meta['behaviour']['cases']} cases)",
        "",
        "In the spirit of CheckList (Ribeiro et al. 2020): `training/sentiment/behaviour.py`. Failure rate per",
        "capability (%; lower is better). `make test` fails if the shipped model does worse than this table.",
        "",
        "| capability | " + ("previous model | " if ref else "") + "this model |",
        "|---|" + ("---:|" if ref else "") + "---:|",
    ]
    for cap, rate in meta["behaviour"]["failure_rates"].items():
        old = f"{_pct(ref['behaviour']['failure_rates'].get(cap))} | " if ref else ""
        lines.append(f"| {cap} | {old}{_pct(rate)} |")
    int8 = m.get("int8")
    lines += [""]
    if int8:
        verdict = "ships and is served on CPU" if int8["shipped"] else "does not ship"
        lines.append(
            f"int8 (dynamic quantization): mean validation accuracy {_pct(int8['validation_mean_accuracy'])}%, "
            f"{int8['accuracy_drop_points']:+.2f} points from fp32 (gate: {int8['max_drop_points']}): {verdict}."
            + (f" Recipe: {int8['method']}." if "method" in int8 else "")
        )
        lines += cross_cpu_lines(meta["golden"])
    tr = meta["training"]
    lines += [
        "",
        "## Training data",
        "",
        "Several sets are for non-commercial research only, and this model carries their terms.",
        "",
        "| source | domain | train | validation | origin | terms |",
        "|---|---|---:|---:|---|---|",
    ]
    for d, s in meta["data"]["sources"].items():
        lines.append(f"| {d} | {s['domain']} | {s['train']:,} | {s['validation']:,} | {s['source']} | {s['terms']} |")
    lines += [
        "",
        f"Validation split: {meta['data']['validation_split']}. Mixture per epoch: {meta['data']['mixture']}.",
        "",
        "## Model and training",
        "",
        f"Config: `{meta['config']}`.",
        "",
        f"Training: {tr['epochs_run']} epochs, {tr['train_seconds'] / 60:.1f} minutes on 2 CPU cores; "
        f"best mean validation accuracy (PyTorch) {_pct(tr['best_mean_val_acc_pytorch'])}%. "
        "Curves: `training_curve.png`, `validation_by_domain.png`.",
        "",
        f"Export parity (PyTorch vs ONNX Runtime): max |Δlogit| {meta['parity']['max_abs_logit_diff']:.1e} over "
        f"{meta['parity']['batch_size']} texts of {meta['parity']['min_len']}-{meta['parity']['max_len']} tokens.",
        "",
    ]
    return "\n".join(lines)
