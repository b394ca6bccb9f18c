"""training.translation.decode_pool: an export's decodes on worker processes give exactly the
outputs of one process, on a real (test-made) exported translator."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from service.runtime.translation import DECODER, TranslationModel
from training.translation import decode_pool as dp
from training.translation.data import load_pair
from training.translation.translate import onnx_translator


@pytest.fixture(scope="module")
def artifact(models_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("pool") / "translate-en-de"
    shutil.copytree(models_dir / "translate-en-de", folder)
    return folder


@pytest.fixture(scope="module")
def texts(data_dir):
    src, _ = load_pair(data_dir, "val", "en", "de")
    return src[:40] * 15  # 600 texts: three chunks, one of them short


def translator(folder):
    meta = json.loads((folder / "metadata.json").read_text())
    return onnx_translator(folder, DECODER, meta["config"], meta["decoding"])


def test_the_pool_decodes_in_its_workers_exactly_what_one_process_does(artifact, texts):
    alone = dp.best_hypotheses(translator(artifact), texts, "alone", 3)
    tm = translator(artifact)

    def not_here(*a, **k):
        raise AssertionError("decoded in the main process")

    tm.translate = not_here  # only the workers, which open the files again, can decode
    with dp.decode_pool(2) as n:
        pooled = dp.best_hypotheses(tm, texts, "pooled", 3)
    assert n == 2 and len(pooled) == len(alone) == 600
    assert [h.tokens for h in pooled] == [h.tokens for h in alone]
    assert [h.score for h in pooled] == [h.score for h in alone]
    assert [tm.detok(h) for h in pooled] == [tm.detok(h) for h in alone]  # copy-through slots travel too
    with pytest.raises(AssertionError, match="main process"):  # and outside the pool, it is the main process
        dp.best_hypotheses(tm, texts[:3], "alone", 3)


def test_translators_not_made_from_files_decode_here_even_in_a_pool(artifact, texts):
    served = TranslationModel(artifact)  # the service's class: no `files`
    assert dp.files_key(served) is None
    with dp.decode_pool(2):
        got = dp.best_hypotheses(served, texts[:5], "served", 3)
    assert [h.tokens for h in got] == [h[0].tokens for h in served.translate(texts[:5], beam_size=3)]


def test_one_worker_per_core_up_to_a_cap(monkeypatch):
    monkeypatch.setattr(dp, "available_cores", lambda: 64)
    with dp.decode_pool() as n:
        assert n == dp.MAX_WORKERS == 8
    monkeypatch.setattr(dp, "available_cores", lambda: 1)
    with dp.decode_pool() as n:
        assert n == 1 and dp._POOL is None


def test_one_core_or_an_outer_pool_means_no_new_processes():
    with dp.decode_pool(1) as n:
        assert n == 1 and dp._POOL is None
    with dp.decode_pool(2) as outer:
        pool = dp._POOL
        with dp.decode_pool(4) as inner:
            assert (outer, inner) == (2, 2) and dp._POOL is pool
        assert dp._POOL is pool  # the inner block leaves the outer's pool open
    assert dp._POOL is None


def test_a_file_rewritten_since_is_never_decoded_from_a_stale_session(artifact, tmp_path, texts):
    folder = tmp_path / artifact.name
    shutil.copytree(artifact, folder)
    tm = translator(folder)
    key = dp.files_key(tm)
    assert key == dp.files_key(translator(folder))  # the same files: the same key
    first = dp._best_in_worker(key, 3, texts[:4])
    stat = (folder / DECODER).stat()
    os.utime(folder / DECODER, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    new_key = dp.files_key(tm)
    assert new_key != key
    assert [h.tokens for h in dp._best_in_worker(new_key, 3, texts[:4])] == [h.tokens for h in first]
    assert new_key in dp._WORKER_TRANSLATORS and len(dp._WORKER_TRANSLATORS) <= dp.KEEP
    dp._WORKER_TRANSLATORS.clear()
