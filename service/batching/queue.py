"""The request queues (HTTP process -> inference workers) and the response queues (back).

LitServe makes these `Manager().Queue()` proxies: every put and get is a blocking round trip
through the Manager process, and the HTTP process's puts ran on its event loop. These are plain
multiprocessing queues (a pipe, a lock, a feeder thread), made in the spawn context so that the
spawned inference workers can open their locks.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.queues
import os
from typing import Any


class PipeQueue(mp.queues.Queue):
    """A pipe-backed queue that never holds up process exit: an item still buffered when a
    process ends is lost anyway (its request is answered 503 or 504), and joining the feeder
    thread at exit could hang on a pipe that nobody reads any more."""

    def __init__(self) -> None:
        super().__init__(ctx=mp.get_context("spawn"))

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(obj, block, timeout)
        # The feeder thread starts on the first put in each process (after a fork or unpickling
        # too); cancel_join_thread() then drops the exit-time join it registered. The marker is
        # not pickled (Queue.__getstate__ lists its fields), and a fork copies the parent's pid.
        pid = os.getpid()
        if self.__dict__.get("_join_cancelled_in") != pid:
            self.cancel_join_thread()
            self._join_cancelled_in = pid
