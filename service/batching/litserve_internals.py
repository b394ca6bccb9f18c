"""Every use of LitServe's non-public API, in one place, for the version pinned in pyproject.toml.

LitServe runs the processes (the HTTP process it forks, the inference workers it spawns, the
Manager) and its loops call our LitAPIs; that part is used as documented. What follows is not
documented, may change in any release, and is checked by tests/service/batching/
test_litserve_contract.py, which runs LitServe's own request path next to ours:

- `litserve.server._Server` (uvicorn server class run in the forked HTTP process), replaced by
  `_HTTPServer` to reset the SIGTERM handler it would inherit from the main process, and to run
  `SHUTDOWN_HOOKS` when uvicorn's (public) `Server.shutdown` begins.
- `litserve.server.configure_logging`, replaced so LitServe's `run()` keeps our JSON log lines.
- `LitServer._init_manager`: overridden to use the Manager started early (`start_manager`) and
  pipe queues (`batching.queue`, `batching.transport`) instead of Manager proxies; it sets
  `transport_config`, `workers_setup_status`, `_shutdown_event`, `litapi_request_queues`,
  `logger_queue`, `_logger_connector` and `_transport` as LitServe's does.
- `LitServer._start_server`: overridden to keep the forked HTTP processes, close the main
  process's copy of the listening socket and let the drain finish (`uvicorn_graceful_timeout`).
- `LitServer._register_middleware`: overridden to drop the GZip middleware LitServe adds.
- `LitServer._monitor_workers`: set False; `batching.watchdog` replaces LitServe's monitor.
- `LitServer._shutdown_event`, `workers_setup_status`, `inference_workers`: read and set by the
  watchdog and the SIGTERM handler (through `Server.stopping`, `request_shutdown`, ...).
- `LitServer._get_request_queue`, `app.response_queue_id`, `response_buffer` and
  `litserve.utils.ResponseBufferItem`: the fast path puts a request exactly where LitServe's
  handler does, as the same tuple `(response_queue_id, uid, monotonic time, request)`, and waits
  on the same buffer entry, which LitServe's response reader fills with `(response, status)`.
- A worker's error answer: an exception, or a pickled one (`pickle.dumps`), with
  `LitAPIStatus.ERROR`; `error_from_worker` turns it back into the exception.
- `litserve.loops.base._SENTINEL_VALUE` and `_StopLoopError`: what a worker's queue receives at
  shutdown and how a loop says it is done (`unpack_request`, used by `batching.loop`).
- Public LitServer methods overridden here, whose role in `run()` is undocumented:
  `verify_worker_status` (also fail when a worker dies before it reports), `setup_auth` (no
  per-route dependency), `lifespan` (adds the HTTP process's worker watch and `http_services`).
- `LitServer.workers_setup_status` values and `WorkerSetupStatus.READY`: `ready()` reads them as
  LitServe's /health does (for OIP's ready endpoints).

multiprocessing's private `Queue._reset`, once overridden for the queues, is no longer used:
`batching.queue` calls the public `cancel_join_thread()` instead.

Two public but undocumented extension points are used outside this module, also checked by the
contract test: `litserve.transport.base.MessageTransport` (send / areceive / close), which
`batching.transport` implements, and `litserve.loops.BatchedLoop.get_batch_requests`, which
`batching.loop` overrides (it returns (payloads, timed-out uids) from the queue).

The measurements that keep the replacements rather than LitServe's own (Manager queues, the
`fast_queue` option, its worker monitor) are in the docstrings of `batching.queue`,
`batching.transport` and `batching.watchdog`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import pickle
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import litserve as ls
import litserve.server as ls_server
from fastapi import HTTPException
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.utils import LitAPIStatus, ResponseBufferItem, WorkerSetupStatus
from starlette.middleware.gzip import GZipMiddleware

from service.batching.queue import PipeQueue
from service.batching.transport import PipeTransport
from service.batching.watchdog import ServiceState, watch_workers_from_http_process

log = logging.getLogger("service")


def install_process_hooks(configure_logging: Callable[..., None]) -> None:
    """Before LitServer.run(): our logging, and our uvicorn server class for the HTTP process."""
    ls_server.configure_logging = configure_logging  # LitServe reconfigures logging in run()
    ls_server._Server = _HTTPServer


# Run, in the HTTP process, the moment uvicorn begins its shutdown (SIGTERM), before it drains its
# own connections: the gRPC server stops taking calls then too (service.oip.grpc).
SHUTDOWN_HOOKS: list[Callable[[], Awaitable[None]]] = []


class _HTTPServer(ls_server._Server):
    """LitServe's uvicorn server, run in the forked HTTP process."""

    def run(self, worker_id: int, sockets=None) -> None:
        # Forked from the main process, this process has its SIGTERM handler, which must not run
        # here: uvicorn installs its own while serving and re-raises the signal after its graceful
        # shutdown, which (with the default action) then ends this process.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        super().run(worker_id, sockets)

    async def shutdown(self, sockets=None) -> None:
        hooks = [asyncio.ensure_future(hook()) for hook in SHUTDOWN_HOOKS]
        try:
            await super().shutdown(sockets=sockets)
        finally:
            for done in await asyncio.gather(*hooks, return_exceptions=True):
                if isinstance(done, BaseException):
                    log.error(f"shutdown hook failed: {done!r}")


def unpack_request(item: Any) -> tuple[int, str, float, Any]:
    """A queued request as (response_queue_id, uid, monotonic time queued, request); at the
    shutdown sentinel, raise what makes LitServe's loop return."""
    if item == _SENTINEL_VALUE:
        raise _StopLoopError()
    response_queue_id, uid, submitted, x = item
    return response_queue_id, uid, submitted, x


def error_from_worker(response: Any) -> Any:
    """A worker's error answer as the exception it was (LitServe pickles what it sends)."""
    if isinstance(response, bytes):
        with contextlib.suppress(Exception):
            return pickle.loads(response)
    return response


async def _no_auth() -> None:
    """The gateway authenticates /v1/*; /health must stay open for orchestrators."""


class Server(ls.LitServer):
    """LitServer with pipes for queues, our watchdog, and the adapters the rest of the service
    uses instead of LitServe's private attributes."""

    state: ServiceState  # shared by the gateway, /health and the worker watch, in the HTTP process
    manager: Any = None  # started by start_manager()
    http_processes: list = []  # noqa: RUF012 (the forked HTTP processes, once started)
    on_failure: list[Callable[[Exception], int]] = []  # noqa: RUF012 (set per server by http.app.build)
    join_slack = 5.0  # seconds the main process waits for the HTTP process beyond its graceful timeout

    # --- what the rest of the service calls --------------------------------------------------

    def use_own_watchdog(self) -> None:
        self._monitor_workers = False

    @property
    def stopping(self) -> bool:
        return self._shutdown_event is not None and self._shutdown_event.is_set()

    def request_shutdown(self) -> None:
        self._shutdown_event.set()

    def request_shutdown_from_signal_handler(self) -> None:
        # Not from this thread: the main thread is inside a call to the same Manager-held event
        # (LitServe waits on it), and a second call on that connection from a signal handler
        # deadlocks. Another thread has its own connection. Before run() there is no event yet.
        if self._shutdown_event is not None:
            threading.Thread(target=self._shutdown_event.set, daemon=True, name="sigterm").start()

    def started_workers(self) -> list:
        return list(getattr(self, "inference_workers", None) or [])

    def setup_failed(self) -> bool:
        return any(v == WorkerSetupStatus.ERROR for v in self.workers_setup_status.values())

    async def submit(self, api_path: str, uid: str, request: Any) -> tuple[Any, bool]:
        """Queue a validated request as LitServe's handler does and wait for its answer:
        (response, True if it is an error answer)."""
        item = self.enqueue(api_path, uid, request, time.monotonic())
        try:
            await item.event.wait()
        finally:
            self.forget(uid)
        response, status = item.response
        return response, self.is_error(status)

    def enqueue(self, api_path: str, uid: str, request: Any, submitted: float) -> ResponseBufferItem:
        """Put a request on the workers' queue as LitServe's handler does; its answer arrives in
        the returned item (`item.event`, then `item.response`: (response, status)). `submitted`:
        the monotonic time the request arrived (the workers answer 504 past request_timeout)."""
        item = ResponseBufferItem(asyncio.Event())
        self.response_buffer[uid] = item
        self._get_request_queue(api_path).put((self.app.response_queue_id, uid, submitted, request))
        return item

    def forget(self, uid: str) -> None:
        self.response_buffer.pop(uid, None)

    @staticmethod
    def is_error(status: Any) -> bool:
        return status == LitAPIStatus.ERROR

    def fail_waiting(self, error: HTTPException) -> int:
        """Answer every request still waiting in this HTTP process with `error`; how many there were."""
        waiting = [item for item in self.response_buffer.values() if not item.event.is_set()]
        for item in waiting:
            item.response = (error, LitAPIStatus.ERROR)
            item.event.set()
        held = sum(fail(error) for fail in self.on_failure)  # requests held before the queue (batching.dispatch)
        return len(waiting) + held

    # --- LitServe's hooks, overridden ---------------------------------------------------------

    def setup_auth(self, lit_api: ls.LitAPI | None = None):
        return _no_auth

    def _start_server(self, port, num_uvicorn_servers, log_level, sockets, uvicorn_worker_type, **kwargs):
        workers = super()._start_server(port, num_uvicorn_servers, log_level, sockets, uvicorn_worker_type, **kwargs)
        self.http_processes = [w for w in workers.values() if isinstance(w, mp.process.BaseProcess)]
        if uvicorn_worker_type == "process":
            # The HTTP processes have the listening socket. A copy kept open here would keep the
            # port listening after they close theirs at SIGTERM: new connections would be
            # accepted by the kernel and then hang, unanswered, until this process exits.
            for sock in sockets:
                sock.close()
        # The HTTP processes drain for uvicorn_graceful_timeout; wait for them a little longer
        # than that before killing them (LitServe joins for exactly that long).
        self.uvicorn_graceful_timeout += self.join_slack
        return workers

    def ready(self) -> bool:
        """What /health means: every inference worker set up, none lost."""
        status = self.workers_setup_status
        return (
            self.state.failure is None and bool(status) and all(v == WorkerSetupStatus.READY for v in status.values())
        )

    # Started and stopped with the HTTP process (its lifespan): context managers, e.g. the gRPC server.
    http_services: list[Callable[[], contextlib.AbstractAsyncContextManager]] = []  # noqa: RUF012

    @contextlib.asynccontextmanager
    async def lifespan(self, app) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(super().lifespan(app))
            await stack.enter_async_context(watch_workers_from_http_process(self))
            for service in self.http_services:
                await stack.enter_async_context(service())
            yield

    def _register_middleware(self) -> None:
        self.middlewares = [m for m in self.middlewares if not (isinstance(m, tuple) and m[0] is GZipMiddleware)]
        super()._register_middleware()

    def start_manager(self) -> None:
        """Start the Manager process (it keeps the worker status dict and the shutdown event) now,
        before LitServe binds the listening socket. Started where LitServe starts it, after the
        bind, the forked Manager would inherit a copy of the socket and keep the port listening
        after the HTTP process closes it at SIGTERM: new connections would hang, unanswered."""
        self.manager = mp.Manager()

    def _init_manager(self, num_api_servers: int):
        """LitServe's, with the Manager started by start_manager() and pipes for queues."""
        manager = self.manager or mp.Manager()
        self.transport_config.manager = manager
        self.transport_config.num_consumers = num_api_servers
        self.workers_setup_status = manager.dict()
        self._shutdown_event = manager.Event()
        for lit_api in self.litapi_connector:
            self.litapi_request_queues[lit_api.api_path] = PipeQueue()
        if self._logger_connector._loggers:
            self.logger_queue = manager.Queue()
        self._logger_connector.run(self)
        self._transport = PipeTransport([PipeQueue() for _ in range(num_api_servers)])
        return manager

    def verify_worker_status(self) -> None:
        """Wait for a first ready worker; fail (instead of waiting forever) when one fails its setup
        or dies before reporting, e.g. killed or crashed while loading."""
        while not any(v == WorkerSetupStatus.READY for v in self.workers_setup_status.values()):
            if self.setup_failed():
                raise RuntimeError("an inference worker failed to set up its models (see the error above)")
            dead = [p for p in self.inference_workers if not p.is_alive()]
            if dead:
                raise RuntimeError(f"an inference worker exited during start-up (exit code {dead[0].exitcode})")
            time.sleep(0.05)
