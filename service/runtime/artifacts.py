"""Shipped model artifacts: a folder with ONNX files, tokenizer files and `metadata.json`.

`metadata.json` records what produced the artifact (config, data, commit), what it scored, its
input/output interface, golden input/output pairs and the sha256 of every file. `load_metadata`
verifies all of it and refuses a mismatched, missing or corrupt file with an error that names it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

METADATA = "metadata.json"


class ArtifactError(RuntimeError):
    """An artifact is missing, incomplete, corrupt or does not match its metadata."""


# int8 golden tolerance of artifacts exported before the cross-CPU measurement was recorded
# (metadata golden.int8_atol); new exports carry their own, derived from the measured spread.
LEGACY_INT8_ATOL = 1e-2


class GoldenError(ArtifactError):
    """A model file whose hash matches but whose outputs on the stored golden inputs do not:
    a wrong or broken export, or (int8) a CPU whose kernels compute differently from every CPU
    the export was measured on. The message names the file, the check, by how much, and the way out."""

    def __init__(self, path: Path, detail: str, precision: str):
        way_out = (
            "this int8 file computes differently on this CPU than on every CPU its export was measured on "
            "(metadata golden.int8_cross_cpu); serve fp32 instead (--precision fp32, or RNNSERVE_PRECISION=fp32) "
            "and report the CPU (lscpu) with the output of `python -m service.verify`"
            if precision == "int8"
            else "the model file is not the export its metadata describes, or this ONNX Runtime computes it "
            "differently; re-export it (make train-*/export) or reinstall the pinned onnxruntime"
        )
        super().__init__(f"{path}: golden-input check failed ({detail}); {way_out}")
        self.path, self.detail, self.precision = path, detail, precision


def golden_tolerance(golden: dict[str, Any]) -> float:
    """The int8 golden tolerance an artifact records: its export's measured cross-CPU spread with
    a margin (golden.int8_atol), or the older per-family keys, or LEGACY_INT8_ATOL."""
    for key in ("int8_atol", "int8_score_atol"):
        if key in golden:
            return float(golden[key])
    return LEGACY_INT8_ATOL


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_metadata(folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Hash every file of `folder` (but metadata.json) into meta["files"], then write it."""
    files = {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and p.name != METADATA}
    meta = {**meta, "files": files}
    (folder / METADATA).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return meta


def load_metadata(folder: Path, *, required: tuple[str, ...] = (), task: str | None = None) -> dict[str, Any]:
    """Read and verify an artifact folder; return its metadata.

    Raises ArtifactError when metadata is missing or unreadable, when a listed or required file is
    missing, or when any file's sha256 differs from the recorded one.
    """
    path = folder / METADATA
    if not path.is_file():
        raise ArtifactError(f"{folder}: no {METADATA}; not a model artifact")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path}: unreadable metadata ({e})") from e
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{path}: no 'files' table of sha256 hashes")
    if task is not None and meta.get("task") != task:
        raise ArtifactError(f"{path}: task is {meta.get('task')!r}, expected {task!r}")
    for name in required:
        if name not in files:
            raise ArtifactError(f"{path}: required file {name} is not listed in metadata")
    for name, expected in files.items():
        f = folder / name
        if not f.is_file():
            raise ArtifactError(f"{f}: listed in metadata but missing")
        actual = sha256_file(f)
        if actual != expected:
            raise ArtifactError(
                f"{f}: sha256 mismatch (metadata {expected[:12]}..., file {actual[:12]}...); "
                "the file is corrupt, truncated or not the one this metadata describes"
            )
    return meta


def find_artifacts(models_dir: Path) -> dict[str, Path]:
    """Artifact folders under models_dir by folder name (those holding a metadata.json)."""
    if not models_dir.is_dir():
        return {}
    return {p.name: p for p in sorted(models_dir.iterdir()) if (p / METADATA).is_file()}
