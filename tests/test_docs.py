"""The docs cannot lie: every example in README.md and docs/*.md is run against the real server
serving the shipped models, and its shown output checked (tests/doc_examples.py says how); the
files, make targets and modules the docs name exist; the settings table is the settings; and the
figures the docs quote are the ones in the JSON results they cite."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import httpx
import pytest

from service.settings import Settings
from tests.conftest import ROOT, Server
from tests.doc_examples import (
    Example,
    blocks,
    examples,
    figures_agree,
    match,
    match_text,
    parse_curl,
    parse_http,
    point_at,
    shown_json,
    slug,
    table,
)
from training.translation.evaluate import validation_by_set

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES: list[Example] = []
PROBLEMS: list[str] = []
for _page in PAGES:
    _found, _problems = examples(_page, ROOT)
    EXAMPLES += _found
    PROBLEMS += _problems


def page_text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Server:
    """The server on the shipped models/ with its defaults (on CPU), as `make serve` runs it."""
    srv = Server(ROOT / "models", log_dir=tmp_path_factory.mktemp("docs-server"))
    try:
        srv.wait_healthy()
        # Traffic on both endpoints first, so that a /metrics example has its series whatever runs before it.
        httpx.post(f"{srv.url}/v1/sentiment", json={"texts": ["Fine."]}, timeout=30).raise_for_status()
        httpx.post(f"{srv.url}/v1/translate", json={"texts": ["A dog."], "target_lang": "de"}, timeout=30)
        yield srv
    finally:
        srv.stop()


def test_the_docs_have_examples_and_each_shows_its_output():
    assert not PROBLEMS, "\n".join(PROBLEMS)
    pages = {e.page for e in EXAMPLES}
    assert {"README.md", "docs/api.md", "docs/models.md"} <= pages
    assert len(EXAMPLES) >= 15


def test_readme_reads_in_five_minutes():
    assert len(page_text("README.md").splitlines()) <= 200


def test_printed_lines_compare_their_numbers_and_only_metrics_lines_their_names():
    """ "negative 0.99" printed by a python example is a label and a number, not a Prometheus
    sample: the number must match. In /metrics output the sample's name and labels do."""
    assert match_text("negative 0.99", "negative 0.969") == ["line not in the output: 'negative 0.99'"]
    assert match_text("negative 0.97", "negative 0.969") == []
    assert (
        match_text(
            'rnn_requests_total{endpoint="sentiment"} 3', 'rnn_requests_total{endpoint="sentiment"} 41', prometheus=True
        )
        == []
    )
    assert match_text('rnn_requests_total{endpoint="sentiment"} 3', 'rnn_requests_total{endpoint="sentiment"} 41') != []


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example(ex: Example, shipped: Server):
    if ex.kind == "python":
        code = point_at(ex.code, shipped.url, shipped.grpc_url)
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        errs = match_text(ex.out, run.stdout)
        assert not errs, f"{ex.id}: " + "\n".join(errs) + f"\n--- printed:\n{run.stdout}"
        return
    c = parse_curl(ex.code)
    r = httpx.request(c.method, shipped.url + c.path, headers=c.headers, content=c.body, timeout=60)
    if ex.out_lang == "http":
        assert c.include_headers, f"{ex.id}: an http block shows headers: use curl -i"
        status, headers, body = parse_http(ex.out)
        assert r.status_code == status, f"{ex.id}: status {r.status_code}, shown {status}: {r.text[:500]}"
        for k, v in headers.items():
            assert k in r.headers, f"{ex.id}: no {k} header"
            assert v == "..." or r.headers[k] == v, f"{ex.id}: {k}: {r.headers[k]!r}, shown {v!r}"
    else:
        assert r.status_code == 200, f"{ex.id}: status {r.status_code}: {r.text[:500]}"
        body = ex.out
    if body.strip().startswith(("{", "[")):
        errs = match(shown_json(body), r.json())
        assert not errs, f"{ex.id}:\n" + "\n".join(errs) + f"\n--- got:\n{r.text[:3000]}"
    else:
        text = r.text
        if c.grep:
            text = "\n".join(line for line in text.splitlines() if c.grep in line)
        errs = match_text(body, text, prometheus=c.path.startswith("/metrics"))
        assert not errs, f"{ex.id}: " + "\n".join(errs) + f"\n--- got:\n{text[:3000]}"


# --- what the docs name exists ----------------------------------------------------------------------

TOP = ("service", "training", "bench", "deploy", "models", "reports", "docs", "tests", "loadgen", ".ci")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The page without its fenced blocks."""
    for b in blocks(text):
        text = text.replace(b.code, "")
    return text


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_files_the_page_names_exist(page):
    missing = []
    for span in CODE_SPAN.findall(prose(page.read_text(encoding="utf-8"))):
        for word in span.split():
            word = word.strip(".,;:()")
            if "/" not in word or word.split("/")[0] not in TOP or any(c in word for c in ("...", "=", "<")):
                continue
            if not list(ROOT.glob(word.replace("{", "").replace("}", "").rstrip("/") or word)):
                missing.append(word)
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            missing.append(target)
        elif anchor and dest.suffix == ".md":
            heads = [slug(h) for h in re.findall(r"^#+ (.+)$", prose(dest.read_text(encoding="utf-8")), re.M)]
            if anchor not in heads:
                missing.append(target)
    assert not missing, f"{page.name} names what does not exist: {missing}"


def test_make_targets_and_modules_the_docs_name_exist():
    makefile = page_text("Makefile")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    named_targets = set(re.findall(r"(?:^|`|&& )make ([a-z][\w-]*)", text, re.M))
    assert named_targets and named_targets <= targets, named_targets - targets
    modules = set(re.findall(r"python3? -m ([\w.]+)", text))
    assert "service" in modules
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    assert not missing, missing
    scripts = set(re.findall(r"python3? ((?:bench|reports|training)/[\w/.-]+\.py)", text))
    assert all((ROOT / s).exists() for s in scripts), scripts


def test_the_settings_table_is_the_settings():
    rows = table(page_text("docs/configuration.md"), "flag")[1:]
    fields = Settings.model_fields
    shown = {r[0].strip("`").removeprefix("--").replace("-", "_"): r for r in rows}
    assert list(shown) == list(fields), "docs/configuration.md must list every setting, in the order of Settings"
    for name, (_flag, env, default, meaning) in shown.items():
        assert env == f"`RNNSERVE_{name.upper()}`", (name, env)
        want = fields[name].default
        if want is None:
            assert default == "unset", (name, default)
        elif name == "models_dir":
            assert default == f"`{want.relative_to(ROOT)}/`", default
        elif isinstance(want, (int, float)):
            assert float(default.strip("`")) == want, (name, default)
        else:
            assert default == f"`{want}`", (name, default)
        assert meaning, name


# --- the figures quoted are the ones in the results -------------------------------------------------


def load(path: str) -> dict:
    return json.loads(page_text(path))


def check_rows(rows: list[list[str]], expected: dict[str, list[float]], where: str) -> None:
    """Each row whose first cell is a key of `expected` shows those figures (every key must have its row)."""
    errs, seen = [], set()
    for r in rows:
        if r[0] in expected:
            seen.add(r[0])
            errs += figures_agree(r[1:], expected[r[0]], f"{where} {r[0]!r}")
    errs += [f"{where}: no row {k!r}" for k in expected if k not in seen]
    assert not errs, "\n".join(errs)


def test_benchmark_table_is_bench_results_serving_json():
    rows = table(page_text("docs/benchmarks.md"), "endpoint")
    want = {}
    for s in load("bench/results/serving.json")["summary"]:
        want[s["endpoint"]] = [
            s["concurrency"], s["batched_rps"], s["unbatched_rps"], s["batching_speedup"], s["raw_rps"],
            100 * s["served_over_raw"], s["batched_p50_ms"], s["batched_p99_ms"], s["unbatched_p50_ms"],
            s["unbatched_p99_ms"], s["mean_batch"], s["raw_batching_speedup"], s["raw_batch"], 1,
            s["batched_cpu_ms"], s["unbatched_cpu_ms"],
        ]  # fmt: skip
    check_rows(rows, want, "docs/benchmarks.md")


def test_fair_vs_fifo_table_is_bench_results_serving_json():
    """Issue 22's one-client line: fair scheduling's cost against fifo, as measured side by side."""
    rows = table(page_text("docs/benchmarks.md"), "endpoint (fair vs fifo)")
    want = {
        c["endpoint"]: [c["rps"], c["other_rps"], c["throughput_ratio"], c["p99_ms"], c["other_p99_ms"], c["p99_ratio"]]
        for c in load("bench/results/serving.json")["comparisons"]
        if c["comparison"] == "fifo"
    }
    assert set(want) == {"sentiment", "translate"}
    check_rows(rows, want, "docs/benchmarks.md")


def test_protocol_table_is_bench_results_serving_json():
    rows = table(page_text("docs/benchmarks.md"), "endpoint / protocol")
    want = {
        f"{p['endpoint']} / {p['protocol']}": [
            p["rps"], p["over_v1"], p["p50_ms"], p["p99_ms"], p["mean_batch"], p["server_cpu_ms"], p["client_cpu_ms"]
        ]
        for p in load("bench/results/serving.json")["protocols"]
    }  # fmt: skip
    assert len(want) == 8
    check_rows(rows, want, "docs/benchmarks.md")


def test_perf_analyzer_table_is_bench_results_perf_analyzer_json():
    rows = table(page_text("docs/oip.md"), "model / protocol")
    want = {}
    for r in load("bench/results/perf_analyzer.json")["results"]:
        s = r["server"]
        assert s["failures"] == 0
        want[f"{r['model']} / {r['protocol']}"] = [
            r["concurrency"], r["throughput_infer_per_s"], r["p50_us"] / 1000, r["p99_us"] / 1000,
            s["requests"], s["failures"], s["success_us"] / 1000, s["queue_us"] / 1000, s["compute_infer_us"] / 1000,
        ]  # fmt: skip
    check_rows(rows, want, "docs/oip.md")


def test_soak_table_and_verdict_are_bench_results_soak_json():
    text = page_text("docs/reliability.md")
    soak = load("bench/results/soak.json")
    want = {
        str(m["minute"]): [
            m["requests"], m["errors"], m["p50_ms"], m["p99_ms"], m["max_ms"], m["sentiment_p99_ms"],
            m["translate_p99_ms"], m["rss_mb_median"],
        ]
        for m in soak["minutes"]
    }  # fmt: skip
    check_rows(table(text, "minute"), want, "docs/reliability.md")
    v = soak["verdict"]
    assert v["pass"] and "Verdict **pass**" in text
    assert f"**{soak['requests']:,} requests, 0 errors**" in text and not v["errors"]
    assert f"RSS {v['rss_first_minute_mb']} → {v['rss_last_minute_mb']} MB (+{v['rss_growth'] * 100:.2f}%)" in text
    for ep in ("sentiment", "translate"):
        p = v["p99"][ep]
        assert f"{ep} {p['first_minute_ms']} → {p['last_minute_ms']} ms ({p['ratio']:.2f}×)" in text
    # history.md's row for this run agrees too
    row = next(r for r in table(page_text("docs/history.md"), "run") if r[0].startswith("3"))
    assert f"{soak['requests']:,}" in row[3] and f"{v['rss_first_minute_mb']} → {v['rss_last_minute_mb']}" in row[5]


# metadata.json's evaluation sets, as the translation table in docs/models.md names them.
TRANSLATION_SETS = {
    "tatoeba": "Tatoeba slice (validation)",
    "newstest2013": "newstest2013 (validation)",
    "multi30k": "Multi30k val (validation)",
    "test2016": "Multi30k test2016 (test)",
}


def test_model_tables_are_the_models_metadata():
    text = page_text("docs/models.md")
    meta = load("models/sentiment/metadata.json")
    m, ref = meta["metrics"], meta["reference"]
    served = m["served_precision"]
    check_rows(
        table(text, "headline"),
        {
            f"IMDB test accuracy ({served}, as served)": [
                100 * ref["imdb_test_accuracy_recorded"], 100 * m[f"imdb_test_{served}"]["accuracy"]
            ],
            "SST-2 dev accuracy": [
                100 * ref["validation_by_domain"]["sst2"]["accuracy"], 100 * m["validation_by_domain"]["sst2"]["accuracy"]
            ],
            "mean validation accuracy over the 16 sources": [
                100 * ref["validation_mean_accuracy"], 100 * m["validation_mean_accuracy"]
            ],
            "expected calibration error, pooled validation": [
                meta["calibration"]["ece_before"], meta["calibration"]["ece_after"]
            ],
        },
        "sentiment headline",
    )  # fmt: skip
    want = {
        d: [r["n"], 100 * ref["validation_by_domain"][d]["accuracy"], 100 * r["accuracy"]]
        for d, r in m["validation_by_domain"].items()
    }
    check_rows(table(text, "source"), want, "sentiment by domain")
    rates = meta["behaviour"]["failure_rates"]
    want = {c: [100 * ref["behaviour"]["failure_rates"][c], 100 * r] for c, r in rates.items()}
    check_rows(table(text, "capability"), want, "sentiment behaviour")
    # One row per pair and evaluation set: a general-domain model has three validation sets, a
    # caption-only one has Multi30k val; both have test2016.
    want = {}
    for pair, label in (("en-de", "en→de"), ("en-fr", "en→fr")):
        m = load(f"models/translate-{pair}/metadata.json")["metrics"]
        fp32 = {**validation_by_set(m), "test2016": m["test"]}
        int8 = {**validation_by_set(m["int8"]), "test2016": m["int8"]["test"]}
        for key, name in TRANSLATION_SETS.items():
            if key in fp32:
                f, q = fp32[key], int8[key]
                want[(label, name)] = [f["n"], f["bleu"], f["chrf"], q["bleu"], q["chrf"]]
    rows = {(r[0], r[1]): r[2:] for r in table(text, "pair")[1:]}
    errs = [f"translation table: no row {k}" for k in want if k not in rows]
    errs += [f"translation table: row {k} is no model's" for k in rows if k not in want]
    errs += [e for k in want if k in rows for e in figures_agree(rows[k], want[k], f"translation {k}")]
    assert not errs, "\n".join(errs)
    # What attention buys: measured on the caption-only en-de, the last translator trained beside a
    # no-attention twin (reports/translation-attention).
    by_len = load("reports/translation-attention/caption-en-de.json")["test_bleu_by_source_length"]
    att, base = by_len["attention (shipped)"], by_len["no attention (baseline)"]
    want = {a["bucket"]: [a["n"], a["bleu"], b["bleu"]] for a, b in zip(att, base, strict=True)}
    check_rows(table(text, "source words"), want, "BLEU by length")


def test_measured_tables_are_their_reports():
    text = page_text("docs/models.md")
    scores = load("reports/translation-score/scores.json")["pairs"]
    rows = table(text, "translator")
    shown_as = {  # the report's set names, as the table words them
        "in-domain: Multi30k test2016 (image captions)": "captions (Multi30k test2016)",
        "out-of-domain: hotel review sentences (SemEval ABSA)": "hotel review sentences",
        "out-of-domain: IMDB test review sentences": "IMDB review sentences",
    }
    errs = []
    for pair, label in (("en-de", "en→de"), ("en-fr", "en→fr")):
        assert set(scores[pair]["sets"]) == set(shown_as)
        for name, s in scores[pair]["sets"].items():
            row = [r for r in rows if r[:2] == [label, shown_as[name]]]
            assert len(row) == 1, (label, name)
            exp = [s["n"], s["median"], s["p10"], s["p90"], 100 * s["share_below"]["-5"], 100 * s["share_below"]["-8"]]
            errs += figures_agree(row[0][2:], exp, f"score {label} {name}")
    assert not errs, "\n".join(errs)


@pytest.mark.parametrize("script", sorted(ROOT.glob("reports/*/measure.py")), ids=lambda p: p.parent.name)
def test_the_measurement_scripts_the_docs_cite_still_import(script):
    """reports/*/measure.py made the JSON that docs/models.md quotes; they must keep running against
    the service's model classes wherever those move."""
    spec = importlib.util.spec_from_file_location(f"measure_{script.parent.name.replace('-', '_')}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(module.main)


def test_figures_quoted_in_prose_are_the_results():
    """The few figures the README and the model page quote in sentences, not tables."""
    readme = " ".join(page_text("README.md").split())
    fr, de = (load(f"models/translate-{pair}/metadata.json")["score_guide"] for pair in ("en-fr", "en-de"))
    assert all("5th percentile" in g["threshold_rule"] for g in (fr, de))
    assert (
        f"5% of validation sentences score below {fr['threshold']:.1f} into French and below {de['threshold']:.1f} into German"
        in readme
    )
    models = " ".join(page_text("docs/models.md").split())
    base = load("reports/translation-attention/caption-en-de.json")
    b, t = base["baseline_no_attention_test"], base["test"]
    assert (
        f"scores {b['bleu']:.2f} sacreBLEU on test2016 en→de (chrF {b['chrf']:.2f}) against {t['bleu']:.2f}" in models
    )
    speed = load("bench/results/training_speed.json")
    bench = " ".join(page_text("docs/benchmarks.md").split())
    fp32 = f"{speed['target_subwords_per_cpu_second']['fp32']:,.0f} target subwords per CPU second"
    assert f"({speed['isa']} only, no bfloat16 units; `bench/results/training_speed.json`): fp32 {fp32}" in bench
    assert ("bfloat16 cannot run at all" in bench) == ("bf16" in speed["failed"])
    assert f"so `auto` trains in {speed['amp_auto_picks'].replace('off', 'fp32')} there" in bench
    balance = load("bench/results/worker_balance.json")
    c, q = balance["ways"]["consecutive"], balance["ways"]["paired"]
    assert f"{c['target_subwords_per_s']:,.0f} target subwords/s with the workers idle {c['idle_share']:.1%}" in bench
    assert (
        f"{q['target_subwords_per_s']:,.0f}, idle {q['idle_share']:.1%}: **{balance['paired_over_consecutive']:.2f}x**"
        in bench
    )
    assert q["target_subwords_per_s"] / c["target_subwords_per_s"] == pytest.approx(
        balance["paired_over_consecutive"], abs=1e-3
    )
    export = load("bench/results/export_speed.json")
    med = export["median_seconds"]
    assert export["outputs_identical"] and f"medians of {export['rounds']} rounds" in bench
    assert (
        f"{export['sentences']:,} sentences in {med['decode_one_process']:.2f} s in one process, "
        f"{med['decode_pool']:.2f} s on {export['pool_workers']} workers, **{export['decode_speedup']:.2f}x**" in bench
    )
    assert (
        f"the parity check on {export['parity_sentences']} sentences {med['parity_sequential']:.2f} s against "
        f"{med['parity_side_by_side']:.2f} s, **{export['parity_speedup']:.2f}x**" in bench
    )
    subset = load("bench/results/softmax_subset.json")["modes"]
    for n in ("1000", "2000"):
        m = subset[f"subset{n}"]
        assert f"{m['target_subwords_per_cpu_second']:,.0f}, **{m['over_whole']:.2f}x**" in bench
        assert f"({m['mean_classes']:,.0f} classes" in bench or f"over {m['mean_classes']:,.0f} classes" in bench
    assert (
        f"whole vocabulary {subset['whole']['target_subwords_per_cpu_second']:,.0f} target subwords per CPU second"
        in bench
    )
    adaptive = subset["adaptive2000-5000"]
    assert f"{adaptive['target_subwords_per_cpu_second']:,.0f}, **{adaptive['over_whole']:.2f}x**" in bench
    assert f"(a head softmax over {adaptive['mean_classes']:,.0f} classes)" in bench
    sizes = load("bench/results/model_sizes.json")["sizes"]
    assert f"({sizes['recipe']['target_subwords_per_cpu_second']:,} target subwords per CPU second)" in bench
    for name in (
        "recipe, adaptive",
        "dec 384, adaptive",
        "enc 192 dec 384, adaptive",
        "emb/enc/attn 192 dec 384, adaptive",
    ):
        assert f"**{sizes[name]['speed_vs_first']:.2f}x**" in bench, name
    history = (ROOT / "docs" / "history.md").read_text()
    assert (
        f"192 with the 384-wide\ndecoder {sizes['emb/enc/attn 192 dec 384, adaptive']['speed_vs_first']:.2f}x"
        in history
    )


def test_the_general_translators_cross_cpu_table_is_its_record():
    """docs/models.md's table of the general translators across emulated CPUs shows
    reports/translation-general/cross-cpu-sample.json, and names the CPU it was run from."""
    rec = load("reports/translation-general/cross-cpu-sample.json")
    models = page_text("docs/models.md")
    cpu = rec["native"]["cpu"].removesuffix(" (x86_64)")
    assert rec["native"]["isa"] == "AVX2" and f"from an {cpu} with\nAVX2 only" in models
    s = rec["models"]["sentiment"]
    assert (
        f"| sentiment | {s['Haswell']['n']:,} validation texts | 0 labels differ; probabilities within "
        f"{s['Haswell']['max_probability_shift']:.2g} | 0 labels differ; probabilities within "
        f"{s['Nehalem']['max_probability_shift']:.2g} |" in models
    )
    assert s["Haswell"]["differ"] == s["Nehalem"]["differ"] == 0
    for pair, lang in (("en-de", "de"), ("en-fr", "fr")):
        h, n = rec["models"][f"translate-{pair}"]["Haswell"], rec["models"][f"translate-{pair}"]["Nehalem"]
        assert h["differ"] == 0 and h["bleu_native"] == h["bleu_emulated"]
        row = (
            f"| en→{lang} (general) | {h['n']} validation sentences, beam 5 | 0 translations differ; BLEU "
            f"{h['bleu_native']:.2f} both | {n['differ']} differ ({n['differ'] / n['n']:.1%}); BLEU "
            f"{n['bleu_emulated']:.2f} against {n['bleu_native']:.2f} |"
        )
        assert row in models, row
