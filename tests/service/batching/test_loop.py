"""service.batching.loop.DynamicBatchLoop: how long a batch waits to fill, and what it takes."""

from __future__ import annotations

import threading
import time
from queue import Queue
from types import SimpleNamespace

from service.batching.loop import DynamicBatchLoop


def api(timeout: float, max_batch: int = 8):
    return SimpleNamespace(batch_timeout=timeout, max_batch_size=max_batch, request_timeout=30)


def item(uid: str, queued_at: float):
    return ("q0", uid, queued_at, {"x": uid})


def test_requests_queued_behind_a_busy_worker_still_wait_a_window_for_company():
    # The window opens when the worker takes the first request (see DynamicBatchLoop: counting it
    # from queueing time split steady load into alternating half-size batches).
    q: Queue = Queue()
    old = time.monotonic() - 0.5  # queued while the worker was busy with the previous batch
    for uid in ("a", "b", "c"):
        q.put(item(uid, old))
    late = threading.Timer(0.05, lambda: q.put(item("d", time.monotonic())))
    late.start()
    payloads, timed_out = DynamicBatchLoop().get_batch_requests(api(0.3, max_batch=4), q, None)
    late.join()
    assert [p[1] for p in payloads] == ["a", "b", "c", "d"] and timed_out == []


def test_a_fresh_request_waits_the_window_for_company():
    q: Queue = Queue()
    q.put(item("a", time.monotonic()))
    threading.Timer(0.05, lambda: q.put(item("b", time.monotonic()))).start()
    t0 = time.monotonic()
    payloads, _ = DynamicBatchLoop().get_batch_requests(api(0.3, max_batch=2), q, None)
    assert [p[1] for p in payloads] == ["a", "b"]
    assert 0.04 < time.monotonic() - t0 < 0.25  # left when the batch was full, before the window closed


def test_the_window_closes_on_time_without_company():
    q: Queue = Queue()
    q.put(item("a", time.monotonic()))
    t0 = time.monotonic()
    payloads, _ = DynamicBatchLoop().get_batch_requests(api(0.1), q, None)
    took = time.monotonic() - t0
    assert [p[1] for p in payloads] == ["a"] and 0.08 < took < 0.3


def test_with_no_window_a_free_worker_takes_what_is_queued_and_waits_for_nothing_more():
    # The default (--batch-timeout 0): requests that queued while the worker computed leave together,
    # up to max_batch_size; one that comes later is not waited for.
    q: Queue = Queue()
    for uid in "abcde":
        q.put(item(uid, time.monotonic()))
    late = threading.Timer(0.05, lambda: q.put(item("late", time.monotonic())))
    late.start()
    t0 = time.monotonic()
    payloads, _ = DynamicBatchLoop().get_batch_requests(api(0.0, max_batch=4), q, None)
    assert [p[1] for p in payloads] == ["a", "b", "c", "d"] and time.monotonic() - t0 < 0.04
    payloads, _ = DynamicBatchLoop().get_batch_requests(api(0.0, max_batch=4), q, None)
    assert [p[1] for p in payloads] == ["e"]  # alone: "late" was not there yet
    late.join()
