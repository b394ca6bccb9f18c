"""The served models without HTTP: the benchmark's "raw" comparison.

The same inputs through the same model classes the server's inference workers use, in `lanes`
processes side by side (as many as the server has workers per family), each with sessions of
the threads per session the server reports, in batches of the size its workers can form.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

from service.runtime.sentiment import SentimentModel
from service.runtime.translation import TranslationModel


class Raw:
    """The same inputs through the same model classes the server's workers use, in one process
    (a RawLanes lane): no HTTP, no queues, batches of the size a worker can form."""

    def __init__(
        self,
        models_dir: Path,
        threads: int,
        device: str,
        pair: str | None,
        has_sentiment: bool,
        sentiment_file: str,
        translate_precision: str = "fp32",
    ):
        self.sm = self.tm = None
        if has_sentiment:
            # the very file the server serves (--precision auto picks the int8 variant on CPU)
            self.sm = SentimentModel(
                models_dir / "sentiment", device=device, threads=threads, model_file=sentiment_file
            )
        if pair:
            # the decoder the server serves (--precision auto picks the int8 step on CPU)
            self.tm = TranslationModel(
                models_dir / f"translate-{pair}", device=device, threads=threads, precision=translate_precision
            )

    def sentiment(self, texts: list[str], batch: int, token_budget: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            probs = self.sm.probabilities(
                self.sm.logits(self.sm.encode(texts[i : i + batch]), token_budget=token_budget)
            )
            [self.sm.labels[int(p.argmax())] for p in probs]
        wall = time.perf_counter() - t0
        return {"requests": len(texts), "batch": batch, "seconds": round(wall, 3), "throughput": len(texts) / wall}

    def translate(self, texts: list[str], batch: int, beam: int) -> dict[str, Any]:
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            hyps = self.tm.translate(texts[i : i + batch], beam_size=beam)
            [self.tm.detok(h[0]) for h in hyps]
        wall = time.perf_counter() - t0
        return {"requests": len(texts), "batch": batch, "seconds": round(wall, 3), "throughput": len(texts) / wall}


def _raw_lane(conn: Any, kwargs: dict[str, Any], texts: dict[str, list[str]]) -> None:
    """One raw lane (a process, like one inference worker): load the models, then run its share
    (or its first `limit` texts)."""
    raw = Raw(**kwargs)
    conn.send("ready")
    while (cmd := conn.recv()) is not None:
        endpoint, batch, extra, limit = cmd
        conn.send(getattr(raw, endpoint)(texts[endpoint][:limit], batch, extra))


class RawLanes:
    """`lanes` processes side by side, each with its own sessions of `threads` threads: the server's
    inference workers without the HTTP process, the queues or the batching loop. Each takes every
    lanes-th text; the throughput is all texts over the wall time until the last lane is done."""

    def __init__(self, lanes: int, kwargs: dict[str, Any], texts: dict[str, list[str]]):
        ctx = mp.get_context("spawn")
        self.lanes, self.conns, self.procs = lanes, [], []
        for k in range(lanes):
            parent, child = ctx.Pipe()
            share = {ep: t[k::lanes] for ep, t in texts.items()}
            proc = ctx.Process(target=_raw_lane, args=(child, kwargs, share), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        for c in self.conns:
            if c.recv() != "ready":
                raise RuntimeError("a raw lane failed to start")

    def run(self, endpoint: str, batch: int, extra: Any, limit: int | None = None) -> dict[str, Any]:
        t0 = time.perf_counter()
        for c in self.conns:
            c.send((endpoint, batch, extra, limit))
        parts = [c.recv() for c in self.conns]
        wall = time.perf_counter() - t0
        n = sum(r["requests"] for r in parts)
        return {"requests": n, "batch": batch, "lanes": self.lanes, "seconds": round(wall, 3), "throughput": n / wall}

    def close(self) -> None:
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.send(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
