"""How the project quantizes to int8: one recipe for the sentiment model and the translators' decoder
step, chosen on validation accuracy and on agreement across CPUs (docs/history.md, 2026-12-04).

ONNX Runtime's dynamic quantization multiplies uint8 activations by int8 weights. On x86 CPUs
without VNNI its u8s8 kernel uses VPMADDUBSW, which adds two u8*s8 products into a saturating int16;
with full-range int8 weights the sum can overflow, so an AVX2 CPU and an AVX-512 VNNI CPU compute
different numbers from the same file (0.057 apart on the shipped sentiment model's golden logits).
With 7-bit weights (`reduce_range`) no pair of products can overflow int16 (2 * 255 * 64 < 32,768),
every kernel computes the same exact integer sums, and the file answers the same on every CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onnxruntime.quantization import QuantType, quantize_dynamic

# Chosen on validation (history.md): s8 + reduce_range. Per-channel was within noise of it.
RECIPE: dict[str, Any] = {"weight_type": QuantType.QInt8, "reduce_range": True, "per_channel": False}
DESCRIPTION = "onnxruntime dynamic quantization: uint8 activations, int8 weights in 7 bits (reduce_range), per tensor"


def quantize(src: Path, dst: Path, **options: Any) -> Path:
    """Dynamic int8 quantization of `src` into `dst` with the project's recipe (`options` add to it,
    e.g. op_types_to_quantize, extra_options)."""
    quantize_dynamic(str(src), str(dst), **{**RECIPE, **options})
    return dst
