"""Translation quality as a user gets it: sacreBLEU and chrF of what the server answers over HTTP.

Issue 21's acceptance is measured here, not in-process: the server (a running one at --url, or
`python -m service` started on a free port over --models-dir) translates each evaluation set in
requests of --per-request sentences, --concurrency at a time, at beam 5 with the precision it
serves by default (int8 where the artifact ships it); the answers are scored against the
references with sacreBLEU's defaults (BLEU 13a, chrF2).

The sets, per pair: the held-out Tatoeba slice and newstest2013 (the general recipe's validation
sets, on which the acceptance lines are also stated) and Multi30k test2016 (the test set, never
read in training or selection). The report gives each figure against the issue's line.

    python -m bench.translation_quality                         # models/, every pair, every set
    python -m bench.translation_quality --url http://127.0.0.1:8000 --limit 200 --out /tmp/q.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import sacrebleu
from tqdm import tqdm

from bench.server import ROOT, ServerProcess
from loadgen.client import Client
from training.data import default_data_dir
from training.translation.data import evenly, load_newstest2013, load_pair, tatoeba_split

# Issue 21's acceptance (sacreBLEU, beam 5, shipped int8, over HTTP): the lowest BLEU per set and pair.
ACCEPTANCE = {
    "tatoeba": {"en-de": 30.0, "en-fr": 36.0},
    "newstest2013": {"en-de": 8.0, "en-fr": 12.0},
    "multi30k_test2016": {"en-de": 35.0, "en-fr": 54.0},
}
SETS = tuple(ACCEPTANCE)


def load_set(data_dir: Path, name: str, src: str, tgt: str) -> tuple[list[str], list[str]]:
    if name == "tatoeba":
        return tatoeba_split(data_dir, src, tgt)["val"]
    if name == "newstest2013":
        return load_newstest2013(data_dir, src, tgt)
    if name == "multi30k_test2016":
        return load_pair(data_dir, "test", src, tgt)
    raise ValueError(f"unknown set {name!r}; choose from {', '.join(SETS)}")


def translate_over_http(
    client: Client, texts: list[str], src: str, tgt: str, *, beam: int, per_request: int, concurrency: int, desc: str
) -> tuple[list[str], float]:
    """Every text translated by the server, in order; and the wall seconds it took."""
    chunks = [texts[i : i + per_request] for i in range(0, len(texts), per_request)]

    def one(chunk: list[str]) -> list[str]:
        r = client.translate(chunk, tgt, source_lang=src, beam_size=beam)
        return [t.translation for t in r.results]

    t0 = time.perf_counter()
    out: list[str] = []
    with ThreadPoolExecutor(concurrency) as pool, tqdm(total=len(texts), desc=desc, unit="sent") as bar:
        for got in pool.map(one, chunks):
            out += got
            bar.update(len(got))
    return out, time.perf_counter() - t0


def evaluate(
    client: Client,
    data_dir: Path,
    pairs: list[str],
    sets: list[str],
    *,
    beam: int = 5,
    limit: int = 0,
    per_request: int = 16,
    concurrency: int = 4,
) -> list[dict[str, Any]]:
    rows = []
    for pair in pairs:
        src, tgt = pair.split("-")
        for name in sets:
            sources, refs = evenly(load_set(data_dir, name, src, tgt), limit)
            hyps, seconds = translate_over_http(
                client,
                sources,
                src,
                tgt,
                beam=beam,
                per_request=per_request,
                concurrency=concurrency,
                desc=f"{pair} {name}",
            )
            bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
            chrf = sacrebleu.corpus_chrf(hyps, [refs]).score
            line = ACCEPTANCE.get(name, {}).get(pair)
            rows.append(
                {
                    "pair": pair,
                    "set": name,
                    "n": len(sources),
                    "bleu": round(bleu, 2),
                    "chrf": round(chrf, 2),
                    "acceptance_bleu": line,
                    "ok": None if line is None or limit else bleu >= line,
                    "seconds": round(seconds, 1),
                    "samples": [
                        {"source": s, "translation": h, "reference": r}
                        for s, h, r in list(zip(sources, hyps, refs, strict=True))[:: max(1, len(sources) // 5)][:5]
                    ],
                }
            )
            print(
                f"{pair} {name}: BLEU {bleu:.2f} chrF {chrf:.2f} ({len(sources)} sentences, {seconds:.0f} s)",
                flush=True,
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| pair | set | sentences | BLEU | chrF | issue 21 line |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        line = "-" if r["acceptance_bleu"] is None else f"≥ {r['acceptance_bleu']:g}"
        if r["ok"] is not None:
            line += " ✓" if r["ok"] else " ✗"
        lines.append(f"| {r['pair']} | {r['set']} | {r['n']} | {r['bleu']:.2f} | {r['chrf']:.2f} | {line} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.translation_quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default=None, help="a running server; default: start one over --models-dir")
    p.add_argument("--models-dir", type=Path, default=ROOT / "models")
    p.add_argument("--data-dir", type=Path, default=None, help="default: ../shared/data if present, else ./data")
    p.add_argument("--pairs", default=None, help="comma-separated (default: every pair the server offers)")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, from {', '.join(SETS)}")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--limit", type=int, default=0, help="at most this many sentences of each set (no verdict)")
    p.add_argument("--per-request", type=int, default=16, help="sentences per request")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--server-arg", action="append", default=[], help="extra flag for the started server")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "translation_quality.json")
    a = p.parse_args(argv)
    sets = [s for s in a.sets.split(",") if s]
    if unknown := [s for s in sets if s not in SETS]:
        p.error(f"unknown set {unknown[0]!r}; choose from {', '.join(SETS)}")
    data_dir = a.data_dir or default_data_dir()

    server = None
    try:
        if a.url:
            url = a.url
        else:
            logs = Path(tempfile.mkdtemp(prefix="rnnserve-quality-"))
            server = ServerProcess(a.models_dir.resolve(), a.server_arg, logs, "quality")
            server.wait_healthy()
            url = server.url
        client = Client(url, timeout=600)
        info = client.info()
        offered = sorted({m["pair"] for m in info["models"] if m.get("task") == "translation"})
        pairs = [x for x in a.pairs.split(",") if x] if a.pairs else offered
        if missing := [x for x in pairs if x not in offered]:
            print(f"the server does not offer {', '.join(missing)} (it offers {', '.join(offered)})", file=sys.stderr)
            return 2
        models = [
            {k: m.get(k) for k in ("name", "version", "pair", "precision", "file", "providers")}
            for m in info["models"]
            if m.get("pair") in pairs
        ]
        rows = evaluate(
            client,
            data_dir,
            pairs,
            sets,
            beam=a.beam,
            limit=a.limit,
            per_request=a.per_request,
            concurrency=a.concurrency,
        )
        client.close()
    finally:
        if server is not None:
            server.stop()
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "url": a.url or "started over " + str(a.models_dir),
        "beam": a.beam,
        "limit": a.limit,
        "models": models,
        "results": rows,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print()
    print(table(rows))
    served = ", ".join(f"{m['name']} {m['version']} ({m['precision']})" for m in models)
    print(f"\nmodels: {served}; wrote {a.out}")
    return 1 if any(r["ok"] is False for r in rows) else 0


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
