"""When an inference worker dies: answer, refuse, report, exit (tests/test_reliability_faults.py).

In the HTTP process (`watch_workers_from_http_process`, on the event loop): the sentinel of every
inference worker is watched; when one exits, every request waiting for an answer gets 503 at
once, later /v1 requests get 503 (gateway) and /health says 503. In the main process
(`watch_workers`, a thread): the same death, or the HTTP process's, shuts the server down with
exit code 3 for the orchestrator to restart it; a worker that failed its setup is a start-up
failure (exit 2). Nothing hangs.

LitServe's own monitor (on unless `_monitor_workers` is False) runs in the main process: it
answers the requests in the main process's response buffer, but the waiting requests are held by
the forked HTTP process, whose buffer it cannot reach; it then shuts the server down. Measured
side by side (one worker per family on 2 shared cores, shipped models; four /v1/sentiment
requests waiting on a stopped worker, then the worker killed): with this module, all four were
answered 503 within 0.03 s of the kill and the server exited with code 3 after 0.8 s; with
LitServe's monitor instead, they were answered only when the HTTP process's shutdown grace ran
out (503 at 20.2 s, the default 20 s grace) and the server exited with code 1 after 23.2 s. So
this module stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import multiprocessing.connection
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import HTTPException

if TYPE_CHECKING:
    from service.batching.litserve_internals import Server

log = logging.getLogger("service")
EXIT_STARTUP_FAILED, EXIT_WORKER_DIED = 2, 3
WORKER_LOST = "an inference worker died; the server is restarting: retry shortly"


class ServiceState:
    """What the HTTP process knows about its inference workers: `failure` says why it can no
    longer serve (an inference worker died); /health and /v1/* answer 503 from then on."""

    def __init__(self) -> None:
        self.failure: str | None = None


@contextlib.asynccontextmanager
async def watch_workers_from_http_process(server: Server) -> AsyncIterator[None]:
    """For the life of the HTTP process's app: react to an inference worker's exit at once."""
    loop = asyncio.get_running_loop()
    watched = []
    for proc in server.started_workers():
        # The sentinel is a pipe that reads as closed when the worker has exited; this
        # process inherited it when it was forked.
        loop.add_reader(proc.sentinel, _worker_lost, server, loop, proc.sentinel, proc.pid)
        watched.append(proc.sentinel)
    try:
        yield
    finally:
        for fd in watched:
            loop.remove_reader(fd)


def _worker_lost(server: Server, loop: asyncio.AbstractEventLoop, fd: int, pid: int) -> None:
    """An inference worker has exited. Its requests will never be answered (and the pipes it
    shared may be left half-written): answer every waiting request with 503 now, refuse new ones
    (gateway) and fail /health. The main process sees the same death and exits with code 3."""
    loop.remove_reader(fd)
    if server.state.failure is None:
        server.state.failure = f"inference worker {pid} exited"
    n = server.fail_waiting(HTTPException(503, WORKER_LOST, headers={"Retry-After": "1"}))
    log.error(
        f"inference worker {pid} exited; answering {n} waiting request(s) with 503", extra={"event": "worker_lost"}
    )


def setup_failures(state_dir: Path) -> str:
    """Why inference workers failed their setup, as they reported it (naming the file)."""
    return "; ".join(f.read_text(errors="replace") for f in sorted(Path(state_dir).glob("failed-*.txt")))


class ExitCode:
    """The process's exit status, claimed once: by the watchdog or by a failed start, not both."""

    def __init__(self) -> None:
        self.value: int | None = None
        self._lock = threading.Lock()

    def claim(self, code: int) -> bool:
        with self._lock:
            if self.value is not None:
                return False
            self.value = code
            return True


def watch_workers(server: Server, exit_code: ExitCode, state_dir: Path) -> None:
    """In the main process: if an inference worker dies, exit non-zero (the orchestrator restarts
    us) rather than report healthy while its requests hang. A worker that failed its setup after
    the HTTP server started (another family was ready first) is a start-up failure (exit 2).
    The HTTP process dying (killed, out of memory) is the same: nothing would serve any more."""
    try:
        while not server.started_workers():
            time.sleep(0.2)
        while not server.stopping:
            workers = server.started_workers()
            mp.connection.wait([p.sentinel for p in [*workers, *server.http_processes]], timeout=0.5)
            if server.stopping:  # stopping: processes exit on purpose
                return
            lost_http = [p for p in server.http_processes if not p.is_alive()]
            if lost_http and exit_code.claim(EXIT_WORKER_DIED):
                log.error(
                    "HTTP process died; shutting down to be restarted",
                    extra={"event": "worker_died", "status": lost_http[0].exitcode},
                )
                server.request_shutdown()
                return
            dead = [p for p in workers if not p.is_alive()]
            if dead:
                setup_failed = server.setup_failed()
                if not exit_code.claim(EXIT_STARTUP_FAILED if setup_failed else EXIT_WORKER_DIED):
                    return  # a failed start, already reported
                log.error(
                    f"start-up failed: {setup_failures(state_dir) or 'an inference worker failed its setup'}"
                    if setup_failed
                    else "inference worker died; shutting down to be restarted",
                    extra={"event": "startup_failed" if setup_failed else "worker_died", "status": dead[0].exitcode},
                )
                # The HTTP process has answered what it held (503); do not wait long for it.
                server.uvicorn_graceful_timeout = 3
                server.request_shutdown()
                return
    except (OSError, EOFError):  # the manager went away: the server is shutting down anyway
        return


def stop_workers(server: Server) -> None:
    """Terminate inference workers left running after a failed start (they would block exit)."""
    workers = server.started_workers()
    for p in workers:
        if p.is_alive():
            p.terminate()
    for p in workers:
        p.join(5)
        if p.is_alive():
            p.kill()
