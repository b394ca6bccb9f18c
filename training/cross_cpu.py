"""The same artifact on other CPUs: run it under emulated x86-64 CPUs and measure how far its
outputs move. ONNX Runtime picks its int8 kernels by instruction set (AVX2's VPMADDUBSW saturates,
AVX-512 VNNI does not), so an int8 model's outputs are a property of the file *and* the CPU.

    python -m training.cross_cpu outputs models/sentiment --precision int8       # JSON, this CPU
    python -m training.cross_cpu spread models/sentiment --precision int8        # native vs emulated
    python -m training.cross_cpu sample models --sentiment 2000 --translations 200   # issue 20's check

Emulation is Debian's qemu-user (`qemu-x86_64 -cpu MODEL`), which runs this same Python and venv
with the CPUID of MODEL, so ONNX Runtime dispatches the kernels that CPU would get. The export
records the measured spread beside the golden outputs and derives the int8 tolerance from it
(`tolerance`); the tests run the verification under the same CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.runtime.artifacts import ArtifactError, write_metadata
from service.runtime.providers import Precision
from service.runtime.sentiment import SentimentModel
from service.runtime.translation import TranslationModel

# The emulated CPUs every export and test measures against, with what they lack. Nehalem is the
# oldest x86-64 that the wheels' baseline (x86-64-v2: SSE4.2, POPCNT) still runs on.
EMULATED_CPUS = {
    "Haswell": "AVX2 and FMA, no AVX-512 (Intel 2013-2017, AMD Zen 1-3 run the same int8 kernels)",
    "Nehalem": "SSE4.2, no AVX (pre-2011)",
}
# numpy's AVX2 sort and partition kernels crash under QEMU 7.2's emulated AVX2 (a masked load at a
# page edge; seen in np.argpartition); numpy's dispatch is not what is being measured, so emulated
# runs keep numpy on its x86-64-v2 baseline. ONNX Runtime still sees and uses the emulated AVX2.
EMULATION_ENV = {"NPY_DISABLE_CPU_FEATURES": "X86_V3"}
INT8_ATOL_FLOOR = 1e-3  # the int8 golden tolerance never goes below this, however close the CPUs agree
SPREAD_MARGIN = 10  # ...and is at least this many times the spread measured across CPUs
EMULATION_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Sample:
    texts: list[str]
    refs: list[str] | None = None  # translators: the references, for BLEU


def qemu() -> str | None:
    """The qemu-user binary that runs x86-64 programs, if installed (Debian: qemu-user)."""
    return shutil.which("qemu-x86_64") or shutil.which("qemu-x86_64-static")


def cpu_name() -> str:
    """This machine's CPU as lscpu names it (model name), and its architecture."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        name = ""
    return f"{name or platform.processor() or 'unknown CPU'} ({platform.machine()})"


def cpu_flags() -> str:
    """This CPU's feature flags as /proc/cpuinfo lists them (x86 "flags", Arm "Features"); "" elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((ln.split(":", 1)[1] for ln in text.splitlines() if ln.startswith(("flags", "Features"))), "")


def has_bf16_matmul(flags: str | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX or AVX512_BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & set((cpu_flags() if flags is None else flags).split()))


def isa(flags: str | None = None) -> str:
    """The int8-relevant instruction set of this CPU, from /proc/cpuinfo's flags."""
    f = set((cpu_flags() if flags is None else flags).split())
    for flag, name in (
        ("avx512_vnni", "AVX-512 VNNI"),
        ("avx512bw", "AVX-512"),
        ("avx_vnni", "AVX-VNNI"),
        ("avx2", "AVX2"),
        ("avx", "AVX"),
        ("sse4_2", "SSE4.2"),
        ("asimddp", "NEON dot product"),
        ("asimd", "NEON"),
    ):
        if flag in f:
            return name
    return "baseline"


def load(folder: Path, precision: Precision) -> SentimentModel | TranslationModel:
    folder = Path(folder)
    if json.loads((folder / "metadata.json").read_text())["task"] == "sentiment":
        return SentimentModel(folder, device="cpu", precision=precision)
    return TranslationModel(folder, device="cpu", precision=precision)


def outputs(folder: Path, precision: Precision, texts: list[str] | None = None) -> dict[str, Any]:
    """What the artifact computes for `texts` (default: its golden inputs) on this CPU: sentiment
    logits, or best translations and their scores (beam of the golden record)."""
    model = load(folder, precision)
    g = model.meta["golden"]
    texts = list(g["texts"]) if texts is None else texts
    if isinstance(model, SentimentModel):
        return {"logits": model.logits(model.encode(texts)).tolist()}
    hyps = model.translate(texts, beam_size=int(g.get("beam_size", 5)))
    return {"translations": [model.detok(h[0]) for h in hyps], "scores": [float(h[0].score) for h in hyps]}


def deviation(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | int]:
    """How far two `outputs` are apart: max abs logit or score difference, and how many labels or
    translations differ."""
    if "logits" in a:
        x, y = np.asarray(a["logits"]), np.asarray(b["logits"])
        return {"max_abs": float(np.abs(x - y).max()), "differ": int((x.argmax(-1) != y.argmax(-1)).sum())}
    d = float(np.abs(np.asarray(a["scores"]) - np.asarray(b["scores"])).max())
    return {"max_abs": d, "differ": sum(s != t for s, t in zip(a["translations"], b["translations"], strict=True))}


def emulated_outputs(
    cpu: str, folder: Path, precision: Precision, texts: list[str] | None = None, timeout: float = EMULATION_TIMEOUT_S
) -> dict[str, Any]:
    """`outputs` computed by this Python under `qemu-x86_64 -cpu <cpu>`."""
    binary = qemu()
    if binary is None:
        raise RuntimeError("qemu-x86_64 not found (Debian: apt-get install qemu-user)")
    cmd = [
        binary,
        "-cpu",
        cpu,
        sys.executable,
        "-m",
        "training.cross_cpu",
        "outputs",
        str(folder),
        "--precision",
        precision,
    ]
    inp = json.dumps(texts) if texts is not None else None
    if inp is not None:
        cmd.append("--stdin")
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, **EMULATION_ENV, "PYTHONPATH": str(root)}
    r = subprocess.run(cmd, input=inp, capture_output=True, text=True, timeout=timeout, cwd=root, env=env)
    if r.returncode != 0:
        tail = "\n".join(ln for ln in r.stderr.splitlines() if "TCG doesn't support" not in ln)[-2000:]
        raise RuntimeError(f"{' '.join(cmd[:3])}: exit {r.returncode}\n{tail}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def spread(folder: Path, precision: Precision, cpus: dict[str, str] = EMULATED_CPUS) -> dict[str, Any]:
    """The golden outputs on this CPU and under each emulated CPU: the deviation of each from this
    one, the largest, and the tolerance derived from it. Without qemu, only this CPU is measured,
    and the record says so."""
    native = outputs(folder, precision)
    record: dict[str, Any] = {"native": {"cpu": cpu_name(), "isa": isa()}, "emulated": {}}
    if qemu() is None:
        record["note"] = "qemu-x86_64 not installed at export: no other CPU measured"
    else:
        for cpu, what in cpus.items():
            record["emulated"][cpu] = {"isa": what, **deviation(native, emulated_outputs(cpu, folder, precision))}
    worst = max([0.0, *(d["max_abs"] for d in record["emulated"].values())])
    record["spread"] = worst
    record["differ"] = sum(d["differ"] for d in record["emulated"].values())
    record["tolerance"] = tolerance(worst)
    return record


INT8_GOLDEN_KEYS = ("logits_int8", "translations_int8", "scores_int8", "int8_atol", "int8_score_atol", "int8_cross_cpu")


def record_cross_cpu(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` with the int8 golden tolerance derived from the measured cross-CPU spread of the
    artifact in `folder` (its files as `meta` describes them, int8 variant shipped), and the
    measurement itself. Measured on a staged copy with `meta` written into it, so that the
    artifact's own metadata.json is still written once. Refuses an int8 file whose golden labels
    or translations change with the CPU: it is not portable."""
    with tempfile.TemporaryDirectory() as td:
        staged = Path(td) / folder.name
        shutil.copytree(folder, staged)
        write_metadata(staged, {k: v for k, v in meta.items() if k != "files"})
        rec = spread(staged, "int8")
    print(f"{folder.name}: int8 across CPUs: spread {rec['spread']:.1e}, tolerance {rec['tolerance']:.0e}", flush=True)
    if "note" in rec:  # a tolerance from one CPU may be too tight for another: say so where it is made
        print(
            f"WARNING: {folder.name}: {rec['note']}; its int8 tolerance holds for this CPU only, and `make test` "
            "refuses to ship it (Debian: apt-get install qemu-user, then export again)",
            file=sys.stderr,
            flush=True,
        )
    if rec["differ"]:
        raise ArtifactError(
            f"{folder}: the int8 golden outputs change with the CPU ({rec['differ']} labels or translations "
            f"differ: {json.dumps(rec['emulated'])}); quantize with the portable recipe (training.int8)"
        )
    return {**meta, "golden": {**meta["golden"], "int8_atol": rec["tolerance"], "int8_cross_cpu": rec}}


def tolerance(spread: float) -> float:
    """The golden tolerance for a measured cross-CPU spread: SPREAD_MARGIN times it, at least
    INT8_ATOL_FLOOR, rounded up to one significant digit."""
    t = max(INT8_ATOL_FLOOR, SPREAD_MARGIN * spread)
    e = np.floor(np.log10(t))
    return float(np.ceil(t / 10**e) * 10**e)


def validation_sample(models_dir: Path, data_dir: Path, n_sentiment: int, n_translations: int) -> dict[str, Sample]:
    """A fixed validation sample per artifact folder: sentiment, `n_sentiment` texts drawn (seed 0)
    from the pooled per-source validation splits; each translator, the first `n_translations`
    sentences of its validation split, with their references. Never a test set."""
    from service.verify import served_folders
    from training.sentiment.corpus import load_corpus
    from training.translation.data import load_pair

    out: dict[str, Sample] = {}
    for name, folder in served_folders(models_dir).items():
        if name == "sentiment":
            val = load_corpus(data_dir).val
            pooled = [r.text for d in sorted(val) for r in val[d]]
            idx = np.random.default_rng(0).permutation(len(pooled))[:n_sentiment]
            out[name] = Sample([pooled[i] for i in idx])
        else:
            cfg = json.loads((folder / "metadata.json").read_text())["config"]
            src, ref = load_pair(data_dir, "val", cfg["src_lang"], cfg["tgt_lang"])
            out[name] = Sample(src[:n_translations], ref[:n_translations])
    return out


def compare_sample(
    models_dir: Path, samples: dict[str, Sample], cpus: dict[str, str] = EMULATED_CPUS, precision: Precision = "int8"
) -> dict[str, Any]:
    """Each artifact's outputs on its sample, here and under each emulated CPU: labels that differ
    and the largest probability shift (sentiment); translations that differ, the largest score
    difference, and sacreBLEU here and there (translators)."""
    import sacrebleu

    result: dict[str, Any] = {"native": {"cpu": cpu_name(), "isa": isa()}, "precision": precision, "models": {}}
    for name, sample in samples.items():
        folder = models_dir / name
        native = outputs(folder, precision, sample.texts)
        per_cpu = {}
        for cpu in cpus:
            emu = emulated_outputs(cpu, folder, precision, sample.texts)
            d = deviation(native, emu)
            row: dict[str, Any] = {"n": len(sample.texts), "differ": d["differ"]}
            if "logits" in native:
                t = float(json.loads((folder / "metadata.json").read_text()).get("temperature", 1.0))
                p, q = (_softmax(np.asarray(o["logits"]) / t) for o in (native, emu))
                row["max_probability_shift"] = float(np.abs(p - q).max())
            else:
                row["max_score_diff"] = d["max_abs"]
                if sample.refs:
                    for side, o in (("native", native), ("emulated", emu)):
                        row[f"bleu_{side}"] = round(sacrebleu.corpus_bleu(o["translations"], [sample.refs]).score, 2)
            per_cpu[cpu] = row
            print(f"{name} under {cpu}: {row}", flush=True)
        result["models"][name] = per_cpu
    return result


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.cross_cpu", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("outputs", help="JSON outputs of one artifact on this CPU (golden inputs, or texts on stdin)")
    o.add_argument("folder", type=Path)
    o.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    o.add_argument("--stdin", action="store_true", help="read a JSON list of texts from stdin")
    s = sub.add_parser("spread", help="golden outputs here and under each emulated CPU")
    s.add_argument("folder", type=Path)
    s.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    c = sub.add_parser("sample", help="a fixed validation sample of every model, here and under each emulated CPU")
    c.add_argument("models_dir", type=Path)
    c.add_argument("--data-dir", type=Path, default=None)
    c.add_argument("--sentiment", type=int, default=2000, help="sentiment validation texts")
    c.add_argument("--translations", type=int, default=200, help="validation sentences per translator")
    c.add_argument("--precision", default="int8", choices=["fp32", "int8"])
    c.add_argument("--out", type=Path, default=None, help="write the result as JSON here too")
    a = ap.parse_args(argv)
    if a.cmd == "sample":
        from training.data import default_data_dir

        samples = validation_sample(a.models_dir, a.data_dir or default_data_dir(), a.sentiment, a.translations)
        result = compare_sample(a.models_dir, samples, precision=a.precision)
        if a.out:
            a.out.parent.mkdir(parents=True, exist_ok=True)
            a.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    if a.cmd == "outputs":
        texts = json.loads(sys.stdin.read()) if a.stdin else None
        print(json.dumps(outputs(a.folder, a.precision, texts)))
    else:
        print(json.dumps(spread(a.folder, a.precision), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
