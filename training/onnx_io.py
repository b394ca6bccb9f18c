"""ONNX input/output: the exporter settings, the files' interface, and the parity error.

Both export commands (training.sentiment.export, training.translation.export) declare their
input/output names and dynamic axes at their call of `onnx_export`; the opset, the exporter and
the check that every declared axis stayed dynamic live here, once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

OPSET = 18


class ParityError(AssertionError):
    """ONNX and PyTorch disagree beyond tolerance; the artifact must not ship."""


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
    return {n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}


def io_spec(path: Path) -> dict:
    """Input/output names, element types and shapes (symbolic dims by name) of an ONNX file."""
    g = onnx.load(str(path), load_external_data=False).graph

    def spec(v):
        t = v.type.tensor_type
        return {
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": [d.dim_param or d.dim_value for d in t.shape.dim],
        }

    return {"inputs": [spec(v) for v in g.input], "outputs": [spec(v) for v in g.output], "opset": OPSET}
