"""batching.queue.PipeQueue: a plain pipe queue that crosses process boundaries like LitServe's
Manager queues do, and never holds up a process's exit with an item nobody reads."""

from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from service.batching.queue import PipeQueue

ROOT = Path(__file__).resolve().parents[3]


def _child_put(q: PipeQueue, done) -> None:
    q.put(("from", "child"))
    done.wait(60)  # an item still buffered when a process ends is lost: stay until it was read


def test_items_cross_to_a_spawned_process_and_back():
    ctx = mp.get_context("spawn")
    q, done = PipeQueue(), ctx.Event()
    p = ctx.Process(target=_child_put, args=(q, done))
    p.start()
    try:
        assert q.get(timeout=60) == ("from", "child")
    finally:
        done.set()
        p.join(60)
    assert p.exitcode == 0


def test_an_unread_item_does_not_hold_up_exit():
    # A full pipe (an item larger than its buffer, never read) keeps a plain Queue's feeder thread
    # writing; multiprocessing joins that thread at exit and the process hangs. PipeQueue's does not.
    code = textwrap.dedent(
        """
        import sys
        from service.batching.queue import PipeQueue
        q = PipeQueue()
        q.put(b"x" * 10_000_000)
        sys.exit(0)
        """
    )
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60)
    assert r.returncode == 0 and time.monotonic() - t0 < 30


def test_a_plain_queue_would_hang_there():
    """The same program with multiprocessing's own Queue: it does not exit (the reason for PipeQueue)."""
    code = textwrap.dedent(
        """
        import multiprocessing as mp, sys
        q = mp.get_context("spawn").Queue()
        q.put(b"x" * 10_000_000)
        sys.exit(0)
        """
    )
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        p.wait(5)
        hung = False
    except subprocess.TimeoutExpired:
        hung = True
    finally:
        p.kill()
        p.wait()
    assert hung
