"""loadgen/data.py: the texts a load run sends, read from the real dataset files' formats."""

from __future__ import annotations

import gzip
import json
import lzma

import pytest

from loadgen import data as lt


def test_dataset_readers_sample_real_file_formats(data_dir):
    imdb = lt.dataset_file("sentiment", data_dir)
    assert imdb.name == "imdb_test.jsonl.xz"
    with lzma.open(imdb, "rt") as f:
        rows = [json.loads(line) for line in f]
    texts = lt.load_texts(imdb, limit=50, seed=1)
    assert len(texts) == 50 and set(texts) <= {r["text"] for r in rows}
    labels = {r["text"]: r["label"] for r in rows}
    assert {labels[t] for t in texts} == {0, 1}  # a sample of the whole file, not its (sorted) head
    assert lt.load_texts(imdb, limit=50, seed=1) == texts  # seeded

    m30k = lt.dataset_file("translate", data_dir, "en")
    assert m30k.name == "val.en.gz"
    with gzip.open(m30k, "rt") as f:
        lines = {line.strip() for line in f}
    assert set(lt.load_texts(m30k, limit=10)) <= lines
    assert all(len(t) <= 30 for t in lt.load_texts(m30k, max_chars=30))

    with pytest.raises(lt.LoadTestError, match="pass --data-dir or --texts-file"):
        lt.dataset_file("translate", data_dir, "cs")


def test_texts_file_plain_or_json_lines(tmp_path):
    plain = tmp_path / "texts.txt"
    plain.write_text("first review\n\n  second review  \n")
    assert sorted(lt.load_texts(plain)) == ["first review", "second review"]
    jl = tmp_path / "texts.jsonl.gz"
    with gzip.open(jl, "wt") as f:
        f.write('{"text": "from json", "label": 1}\n{"id": 3}\n')
    assert sorted(lt.load_texts(jl)) == ["from json", '{"id": 3}']  # no text field: the line itself
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(lt.LoadTestError, match="no usable text"):
        lt.load_texts(empty)


def test_read_texts_keeps_file_order(tmp_path):
    f = tmp_path / "texts.jsonl.xz"
    with lzma.open(f, "wt") as out:
        out.write("".join(json.dumps({"text": f"review {i}"}) + "\n" for i in range(5)))
    assert lt.read_texts(f) == [f"review {i}" for i in range(5)]
