"""Responses, inference workers -> HTTP process: one `PipeQueue` per HTTP process.

It implements LitServe's `MessageTransport` (send / areceive / close), in place of LitServe's
Manager-queue transport, whose areceive hops to a thread for every message (asyncio.to_thread
around a Manager get). In the HTTP process a pump thread moves everything that has arrived onto
the event loop in one wake-up, so a burst of answers costs one loop iteration, not one each.
`litserve_internals.Server._init_manager` installs it.

LitServe's alternative, `LitServer(fast_queue=True)` (a ZMQ broker for responses; requests still
go through Manager queues), does nothing in 0.2.19: the server builds
`TransportConfig(transport_config="zmq")`, a keyword the model ignores, so the transport stays
"mp". Selecting ZMQ the way the option means to (transport_type="zmq", LitServe's own
_init_manager) and serving the shipped models, no request was answered: each got the gateway's
504 after the request timeout. So this transport stays.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any

from litserve.transport.base import MessageTransport

from service.batching.queue import PipeQueue

log = logging.getLogger("service")


def _deliver(inbox: asyncio.Queue, items: list) -> None:
    for item in items:
        inbox.put_nowait(item)


class PipeTransport(MessageTransport):
    def __init__(self, queues: list[PipeQueue]):
        self._queues = queues
        self._closed = False
        self._inbox: asyncio.Queue | None = None

    def __reduce__(self):
        return (PipeTransport, (self._queues,))

    def send(self, item: Any, consumer_id: int) -> None:
        self._queues[consumer_id].put(item)

    async def areceive(self, consumer_id: int, timeout: float | None = None, block: bool = True) -> Any:
        if self._closed:
            raise asyncio.CancelledError("transport closed")
        if self._inbox is None:
            self._inbox = asyncio.Queue()
            threading.Thread(
                target=self._pump,
                args=(self._queues[consumer_id], asyncio.get_running_loop(), self._inbox),
                daemon=True,
                name="response-pump",
            ).start()
        return await self._inbox.get()

    @staticmethod
    def _pump(q: PipeQueue, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue) -> None:
        while True:
            items: list = []
            try:
                items.append(q.get())
                while True:
                    items.append(q.get_nowait())
            except queue.Empty:
                pass
            except (EOFError, OSError, ValueError):  # pipe closed: shutting down
                return
            except Exception:  # one response that cannot be unpickled: its request times out (504), the rest flow
                log.exception("dropped an undecodable response from an inference worker")
            if items:
                try:
                    loop.call_soon_threadsafe(_deliver, inbox, items)
                except RuntimeError:  # event loop closed: shutting down
                    return

    def close(self, send_sentinel: bool = True) -> None:
        self._closed = True  # the HTTP processes' receive tasks are cancelled by their lifespan
