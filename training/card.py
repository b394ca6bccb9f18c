"""What a shipped artifact says about itself: metadata.json, and the README.md card rendered from it.

The export (and each command that updates an artifact in place) measures everything first, on
the files in the folder, and builds the whole metadata dict in memory; `write_artifact` then
writes README.md and, last, metadata.json with the sha256 of every other file, once. Nothing
writes a placeholder to be filled in later.

Here: the entries every artifact shares (`base_metadata`, `training_metadata`), the record of
which choice was made on which split (`translation_selection`), and the translator's card
(`translation_readme`), which says what the model knows, what it does not, and how to read the
`score` of a translation.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import torch

from service.runtime.artifacts import write_metadata
from training.data import PROJECT_ROOT

README = "README.md"
LANGUAGES = {"en": "English", "de": "German", "fr": "French"}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "training", "service"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def base_metadata(name: str, task: str, version: str | None) -> dict:
    commit = git_commit()
    today = dt.date.today().isoformat()
    return {
        "name": name,
        "task": task,
        "version": version or f"{today}+{commit[:8]}",
        "created": today,
        "git_commit": commit,
        "torch_version": torch.__version__,
    }


def training_metadata(ck: dict, best_key: str, best_name: str) -> dict:
    """metadata.json's "config", "train_config" and "training" entries, from a best.pt checkpoint."""
    state = ck["state"]
    return {
        "config": ck["config"],
        "train_config": ck["train_config"],
        "training": {
            "epochs_run": state["epoch"],
            "train_seconds": round(state["train_seconds"], 1),
            best_name: state[best_key],
            "history": state["history"],
            **({"averaged_epochs": ck["averaged_epochs"]} if "averaged_epochs" in ck else {}),
        },
    }


def cross_cpu_lines(golden: dict) -> list[str]:
    """The card's paragraph on the int8 file across CPUs (training.cross_cpu), if it was measured."""
    rec = golden.get("int8_cross_cpu")
    if not rec:
        return []
    emulated = (
        ", ".join(f"{cpu} ({e['isa'].split(',')[0]}): {e['max_abs']:.1e}" for cpu, e in rec["emulated"].items())
        or "none (" + rec.get("note", "not measured") + ")"
    )
    return [
        "",
        f"Across CPUs: the int8 file's golden outputs, computed on {rec['native']['cpu']} ({rec['native']['isa']}) "
        f"and under emulated CPUs (qemu-x86_64), differ by at most: {emulated}; {rec['differ']} labels or "
        f"translations differ. The service checks them at start-up within {golden['int8_atol']:.0e} "
        "(10 times the measured spread, at least 1e-3): `python -m service.verify`.",
    ]


def write_artifact(folder: Path, meta: dict, readme: str) -> dict:
    """README.md, then metadata.json listing every file's hash (README's too); returns the metadata
    as written."""
    (folder / README).write_text(readme, encoding="utf-8")
    return write_metadata(folder, meta)


# --- the translator ----------------------------------------------------------------------------


def translation_selection(meta: dict) -> dict:
    """Which choices the shipped translator rests on, and the split each was made on."""
    d = meta["decoding"]
    sel: dict = {
        "rule": "every choice reads the validation split (Multi30k val); test2016 is only reported",
        "checkpoint": {
            "split": "validation",
            "criterion": "greedy sacreBLEU of the PyTorch model after each epoch; the best epoch ships",
            "value": meta["training"]["best_val_bleu_greedy_pytorch"],
        },
        "vocabulary": {
            "split": "validation",
            "criterion": "joint vs per-language 8k SentencePiece, greedy validation BLEU per epoch on all the "
            "en-de data (training.translation.select_vocab; reports/translation-vocab); the same recipe for every pair",
            "chosen": "joint" if meta["config"]["joint_vocab"] else "separate",
        },
        "decoding": {
            "split": None,
            "criterion": f"fixed beforehand (beam {d['beam_size']}, GNMT length penalty {d['length_penalty']}), "
            "not tuned on any split",
        },
    }
    q = meta["metrics"].get("int8")
    if q and "validation_bleu_drop" in q:
        sel["int8_decoder"] = {
            "split": "validation",
            "criterion": f"ship decoder.int8.onnx if validation sacreBLEU drops by at most {q['max_drop']}",
            "validation_bleu_drop": q["validation_bleu_drop"],
            "shipped": q["shipped"],
        }
    g = meta.get("score_guide")
    if g:
        sel["score_threshold"] = {"split": "validation", "criterion": g["threshold_rule"], "value": g["threshold"]}
    if meta.get("data", {}).get("corpus") == "general":
        tc = meta.get("train_config", {})
        sel["rule"] = (
            "every choice reads the validation sets (the held-out Tatoeba slice, newstest2013, Multi30k val); "
            "test2016 is only reported"
        )
        sel["checkpoint"]["criterion"] = (
            "mean greedy sacreBLEU of the PyTorch model over the validation sets (at most "
            f"{tc.get('val_max') or 'all'} sentences of each) after each epoch; the best epoch ships"
        )
        sel["vocabulary"] = {
            "split": None,
            "criterion": f"joint SentencePiece of {meta['config']['src_vocab']} with byte fallback and split "
            "digits, not tuned on validation: 8k for training speed (the output layer dominates the cost), "
            "larger where 8k cuts everyday words into pieces the model drops (en-de: 10k keeps 'invoice' whole, "
            "8k and 9k do not; docs/history.md); joint over separate was chosen on validation for the caption models",
            "chosen": "joint" if meta["config"]["joint_vocab"] else "separate",
        }
        choice = meta["data"].get("mixture_choice")
        sel["mixture"] = {
            "split": "validation" if choice else None,
            "criterion": f"source weights {tc.get('weights')} per epoch, " + (choice or "set beforehand and not tuned"),
        }
        if "int8_decoder" in sel:
            sel["int8_decoder"]["criterion"] += " (the mean over the validation sets)"
    return sel


def _choices_and_parity(meta: dict) -> list[str]:
    """The card's selection record and its parity section, the same for every translator."""
    lines: list[str] = []
    sel = meta["selection"]
    lines.append(f"{sel['rule'][0].upper()}{sel['rule'][1:]}.")
    lines.append("")
    for key, s in sel.items():
        if key != "rule":
            where = f"on {s['split']}" if s["split"] else "on no split"
            lines.append(f"- {key.replace('_', ' ')}, {where}: {s['criterion']}.")
    step, search = meta["parity"]["step"], meta["parity"]["beam_search"]
    lines += [
        "",
        "## Parity with the trained model",
        "",
        f"Each decoder step, ONNX vs PyTorch on real validation batches: max |Δ log-prob| "
        f"{step['step_max_abs_diff']:.1e} over {step['steps_compared']} steps (gate {step['atol']}). Full beam "
        f"search: {search['identical']} of {search['sentences']} validation translations identical "
        f"(gate {search['required']:.0%}).",
        "",
    ]
    return lines


def _num(x: float) -> str:
    return f"{x:.2f}"


def _cell(text: str) -> str:
    """A sentence as a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _general_card(meta: dict) -> list[str]:
    """The body of the card of a general-domain translator (issue 21): data and terms, figures on
    each validation set and on test2016, everyday sentences in and out, the score guide, choices."""
    m, d, g, q = meta["metrics"], meta["decoding"], meta["score_guide"], meta["metrics"].get("int8", {})
    data, v = meta["data"], g["validation"]
    lines = [
        "It learned from everyday sentences, news sentences and image captions, each with its terms:",
        "",
        *[f"- **{name}**: {text}." for name, text in data["sources"].items()],
        "",
        f"Training mixture: {data['train']}. Texts of several sentences are split into sentences "
        "(service.runtime.sentences) and translated one by one. "
        + (f"Names and numbers: {meta['tokenizer']['copy_through']}. " if "copy_through" in meta["tokenizer"] else "")
        + "Everyday sentences, measured on the files "
        f"in this folder as the service serves them on CPU by default (`{g['measured_with']}`):",
        "",
        "| input | output | score |",
        "|---|---|---|",
        *[f"| {o['text']} | {o['translation']} | {_num(o['score'])} |" for o in g["out_of_domain"]],
        "",
        "## Quality",
        "",
        f"Beam {d['beam_size']}, length penalty {d['length_penalty']}, at most {d['max_len_ratio']} × source "
        f"+ {d['max_len_extra']} subwords; computed with onnxruntime on the files in this folder. "
        f"Validation: {data['validation']}; test: {data['test']}.",
        "",
        "| set | sacreBLEU | chrF | BLEU (lowercase, tokenized) |",
        "|---|---|---|---|",
    ]
    rows = [(f"validation: {k}", x) for k, x in m.get("validation_sets", {}).items()]
    rows += [("validation, mean", m["validation"]), ("test: Multi30k test2016", m["test"])]
    if q.get("shipped"):
        rows += [(f"validation: {k}, int8 decoder", x) for k, x in q.get("validation_sets", {}).items()]
        rows += [("validation, mean, int8 decoder", q["validation"]), ("test2016, int8 decoder", q["test"])]
    lines += [f"| {k} | {x['bleu']:.2f} | {x['chrf']:.2f} | {x['bleu_lc_tok']:.2f} |" for k, x in rows]
    samples = [(k, x) for k, x in m.get("validation_sets", {}).items() if x.get("samples")]
    if samples:
        lines += [
            "",
            "Validation sentences, evenly spaced through each set (the Tatoeba slice is ordered by length), "
            "translated by the files in this folder (fp32, beam 5):",
            "",
            "| set | source | translation | reference |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {_cell(e['source'])} | {_cell(e['translation'])} | {_cell(e['reference'])} |"
            for k, x in samples
            for e in x["samples"]
        ]
    lines += [
        "",
        "## How to read `score`",
        "",
        "`score` is the sum of the natural-log probabilities the model gave to each subword of its "
        "output (the end-of-sentence token included), divided by the GNMT length penalty "
        f"((5 + length) / 6)^{d['length_penalty']}; for a text of several sentences, the lowest of its "
        f"sentences' scores. On {v['n']} validation sentences: median {_num(v['percentiles']['50'])}, "
        f"10% below {_num(v['percentiles']['10'])}, 5% below {_num(v['percentiles']['5'])}. "
        "Mean sentence chrF by score:",
        "",
        "| score | sentences | mean sentence chrF |",
        "|---|---|---|",
        *[f"| {b['band']} | {b['n']} | {b['mean_chrf']:.1f} |" for b in v["bands"]],
        "",
        f"Rough threshold: be wary of a translation whose score is below {_num(g['threshold'])} "
        f"({g['threshold_rule']}); {g['validation_below_threshold']:.1%} of the validation sentences are.",
        "",
        "## Choices, and the data they were made on",
        "",
    ]
    return lines + _choices_and_parity(meta)


def translation_readme(meta: dict) -> str:
    cfg, m, d = meta["config"], meta["metrics"], meta["decoding"]
    src, tgt = LANGUAGES.get(cfg["src_lang"], cfg["src_lang"]), LANGUAGES.get(cfg["tgt_lang"], cfg["tgt_lang"])
    g, q = meta["score_guide"], m.get("int8", {})
    v, tok = g["validation"], meta["tokenizer"]
    vocab = (
        f"joint SentencePiece vocabulary of {tok['src_vocab']}"
        if tok["joint"]
        else f"SentencePiece vocabularies of {tok['src_vocab']} ({src}) and {tok['tgt_vocab']} ({tgt})"
    )
    lines = [
        f"# {meta['name']} {meta['version']}",
        "",
        f"{src} → {tgt} translator: a sequence-to-sequence model (bidirectional {cfg['cell'].upper()} encoder, "
        f"LSTM decoder {'with additive attention' if cfg['attention'] else 'without attention'}, {vocab}), "
        "served by `service` as ONNX. This card is generated from `metadata.json` "
        "(`python -m training.translation.evaluate --artifact <this folder> --rewrite-card`).",
        "",
        "## What it knows, and what it does not",
        "",
    ]
    if meta["data"].get("corpus") == "general":
        return "\n".join(lines + _general_card(meta))
    lines += [
        f"It learned from **{meta['data']['train'].split('(')[-1].rstrip(')')} image captions** and nothing else: "
        f"{meta['data']['dataset']} ({meta['data']['citation']}), one-sentence descriptions of Flickr photos "
        "(people, animals, clothes, streets, sports). On such sentences it is good (table below). It has "
        "never seen an email, an invoice, a user manual, a news article, a question or a dialogue, and it "
        "does not say so: out of its domain it returns fluent-looking text that is unrelated to the "
        "input, often with invented words. Measured on the files in this folder, through the service's "
        f"model class as it serves them on CPU by default (`{g['measured_with']}`):",
        "",
        "| input | output | score |",
        "|---|---|---|",
    ]
    lines += [f"| {o['text']} | {o['translation']} | {_num(o['score'])} |" for o in g["out_of_domain"]]
    lines += [
        "",
        "None of these outputs is a translation. The response carries no warning; `score` is the only hint.",
        "",
        "## How to read `score`",
        "",
        "`score` is the sum of the natural-log probabilities the model gave to each subword of its "
        "output (the end-of-sentence token included), divided by the GNMT length penalty "
        f"((5 + length) / 6)^{d['length_penalty']}: a length-normalized log-probability, 0 at best, more "
        "negative when the model was less sure. It ranks the beam's candidates; it is not a probability "
        "and not a quality estimate calibrated on anything but captions.",
        "",
        f"On the {v['n']} validation captions: median {_num(v['percentiles']['50'])}, "
        f"25% below {_num(v['percentiles']['25'])}, 10% below {_num(v['percentiles']['10'])}, "
        f"5% below {_num(v['percentiles']['5'])}, 1% below {_num(v['percentiles']['1'])}. "
        "How good the translations are, by score (chrF of each sentence against its reference, mean):",
        "",
        "| score | captions | mean sentence chrF |",
        "|---|---|---|",
    ]
    lines += [f"| {b['band']} | {b['n']} | {b['mean_chrf']:.1f} |" for b in v["bands"]]
    n_ood, below = len(g["out_of_domain"]), g["out_of_domain_below_threshold"]
    lines += [
        "",
        f"**Rough threshold: do not trust a translation whose score is below {_num(g['threshold'])}** "
        f"({g['threshold_rule']}). {below} of the {n_ood} out-of-domain sentences above fall below it, "
        f"and {g['validation_below_threshold']:.1%} of the validation captions do too (those are "
        "the captions it translates worst). Above the threshold is no guarantee: the ranges overlap, "
        "and garbage can score above it. If your input is not a short description of a scene, expect "
        "nonsense whatever the score.",
        "",
        "## Quality on its own domain",
        "",
        f"Beam {d['beam_size']}, length penalty {d['length_penalty']}, at most {d['max_len_ratio']} × source "
        f"+ {d['max_len_extra']} subwords; computed with onnxruntime on the files in this folder. "
        f"Validation: {meta['data']['validation']}; test: {meta['data']['test']}.",
        "",
        "| split | sacreBLEU | chrF | BLEU (lowercase, tokenized) |",
        "|---|---|---|---|",
    ]
    for s in ("validation", "test"):
        lines.append(f"| {s} | {m[s]['bleu']:.2f} | {m[s]['chrf']:.2f} | {m[s]['bleu_lc_tok']:.2f} |")
    if q.get("shipped"):
        for s in ("validation", "test"):
            lines.append(
                f"| {s}, int8 decoder (`decoder.int8.onnx`) | {q[s]['bleu']:.2f} | {q[s]['chrf']:.2f} | "
                f"{q[s]['bleu_lc_tok']:.2f} |"
            )
    if "baseline_no_attention_test" in m:
        b = m["baseline_no_attention_test"]
        lines.append(
            f"| test, no-attention baseline of the same size | {b['bleu']:.2f} | {b['chrf']:.2f} | "
            f"{b['bleu_lc_tok']:.2f} |"
        )
    if q.get("shipped"):
        lines += cross_cpu_lines(meta["golden"])
    lines += ["", "![BLEU by source length](bleu_by_length.png)", "", "## Choices, and the data they were made on", ""]
    return "\n".join(lines + _choices_and_parity(meta))
