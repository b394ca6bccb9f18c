"""Export trained checkpoints to ONNX, prove parity with PyTorch, and write the shipped artifact.

    python -m training.export sentiment --run runs/sentiment --out models/sentiment
    python -m training.export translation --run runs/translate-en-de --out models/translate-en-de

Interfaces (names, dynamic axes, opset) are declared here, once. Nothing is written to --out
unless the parity gate passes: the same real inputs through PyTorch and onnxruntime must agree
(see `check_sentiment_parity`, `check_translation_parity`); a failure raises ParityError naming
the mismatch. Files are assembled in a temporary folder and moved into place at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from training.data import PROJECT_ROOT

OPSET = 18


class ParityError(AssertionError):
    """ONNX and PyTorch disagree beyond tolerance; the artifact must not ship."""


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


def onnx_export(
    module: nn.Module,
    args: tuple,
    path: Path,
    *,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, str]],
) -> None:
    """torch.onnx export with named inputs/outputs and named dynamic axes (`dynamic` covers both).

    The TorchScript exporter (dynamo=False) is used on purpose: in torch 2.13 the dynamo exporter
    specializes a dynamic axis to its example size when a second model is exported in the same
    process (seen with the encoder after the sentiment model), which would silently ship a model
    that only accepts one source length. The TorchScript path emits native LSTM nodes and honours
    every dynamic axis; the parity gates check the result either way.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    for value in model.graph.input:
        for ax, name in dynamic.get(value.name, {}).items():
            if value.type.tensor_type.shape.dim[ax].dim_param != name:
                raise ParityError(f"{path.name}: input {value.name} axis {ax} is not dynamic ({name})")


def op_types(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def io_spec(path: Path) -> dict:
    """Input/output names, element types and shapes (symbolic dims by name) of an ONNX file."""
    g = onnx.load(str(path)).graph

    def spec(v):
        t = v.type.tensor_type
        return {
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": [d.dim_param or d.dim_value for d in t.shape.dim],
        }

    return {"inputs": [spec(v) for v in g.input], "outputs": [spec(v) for v in g.output], "opset": OPSET}


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
        },
    }


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
        "--quantize",
        action="store_true",
        help="also try int8 weights (sentiment: the model; translation: the decoder step), shipped within their gate",
    )
    a = p.parse_args(argv)
    from training.data import default_data_dir

    data_dir = a.data_dir or default_data_dir()
    with tempfile.TemporaryDirectory(dir=a.out.parent if a.out.parent.exists() else None) as td:
        tmp = Path(td) / a.out.name
        tmp.mkdir()
        if a.task == "sentiment":
            from training.sentiment.export import export_sentiment

            meta = export_sentiment(a.run, tmp, data_dir, version=a.version, quantize=a.quantize)
        else:
            from training.translation.export import export_translation

            meta = export_translation(
                a.run, tmp, data_dir, version=a.version, baseline_run=a.baseline_run, quantize=a.quantize
            )
        install(tmp, a.out)
    print(json.dumps({k: meta[k] for k in ("name", "version", "metrics", "parity")}, indent=2))


if __name__ == "__main__":
    main()
