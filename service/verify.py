"""Verify the models the server would load, on this machine, without starting it.

    python -m service.verify [--models-dir DIR] [--precision auto|fp32|int8] [--device auto|cpu|cuda]

For every artifact folder the server would load (`sentiment/`, `translate-*/`): the hash of every
file against metadata.json, ONNX Runtime loading each model file, and the golden check (the stored
inputs, recomputed here, against the stored outputs, within the artifact's tolerance). One line per
model (folder, name, version, precision, provider, max deviation / tolerance, verdict); exit status
1 when any model fails, and the failing line says which file, which check, by how much and what to
do. The server's workers load their models through `load_sentiment` and `load_translator`, so a
model this command passes is one the server starts with, and the other way round.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from service.runtime.artifacts import ArtifactError, find_artifacts, golden_tolerance
from service.runtime.providers import Device, Precision, ProviderError
from service.runtime.sentiment import FP32_GOLDEN_ATOL, SentimentModel
from service.runtime.translation import FP32_SCORE_ATOL, TranslationModel


def load_sentiment(
    folder: Path, *, device: Device = "cpu", threads: int = 1, precision: Precision = "auto", spin: bool = True
) -> tuple[SentimentModel, float]:
    """The verified sentiment model (hashes, session, golden check) and its golden deviation."""
    model = SentimentModel(folder, device=device, threads=threads, precision=precision, spin=spin)
    return model, model.check_golden()


def load_translator(
    folder: Path, *, device: Device = "cpu", threads: int = 1, precision: Precision = "auto", spin: bool = True
) -> tuple[TranslationModel, float]:
    """The verified translator (hashes, sessions, golden check) and its golden score deviation."""
    model = TranslationModel(folder, device=device, threads=threads, precision=precision, spin=spin)
    return model, model.check_golden()


def served_folders(models_dir: Path) -> dict[str, Path]:
    """The artifact folders the server loads: sentiment/ and every translate-*/ (by folder name)."""
    return {n: p for n, p in find_artifacts(models_dir).items() if n == "sentiment" or n.startswith("translate-")}


@dataclass(frozen=True)
class Verdict:
    folder: str
    ok: bool
    name: str = "-"
    version: str = "-"
    precision: str = "-"
    provider: str = "-"
    deviation: float | None = None
    tolerance: float | None = None
    error: str = ""

    def line(self) -> str:
        dev = "-" if self.deviation is None else f"max deviation {self.deviation:.1e} (tolerance {self.tolerance:.0e})"
        head = f"{self.folder:<16} {self.name:<32} {self.version:<20} {self.precision:<5} {self.provider:<22} {dev}"
        return f"{head}  ok" if self.ok else f"{head}  FAILED: {self.error}"


def verify_folder(folder: Path, *, precision: Precision = "auto", device: Device = "cpu") -> Verdict:
    load = load_sentiment if folder.name == "sentiment" else load_translator
    try:
        model, deviation = load(folder, device=device, precision=precision)
    except (ArtifactError, ProviderError) as e:
        return Verdict(folder.name, False, error=str(e))
    fp32_atol = FP32_GOLDEN_ATOL if isinstance(model, SentimentModel) else FP32_SCORE_ATOL
    return Verdict(
        folder.name,
        True,
        name=model.name,
        version=model.version,
        precision=model.precision,
        provider=model.provider,
        deviation=deviation,
        tolerance=golden_tolerance(model.meta["golden"]) if model.precision == "int8" else fp32_atol,
    )


def verify(models_dir: Path, *, precision: Precision = "auto", device: Device = "cpu") -> list[Verdict]:
    """One verdict per artifact the server would load; a models folder with none is one failure."""
    folders = served_folders(models_dir)
    if not folders:
        return [Verdict(str(models_dir), False, error=f"{models_dir}: no model artifacts (sentiment/, translate-*/)")]
    return [verify_folder(p, precision=precision, device=device) for p in folders.values()]


def main(argv: Sequence[str] | None = None) -> int:
    from service.settings import Settings  # the server's settings (RNNSERVE_* included): both load the same models

    s = Settings()
    ap = argparse.ArgumentParser(prog="python -m service.verify", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=s.models_dir, help=f"default: {s.models_dir}")
    ap.add_argument(
        "--precision", choices=["auto", "fp32", "int8"], default=s.precision, help=f"default: {s.precision}"
    )
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default=s.device, help=f"default: {s.device}")
    a = ap.parse_args(argv)
    verdicts = verify(a.models_dir, precision=a.precision, device=a.device)
    for v in verdicts:
        print(v.line(), flush=True)
    failed = [v.folder for v in verdicts if not v.ok]
    print(
        f"{len(verdicts) - len(failed)} of {len(verdicts)} models verified"
        + (f"; failed: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
