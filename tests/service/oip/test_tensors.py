"""OIP tensors: the JSON and raw forms, and what each refuses (service.oip.tensors)."""

from __future__ import annotations

import numpy as np
import pytest

from service.oip.tensors import OipError, from_json, from_raw, join_bytes, split_bytes, texts, to_json_data, to_raw


def test_bytes_round_trip_through_the_raw_form():
    items = [b"", "naïve ☕".encode(), b"x" * 300]
    assert split_bytes(join_bytes(items)) == items
    t = from_raw("TEXT", "BYTES", [3], join_bytes(items))
    assert t.data == items and to_raw(t) == join_bytes(items)


def test_json_data_may_be_nested_or_flat_and_must_fill_the_shape():
    flat = from_json("P", "FP32", [2, 2], [0.1, 0.9, 0.8, 0.2])
    nested = from_json("P", "FP32", [2, 2], [[0.1, 0.9], [0.8, 0.2]])
    assert np.array_equal(flat.data, nested.data) and flat.data.dtype == np.float32
    assert to_json_data(flat) == pytest.approx([0.1, 0.9, 0.8, 0.2])
    with pytest.raises(OipError, match=r"shape \[3\] holds 3 elements; data has 2"):
        from_json("TEXT", "BYTES", [3], ["a", "b"])


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "says"),
    [
        ("STRING", [1], ["a"], "unknown datatype 'STRING'"),
        ("BYTES", [-1], ["a"], "negative dimension"),
        ("BYTES", [1], [1], "BYTES data must be JSON strings"),
        ("FP32", [1], ["1.0"], "FP32 data must be JSON numbers"),
        ("BOOL", [1], [1], "BOOL data must be JSON booleans"),
        ("INT8", [1], [300], "does not fit INT8"),
        ("BYTES", [1], "a", "data must be a JSON array"),
    ],
)
def test_json_data_that_does_not_match_its_header_is_a_400(datatype, shape, data, says):
    with pytest.raises(OipError, match=says) as e:
        from_json("X", datatype, shape, data)
    assert e.value.status == 400


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"\x05\x00\x00\x00abc", "runs past the end"),
        (b"\x01\x00\x00\x00a\x01\x00", "ends inside an element's 4-byte length"),
        (join_bytes([b"a", b"b"]), r"holds 1 elements; the raw data has 2"),
    ],
)
def test_malformed_raw_bytes_are_a_400(raw, says):
    with pytest.raises(OipError, match=says):
        from_raw("TEXT", "BYTES", [1], raw)


def test_raw_numbers_must_have_the_exact_size():
    t = from_raw("P", "FP32", [2], np.array([1.5, -2], dtype="<f4").tobytes())
    assert t.data.tolist() == [1.5, -2.0]
    with pytest.raises(OipError, match="needs 8 bytes; got 7"):
        from_raw("P", "FP32", [2], b"\x00" * 7)


def test_texts_must_be_utf8():
    assert texts(from_raw("TEXT", "BYTES", [1], join_bytes(["é".encode()]))) == ["é"]
    with pytest.raises(OipError, match=r"TEXT\[1\] is not valid UTF-8 \(byte 0\)"):
        texts(from_raw("TEXT", "BYTES", [2], join_bytes([b"ok", b"\xff"])))
