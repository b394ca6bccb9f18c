"""Beam search over many texts on every core.

The export decodes validation, test and score-guide sentences with ONNX Runtime on one thread
(the runtime's default, and what the goldens are recorded with), so on a 2-core machine it used
one core for most of its minutes. Inside `decode_pool()`, `best_hypotheses` hands whole chunks to
worker processes, each with its own single-threaded sessions: the chunks are the ones a
sequential run makes, so every output is the one it gives.

    with decode_pool():                                      # worker processes for the block
        hyps = best_hypotheses(tm, texts, "validation", 5)  # tm from onnx_translator

A translator that cannot be rebuilt from files (PyTorch, the service's class) decodes in this
process, as it does outside a pool.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from service.runtime.providers import available_cores

CHUNK = 256  # texts per translate() call, in a pool or not
MAX_WORKERS = 8  # each worker holds its own sessions and imports (a few hundred MB): not one per core of a big host

KEEP = 4  # translators a worker keeps open (the export alternates fp32 and int8)

_POOL: ProcessPoolExecutor | None = None
_WORKERS = 1
_WORKER_TRANSLATORS: dict = {}  # in each worker: its translators, by files and their state on disk


@contextmanager
def decode_pool(workers: int | None = None) -> Iterator[int]:
    """Worker processes for the `best_hypotheses` calls of the block (by default one per core this
    process may use, at most MAX_WORKERS; none with one core). Nested blocks share the outermost pool. Yields the
    number of workers."""
    global _POOL, _WORKERS
    if _POOL is not None:
        yield _WORKERS
        return
    n = min(available_cores(), MAX_WORKERS) if workers is None else workers
    if n < 2:
        yield 1
        return
    _POOL, _WORKERS = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn")), n
    try:
        yield n
    finally:
        pool, _POOL, _WORKERS = _POOL, None, 1
        pool.shutdown(cancel_futures=True)


def files_key(tm) -> tuple | None:
    """How a worker rebuilds `tm` (onnx_translator's arguments, and the size and time of every
    file of its folder, so that a file rewritten since is never served from a stale session);
    None if it cannot."""
    files = getattr(tm, "files", None)
    if files is None:
        return None
    folder, decoder_file, config, decoding = files
    stats = ((p.name, p.stat()) for p in sorted(Path(folder).iterdir()) if p.is_file())
    state = tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)
    return (str(folder), decoder_file, json.dumps(config, sort_keys=True), json.dumps(decoding, sort_keys=True), state)


def _best_in_worker(key: tuple, beam: int, texts: list[str]) -> list:
    from training.translation.translate import onnx_translator

    tm = _WORKER_TRANSLATORS.get(key)
    if tm is None:
        while len(_WORKER_TRANSLATORS) >= KEEP:  # the oldest first
            del _WORKER_TRANSLATORS[next(iter(_WORKER_TRANSLATORS))]
        folder, decoder_file, config, decoding, _ = key
        tm = _WORKER_TRANSLATORS[key] = onnx_translator(
            Path(folder), decoder_file, json.loads(config), json.loads(decoding)
        )
    return [h[0] for h in tm.translate(texts, beam_size=beam)]


def best_hypotheses(tm, texts: list[str], desc: str, beam: int) -> list:
    """The best hypothesis of `tm` for each text, in order, with a progress bar: on the pool's
    workers inside `decode_pool()` when `tm` can be rebuilt from files, else here."""
    chunks = [texts[s : s + CHUNK] for s in range(0, len(texts), CHUNK)]
    key = files_key(tm) if _POOL is not None else None
    if key is None:
        results = (tm.translate(c, beam_size=beam) for c in chunks)
        results = ([h[0] for h in hs] for hs in results)
    else:
        results = _POOL.map(_best_in_worker, [key] * len(chunks), [beam] * len(chunks), chunks)
    out: list = []
    for r in tqdm(results, total=len(chunks), desc=desc, unit="chunk"):
        out += r
    return out
