"""The request queues (HTTP process -> inference workers) and the response queues (back).

LitServe makes these `Manager().Queue()` proxies: every put and get is a blocking round trip
through the Manager process, and the HTTP process's puts run on its event loop. These are plain
multiprocessing queues (a pipe, a lock, a feeder thread), made in the spawn context so that the
spawned inference workers can open their locks.

Measured side by side on 2 shared cores (a spawned process draining, 2,900 puts of a request
tuple, three rounds): a put on a Manager queue held the caller for 53-59 us (10 us of its CPU,
plus the Manager process's), a put on a PipeQueue for 1-3 us. Under load (sentiment, one review
per request, 32 clients, 20 s, three rounds each, alternating), the main, HTTP and Manager
processes together spent 0.93-1.10 ms of CPU per request with pipes and 1.20-1.98 ms with
LitServe's Manager queues; throughput on the then heavily shared machine was noise (25-62 req/s
for both). LitServe 0.2.19 offers no other request queue, so this replacement stays.
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
