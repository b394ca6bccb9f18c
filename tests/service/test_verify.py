"""`python -m service.verify` on the shipped models: passes them on this CPU, and refuses a flipped
byte in any file, the previous (CPU-dependent) int8 recipe, a broken export and a wrong model, each
with a message naming the file. The emulated CPUs are tests/test_cross_cpu.py's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest
from onnxruntime.quantization import QuantType, quantize_dynamic

from service.runtime.artifacts import GoldenError, load_metadata, sha256_file, write_metadata
from service.verify import load_sentiment, verify
from tests.conftest import ROOT

SHIPPED = ROOT / "models"


@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("shipped") / "models"
    shutil.copytree(SHIPPED, dst)
    return dst


@pytest.fixture
def models(shipped_copy) -> Iterator[Path]:
    """The module's copy of the shipped models; whatever a test changes is put back after it."""
    saved = {p: p.read_bytes() for p in shipped_copy.rglob("*") if p.is_file() and p.stat().st_size < 1 << 20}
    yield shipped_copy
    for d in [p for p in shipped_copy.iterdir() if p.is_dir()]:
        if d.name not in {p.name for p in SHIPPED.iterdir()}:
            shutil.rmtree(d)
    for p, data in saved.items():
        p.write_bytes(data)
    for p in SHIPPED.rglob("*"):  # large files: copied back only when changed
        q = shipped_copy / p.relative_to(SHIPPED)
        if p.is_file() and (not q.exists() or q.stat().st_size != p.stat().st_size or sha256_file(q) != sha256_file(p)):
            shutil.copy(p, q)


def run_verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service.verify", "--device", "cpu", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def rehash(folder: Path, name: str) -> None:
    """Record the new hash of `name`, as someone who swaps a file and its metadata would."""
    meta = load_metadata_unchecked(folder)
    meta["files"][name] = sha256_file(folder / name)
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))


def load_metadata_unchecked(folder: Path) -> dict:
    return json.loads((folder / "metadata.json").read_text(encoding="utf-8"))


def test_the_shipped_models_verify_on_this_cpu_one_line_each():
    r = run_verify("--models-dir", str(SHIPPED))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.strip().splitlines()
    folders = sorted(p.name for p in SHIPPED.iterdir() if (p / "metadata.json").is_file())
    assert [ln.split()[0] for ln in lines[:-1]] == folders
    for ln in lines[:-1]:
        meta = load_metadata(SHIPPED / ln.split()[0])
        assert meta["name"] in ln and meta["version"] in ln and "CPUExecutionProvider" in ln
        assert " int8 " in ln and ln.endswith("ok")  # auto on CPU serves the int8 variants
    assert lines[-1] == f"{len(folders)} of {len(folders)} models verified"


def test_fp32_verifies_too():
    r = run_verify("--models-dir", str(SHIPPED), "--precision", "fp32")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(" fp32 ") == len(r.stdout.strip().splitlines()) - 1


def test_a_flipped_byte_in_any_model_file_fails_naming_the_file(models):
    files = sorted(p for p in models.rglob("*") if p.suffix in (".onnx", ".bin"))
    assert len(files) >= 8  # sentiment fp32 + int8; per translator encoder, decoder, int8 decoder, embedding
    for f in files:
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
        bad = [v for v in verify(models, precision="auto") if not v.ok]
        assert [v.folder for v in bad] == [f.parent.name], f
        assert f"{f}: sha256 mismatch" in bad[0].error
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
    # and the command line: exit status 1, the file named on the failing line
    f = models / "sentiment" / "model.int8.onnx"
    data = bytearray(f.read_bytes())
    data[-100] ^= 0xFF
    f.write_bytes(bytes(data))
    r = run_verify("--models-dir", str(models))
    assert r.returncode == 1
    failed = [ln for ln in r.stdout.splitlines() if "FAILED" in ln]
    assert len(failed) == 1 and failed[0].startswith("sentiment") and str(f) in failed[0]
    assert r.stdout.strip().endswith("failed: sentiment")


def test_the_previous_cpu_dependent_int8_recipe_is_refused(models):
    """The file shipped until 2026-12-04 (full-range int8 weights, whose answers depend on the CPU)
    put in place of today's with its hash recorded: the golden check refuses it on any CPU, since
    its weights are not the ones whose outputs were recorded."""
    art = models / "sentiment"
    m = onnx.load(str(art / "model.onnx"))
    del m.graph.value_info[:]
    with tempfile.TemporaryDirectory() as td:
        plain = Path(td) / "plain.onnx"
        onnx.save(m, str(plain))
        quantize_dynamic(str(plain), str(art / "model.int8.onnx"), weight_type=QuantType.QInt8)
    rehash(art, "model.int8.onnx")
    with pytest.raises(
        GoldenError, match=r"model\.int8\.onnx: golden-input check failed \(max abs logit difference"
    ) as e:
        load_sentiment(art, precision="int8")
    assert "--precision fp32" in str(e.value)  # the way out
    load_sentiment(art, precision="fp32")  # fp32 is untouched


def test_a_broken_export_is_refused(models):
    art = models / "translate-en-de"
    f = art / "decoder.int8.onnx"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    rehash(art, f.name)
    (v,) = [v for v in verify(models) if v.folder == "translate-en-de"]
    assert not v.ok and f"{f}: ONNX Runtime cannot load this model file" in v.error


def test_a_wrong_model_in_the_folder_is_refused(models):
    """en-fr's encoder in en-de's folder, hashes recorded: loads, but translates the golden
    inputs into something else."""
    de, fr = models / "translate-en-de", models / "translate-en-fr"
    shutil.copy(fr / "encoder.onnx", de / "encoder.onnx")
    rehash(de, "encoder.onnx")
    for precision in ("fp32", "int8"):
        (v,) = [v for v in verify(models, precision=precision) if v.folder == "translate-en-de"]
        assert not v.ok and "golden-input check failed" in v.error, v


def test_an_empty_models_folder_fails(tmp_path):
    r = run_verify("--models-dir", str(tmp_path))
    assert r.returncode == 1 and "no model artifacts" in r.stdout


def test_the_int8_tolerance_is_the_one_measured_across_cpus():
    """Each shipped int8 artifact's golden tolerance is derived from its recorded cross-CPU spread
    (training.cross_cpu.tolerance), and that spread covers at least two other instruction sets."""
    from training.cross_cpu import tolerance

    for folder in (p for p in SHIPPED.iterdir() if (p / "metadata.json").is_file()):
        g = load_metadata(folder)["golden"]
        rec = g["int8_cross_cpu"]
        assert set(rec["emulated"]) >= {"Haswell", "Nehalem"} and rec["differ"] == 0
        assert rec["spread"] == max(e["max_abs"] for e in rec["emulated"].values())
        assert g["int8_atol"] == tolerance(rec["spread"]) <= 0.1


def test_write_metadata_keeps_verification_consistent(models):
    # Rewriting metadata through the project's writer (as the exports do) keeps every check passing.
    art = models / "sentiment"
    write_metadata(art, {k: v for k, v in load_metadata(art).items() if k != "files"})
    assert all(v.ok for v in verify(models) if v.folder == "sentiment")
