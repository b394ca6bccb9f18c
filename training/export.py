"""Export trained checkpoints to ONNX, prove parity with PyTorch, and write the shipped artifact.

    python -m training.export sentiment --run runs/sentiment --out models/sentiment
    python -m training.export translation --run runs/translate-en-de --out models/translate-en-de

The command on top of the two exports (training.sentiment.export, training.translation.export).
Their ONNX interfaces (names, dynamic axes) are declared at their calls of
training.onnx_io.onnx_export; metadata.json and README.md come from training.card. Nothing is
written to --out unless the parity gate passes: the same real inputs through PyTorch and
onnxruntime must agree, or ParityError names the mismatch. Files are assembled in a temporary
folder and moved into place at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from training.data import default_data_dir
from training.sentiment.export import export_sentiment
from training.translation.export import export_translation


def install(tmp: Path, out: Path) -> None:
    """Replace `out` by the verified folder `tmp`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    shutil.move(str(tmp), str(out))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["sentiment", "translation"])
    p.add_argument("--run", type=Path, required=True, help="training output folder (holds best.pt)")
    p.add_argument("--out", type=Path, required=True, help="artifact folder to write, e.g. models/sentiment")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--version", default=None)
    p.add_argument("--baseline-run", type=Path, default=None, help="translation: no-attention run to compare by length")
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="sentiment: a previous artifact, evaluated on the same validation sets and behavioural suite (card: old beside new)",
    )
    p.add_argument(
        "--quantize",
        action="store_true",
        help="also try int8 weights (sentiment: the model; translation: the decoder step), shipped within their gate",
    )
    p.add_argument(
        "--average",
        type=int,
        default=0,
        help="translation: export the mean weights of the run's last N epochs instead of best.pt",
    )
    p.add_argument(
        "--mixture-choice",
        default=None,
        help="translation: how the training mixture's weights were chosen on validation, for the card's "
        "selection record (default: set beforehand and not tuned)",
    )
    a = p.parse_args(argv)
    data_dir = a.data_dir or default_data_dir()
    with tempfile.TemporaryDirectory(dir=a.out.parent if a.out.parent.exists() else None) as td:
        tmp = Path(td) / a.out.name
        tmp.mkdir()
        if a.task == "sentiment":
            meta = export_sentiment(a.run, tmp, data_dir, version=a.version, quantize=a.quantize, reference=a.reference)
        else:
            meta = export_translation(
                a.run,
                tmp,
                data_dir,
                version=a.version,
                baseline_run=a.baseline_run,
                quantize=a.quantize,
                average=a.average,
                mixture_choice=a.mixture_choice,
            )
        install(tmp, a.out)
    print(json.dumps({k: meta[k] for k in ("name", "version", "metrics", "parity")}, indent=2))


if __name__ == "__main__":
    main()
