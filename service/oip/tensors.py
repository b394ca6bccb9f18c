"""OIP tensors and their two encodings, shared by the HTTP and gRPC sides.

A tensor has a name, a datatype (the protocol's names: BOOL, INT8..INT64, UINT8..UINT64, FP16,
FP32, FP64, BYTES), a shape and its elements in row-major order. Over HTTP the elements travel as
a JSON array ("data", nested or flat) or, with Triton's binary tensor data extension, as raw
little-endian bytes after the JSON header; over gRPC as typed `contents` or the same raw bytes
(`raw_input_contents` / `raw_output_contents`). Raw BYTES elements are each a 4-byte
little-endian length followed by that many bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# datatype -> numpy dtype of its raw (little-endian) form; BYTES has none.
NUMPY_TYPES: dict[str, str] = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
DATATYPES = (*NUMPY_TYPES, "BYTES")
_LEN = struct.Struct("<I")


# HTTP status -> the gRPC status code (by name) the protocol answers with over gRPC. The server's
# metrics keep the HTTP status whatever the protocol; loadgen's gRPC transport maps back with it.
GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    404: "NOT_FOUND",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


class OipError(Exception):
    """An answer other than success: an HTTP status (gRPC maps it to its own codes) and a message
    saying what to fix."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def bad(message: str) -> OipError:
    return OipError(400, message)


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    # BYTES: a list of bytes; other datatypes: a flat numpy array of NUMPY_TYPES[datatype]
    data: Any
    parameters: dict[str, Any] = field(default_factory=dict)


def element_count(shape: list[int]) -> int:
    return math.prod(shape)


def check_header(name: str, datatype: str, shape: Any) -> None:
    if datatype not in DATATYPES:
        raise bad(f"input {name}: unknown datatype {datatype!r}; the protocol's are {', '.join(DATATYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise bad(f"input {name}: shape must be a list of integers")
    if any(d < 0 for d in shape):
        raise bad(f"input {name}: shape {shape} has a negative dimension")


def _flatten(data: Any, out: list[Any]) -> None:
    for x in data:
        if isinstance(x, list):
            _flatten(x, out)
        else:
            out.append(x)


def from_json(name: str, datatype: str, shape: list[int], data: Any) -> Tensor:
    """A tensor from the JSON form's "data" (nested or flat, row-major)."""
    check_header(name, datatype, shape)
    if not isinstance(data, list):
        raise bad(f"input {name}: data must be a JSON array")
    flat: list[Any] = []
    try:
        _flatten(data, flat)
    except RecursionError:
        raise bad(f"input {name}: data is nested too deeply") from None
    if len(flat) != element_count(shape):
        raise bad(f"input {name}: shape {shape} holds {element_count(shape)} elements; data has {len(flat)}")
    if datatype == "BYTES":
        if not all(isinstance(x, str) for x in flat):
            raise bad(f"input {name}: BYTES data must be JSON strings")
        return Tensor(name, datatype, shape, [x.encode("utf-8", "surrogatepass") for x in flat])
    if datatype == "BOOL":
        ok = all(isinstance(x, bool) for x in flat)
    else:
        ok = all(isinstance(x, int | float) and not isinstance(x, bool) for x in flat)
    if not ok:
        raise bad(f"input {name}: {datatype} data must be JSON {'booleans' if datatype == 'BOOL' else 'numbers'}")
    try:
        array = np.asarray(flat, dtype=NUMPY_TYPES[datatype])
    except (OverflowError, ValueError):
        raise bad(f"input {name}: a value does not fit {datatype}") from None
    return Tensor(name, datatype, shape, array)


def split_bytes(raw: bytes | memoryview, name: str = "") -> list[bytes]:
    """Raw BYTES elements: each a 4-byte little-endian length, then the bytes."""
    out, i, n = [], 0, len(raw)
    view = memoryview(raw)
    while i < n:
        if i + 4 > n:
            raise bad(f"input {name}: raw BYTES data ends inside an element's 4-byte length")
        (size,) = _LEN.unpack_from(view, i)
        i += 4
        if i + size > n:
            raise bad(f"input {name}: raw BYTES element of {size} bytes runs past the end of the data")
        out.append(bytes(view[i : i + size]))
        i += size
    return out


def join_bytes(items: list[bytes]) -> bytes:
    return b"".join(_LEN.pack(len(b)) + b for b in items)


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> Tensor:
    """A tensor from its raw bytes (binary extension, gRPC raw contents)."""
    check_header(name, datatype, shape)
    count = element_count(shape)
    if datatype == "BYTES":
        items = split_bytes(raw, name)
        if len(items) != count:
            raise bad(f"input {name}: shape {shape} holds {count} elements; the raw data has {len(items)}")
        return Tensor(name, datatype, shape, items)
    dtype = np.dtype(NUMPY_TYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise bad(f"input {name}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes; got {len(raw)}")
    return Tensor(name, datatype, shape, np.frombuffer(raw, dtype=dtype))


def to_json_data(t: Tensor) -> list[Any]:
    """The flat JSON "data" of an output tensor (BYTES as UTF-8 strings)."""
    if t.datatype == "BYTES":
        return [b.decode("utf-8", "replace") for b in t.data]
    return np.asarray(t.data).reshape(-1).tolist()


def to_raw(t: Tensor) -> bytes:
    if t.datatype == "BYTES":
        return join_bytes(t.data)
    return np.ascontiguousarray(t.data, dtype=NUMPY_TYPES[t.datatype]).tobytes()


def texts(t: Tensor, what: str = "text") -> list[str]:
    """A BYTES tensor's elements as str (UTF-8, else a 400 naming the element)."""
    out = []
    for i, b in enumerate(t.data):
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise bad(f"input {t.name}[{i}] is not valid UTF-8 (byte {e.start}); send {what} as UTF-8") from None
    return out
