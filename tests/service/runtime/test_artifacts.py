"""Artifact verification (service.runtime.artifacts) and the runtime loaders refusing a corrupt, incomplete
or mismatched model folder with an ArtifactError that names the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from service.runtime.artifacts import ArtifactError, find_artifacts, load_metadata, sha256_file, write_metadata
from service.runtime.sentiment import SentimentModel
from service.runtime.translation import TranslationModel

# --- service.runtime.artifacts on a plain folder -------------------------------------------------------


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "art"
    d.mkdir()
    (d / "a.bin").write_bytes(b"\x00\x01\x02" * 1000)
    (d / "b.txt").write_text("hello", encoding="utf-8")
    write_metadata(d, {"name": "x", "task": "demo"})
    return d


def rewrite(folder: Path, edit) -> None:
    meta = json.loads((folder / "metadata.json").read_text())
    edit(meta)
    (folder / "metadata.json").write_text(json.dumps(meta))


def test_write_metadata_hashes_every_file_but_itself(folder):
    meta = load_metadata(folder, required=("a.bin",), task="demo")
    assert meta["files"] == {"a.bin": sha256_file(folder / "a.bin"), "b.txt": sha256_file(folder / "b.txt")}
    assert (
        meta["files"]["b.txt"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    )  # sha256("hello")
    assert meta["name"] == "x"


def test_missing_metadata(tmp_path):
    with pytest.raises(ArtifactError, match=r"no metadata\.json"):
        load_metadata(tmp_path)


def test_unreadable_metadata(folder):
    (folder / "metadata.json").write_text('{"files": {', encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"metadata\.json: unreadable metadata"):
        load_metadata(folder)
    (folder / "metadata.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ArtifactError, match="unreadable metadata"):
        load_metadata(folder)


@pytest.mark.parametrize("files", [None, {}, ["a.bin"]])
def test_metadata_without_a_files_table(folder, files):
    rewrite(folder, lambda m: m.update(files=files) if files is not None else m.pop("files"))
    with pytest.raises(ArtifactError, match="no 'files' table"):
        load_metadata(folder)


def test_wrong_task(folder):
    with pytest.raises(ArtifactError, match="task is 'demo', expected 'sentiment'"):
        load_metadata(folder, task="sentiment")


def test_required_file_not_listed(folder):
    with pytest.raises(ArtifactError, match=r"required file c\.onnx is not listed"):
        load_metadata(folder, required=("c.onnx",))


def test_listed_file_missing(folder):
    (folder / "b.txt").unlink()
    with pytest.raises(ArtifactError, match=r"b\.txt: listed in metadata but missing"):
        load_metadata(folder)


@pytest.mark.parametrize("damage", ["flip", "truncate", "append", "replace"])
def test_corrupt_file_refused_by_hash(folder, damage):
    p = folder / "a.bin"
    data = bytearray(p.read_bytes())
    if damage == "flip":
        data[1234] ^= 0x01
    elif damage == "truncate":
        data = data[:-1]
    elif damage == "append":
        data += b"\n"
    else:
        data = bytearray(b"something else entirely")
    p.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"a\.bin: sha256 mismatch"):
        load_metadata(folder)


def test_find_artifacts(tmp_path, folder):
    (tmp_path / "not-an-artifact").mkdir()
    (tmp_path / "file.txt").write_text("x")
    assert find_artifacts(tmp_path) == {"art": folder}
    assert find_artifacts(tmp_path / "missing") == {}


# --- the sentiment loader ----------------------------------------------------------------------


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_sentiment_artifact_loads_intact(copy_models):
    SentimentModel(copy_models / "sentiment").check_golden()


def test_sentiment_flipped_byte_in_model_refused(copy_models):
    flip_byte(copy_models / "sentiment" / "model.onnx")
    with pytest.raises(ArtifactError, match=r"sentiment/model\.onnx: sha256 mismatch"):
        SentimentModel(copy_models / "sentiment")


def test_sentiment_truncated_model_refused(copy_models):
    p = copy_models / "sentiment" / "model.onnx"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(ArtifactError, match=r"model\.onnx: sha256 mismatch .* corrupt, truncated"):
        SentimentModel(copy_models / "sentiment")


def test_sentiment_deleted_vocab_refused(copy_models):
    (copy_models / "sentiment" / "vocab.json").unlink()
    with pytest.raises(ArtifactError, match=r"vocab\.json: listed in metadata but missing"):
        SentimentModel(copy_models / "sentiment")


def test_sentiment_edited_metadata_hash_refused(copy_models):
    art = copy_models / "sentiment"
    rewrite(art, lambda m: m["files"].update({"vocab.json": "0" * 64}))
    with pytest.raises(ArtifactError, match=r"vocab\.json: sha256 mismatch \(metadata 000000000000"):
        SentimentModel(art)


def test_sentiment_vocab_unlisted_in_metadata_refused(copy_models):
    art = copy_models / "sentiment"
    rewrite(art, lambda m: m["files"].pop("vocab.json"))
    with pytest.raises(ArtifactError, match=r"required file vocab\.json is not listed"):
        SentimentModel(art)


def test_sentiment_wrong_task_refused(copy_models):
    rewrite(copy_models / "sentiment", lambda m: m.update(task="translation"))
    with pytest.raises(ArtifactError, match="expected 'sentiment'"):
        SentimentModel(copy_models / "sentiment")


def test_sentiment_serving_model_must_be_listed(copy_models):
    rewrite(copy_models / "sentiment", lambda m: m.update(serving_model="model.int8.onnx"))
    with pytest.raises(ArtifactError, match=r"model file model\.int8\.onnx is not listed"):
        SentimentModel(copy_models / "sentiment")


def test_sentiment_vocab_differing_from_the_tokenizer_hash_refused(copy_models):
    # A different vocabulary with a consistent file hash: only the recorded vocab_sha256 catches it.
    art = copy_models / "sentiment"
    itos = json.loads((art / "vocab.json").read_text(encoding="utf-8"))
    itos[2], itos[3] = itos[3], itos[2]
    (art / "vocab.json").write_text(json.dumps(itos, ensure_ascii=False), encoding="utf-8")
    rewrite(art, lambda m: m["files"].update({"vocab.json": sha256_file(art / "vocab.json")}))
    with pytest.raises(ArtifactError, match=r"vocab\.json: vocabulary hash differs from metadata"):
        SentimentModel(art)


def test_sentiment_swapped_model_with_updated_hashes_fails_the_golden_check(copy_models):
    # Hashes re-recorded for a model that computes something else: the golden inputs catch it.
    art = copy_models / "sentiment"
    m = onnx.load(str(art / "model.onnx"))
    init = max(m.graph.initializer, key=lambda i: np.prod(i.dims))  # the embedding table
    w = onnx.numpy_helper.to_array(init)
    init.CopyFrom(onnx.numpy_helper.from_array((w * 1.5).astype(w.dtype), init.name))
    onnx.save(m, str(art / "model.onnx"))
    rewrite(art, lambda meta: meta["files"].update({"model.onnx": sha256_file(art / "model.onnx")}))
    rt = SentimentModel(art)  # hashes are consistent now
    with pytest.raises(ArtifactError, match="golden-input check failed"):
        rt.check_golden()


# --- the translation loader --------------------------------------------------------------------


def test_translation_artifact_loads_intact(copy_models):
    TranslationModel(copy_models / "translate-en-de").check_golden()


@pytest.mark.parametrize("name", ["encoder.onnx", "decoder.onnx", "spm.src.model", "spm.tgt.model"])
def test_translation_flipped_byte_refused(copy_models, name):
    flip_byte(copy_models / "translate-en-de" / name)
    with pytest.raises(ArtifactError, match=rf"translate-en-de/{name.replace('.', r'[.]')}: sha256 mismatch"):
        TranslationModel(copy_models / "translate-en-de")


def test_translation_truncated_decoder_refused(copy_models):
    p = copy_models / "translate-en-de" / "decoder.onnx"
    p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(ArtifactError, match=r"decoder\.onnx: sha256 mismatch"):
        TranslationModel(copy_models / "translate-en-de")


def test_translation_deleted_tokenizer_refused(copy_models):
    (copy_models / "translate-en-de" / "spm.tgt.model").unlink()
    with pytest.raises(ArtifactError, match=r"spm\.tgt\.model: listed in metadata but missing"):
        TranslationModel(copy_models / "translate-en-de")


def test_translation_required_file_unlisted_refused(copy_models):
    art = copy_models / "translate-en-de"
    rewrite(art, lambda m: m["files"].pop("encoder.onnx"))
    with pytest.raises(ArtifactError, match=r"required file encoder\.onnx is not listed"):
        TranslationModel(art)


def test_translation_golden_mismatch_refused(copy_models):
    art = copy_models / "translate-en-de"
    original = (art / "metadata.json").read_text()
    rewrite(art, lambda m: m["golden"]["translations"].__setitem__(0, "Etwas ganz anderes."))
    with pytest.raises(ArtifactError, match="golden-input check failed"):
        TranslationModel(art).check_golden()
    (art / "metadata.json").write_text(original)
    rewrite(art, lambda m: m["golden"]["scores"].__setitem__(0, m["golden"]["scores"][0] - 0.01))
    with pytest.raises(ArtifactError, match=r"golden-input check failed \(scores differ by 1\.00e-02"):
        TranslationModel(art).check_golden()
