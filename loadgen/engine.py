"""The load engine: drive one load level against a server and record every request.

    level = Level("closed", concurrency=8)
    await run_level(transport, lambda i: Request("/v1/sentiment", body), level, warmup=5, duration=30)
    level.samples          # [Sample(start, latency, status, texts), ...] of the measured window
    level.elapsed          # seconds from the window's opening to the last answer

Closed loop (`Level("closed", concurrency=N)`): N callers each send their next request as soon
as the previous one is answered; this measures capacity. Open loop (`Level("open", rate=R)`):
requests leave on a fixed schedule (or Poisson arrivals at the same mean rate) whether or not
earlier ones are answered; latency counts from each request's scheduled time, so a server
falling behind shows as latency instead of being hidden by a slower client (coordinated
omission). A level runs `warmup` seconds unmeasured, then `duration` seconds measured (None: no
time limit) or until `max_requests` measured requests were sent, then waits for the answers.

A request is a success ("200") when the server answers 200 with one "results" field; anything
else is counted by its HTTP status, or as "timeout", "connection", "bad response" (200 without
results), "dropped" (open loop, more than `max_outstanding` requests in flight) or "error".
`python -m loadgen`, bench/serving.py and bench/soak.py all run their load through `run_level`.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO

from loadgen.stats import Totals, percentile, server_view
from loadgen.transport import Reply, Transport


@dataclass(frozen=True)
class Request:
    path: str  # e.g. /v1/sentiment
    body: bytes  # JSON (or what the path takes: OIP binary tensors, a serialized gRPC message)
    texts: int = 1  # texts in the body (the report's texts/s)
    headers: tuple[tuple[str, str], ...] = ()  # besides the transport's own
    expect: bytes = b'"results"'  # a 200 is a success when its body holds this exactly once


Requests = Callable[[int], Request]  # the level's i-th request (warm-up included, from 0) -> what to send


@dataclass
class Sample:
    start: float  # seconds since the measured window opened (scheduled time in open loop)
    latency: float  # seconds
    status: str  # "200", "429", ..., "timeout", "connection", "bad response", "dropped", "error"
    texts: int


@dataclass
class Level:
    mode: str  # "closed" or "open"
    concurrency: int | None = None
    rate: float | None = None
    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0  # measured window: its opening to the last answer
    server: dict[str, float] | None = None  # what the server's /metrics say about the window
    client_cpu: float = 0.0  # CPU seconds this process used over the level (a busy client skews latency)

    @property
    def label(self) -> str:
        return f"c={self.concurrency}" if self.mode == "closed" else f"{self.rate:g} req/s"

    def __repr__(self) -> str:
        # short: asyncio.run (3.11) reprs a finished main task's result, a Level of 10^5 samples
        return f"Level({self.mode} {self.label}, {len(self.samples)} samples, {self.elapsed:.3f} s)"

    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.status == "200"]


def outcome(reply: Reply, expect: bytes = b'"results"') -> str:
    if reply.status != 200:
        return str(reply.status)
    return "200" if reply.body.count(expect) == 1 else "bad response"


async def _timed(transport: Transport, req: Request, t_ref: float, t_sched: float | None = None) -> Sample:
    """Send one request; latency from t_sched (open loop) or from the actual send (closed loop)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time() if t_sched is None else t_sched
    try:
        reply = await transport.request("POST", req.path, req.body, dict(req.headers) if req.headers else None)
        status = outcome(reply, req.expect)
    except TimeoutError:
        status = "timeout"
    except OSError:  # ConnectionError from either transport, and anything else the socket says
        status = "connection"
    except Exception:  # the report counts it; the run goes on
        status = "error"
    return Sample(t0 - t_ref, loop.time() - t0, status, req.texts if status == "200" else 0)


class Progress:
    """One live status line on stderr (rewritten in place on a terminal, every 5 s otherwise)."""

    def __init__(self, enabled: bool, stream: IO[str] = sys.stderr):
        self.enabled, self.stream = enabled, stream
        self.tty = enabled and stream.isatty()
        self._last = 0.0

    def update(self, level: Level, phase: str, elapsed: float, total: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not self.tty and now - self._last < 5:
            return
        self._last = now
        ok = [s.latency for s in level.ok()]
        errors = len(level.samples) - len(ok)
        recent = sum(1 for s in level.samples if s.start >= elapsed - 1 and s.status == "200")
        p99 = f"{percentile(ok, 99) * 1000:.0f} ms" if ok else "-"
        line = (
            f"{level.label:>12} {phase:<7} {elapsed:5.1f}/{total:.0f}s  done {len(level.samples):6d}  "
            f"{recent:4d} req/s  p99 {p99:>8}  errors {errors}"
        )
        self.stream.write(("\r" + line + "\x1b[K") if self.tty else line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


async def run_level(
    transport: Transport,
    requests: Requests,
    level: Level,
    *,
    warmup: float,
    duration: float | None,
    max_requests: int | None = None,
    max_outstanding: int = 512,
    arrival: str = "constant",
    seed: int = 0,
    progress: Progress | None = None,
    snapshot: Callable[[], Awaitable[Totals]] | None = None,
) -> Level:
    """Drive one load level (see the module docstring); fills and returns `level`.
    `snapshot`, read when measuring starts and after the last answer, gives `level.server`."""
    loop = asyncio.get_running_loop()
    t_begin = loop.time()
    t_measure = t_begin + warmup
    t_end = t_measure + duration if duration is not None else float("inf")
    issued = 0  # requests sent, warm-up included: the index of the next one
    sent = 0  # measured requests sent
    tasks: set[asyncio.Task] = set()

    def keep(s: Sample) -> None:
        if s.start >= 0:
            level.samples.append(s)

    def more(t: float) -> bool:
        return t < t_end and (max_requests is None or sent < max_requests)

    def next_request(t: float) -> Request:
        nonlocal issued, sent
        sent += t >= t_measure
        issued += 1
        return requests(issued - 1)

    async def client_loop() -> None:
        while more(now := loop.time()):
            keep(await _timed(transport, next_request(now), t_measure))

    async def arrivals() -> None:
        rng = random.Random(seed)
        assert level.rate is not None
        t_next = t_begin
        while True:
            delay = t_next - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not more(t_next):
                return
            req = next_request(t_next)
            if len(tasks) >= max_outstanding:  # the client itself is saturated: count it, do not queue it
                keep(Sample(t_next - t_measure, 0.0, "dropped", 0))
            else:
                task = asyncio.create_task(_timed(transport, req, t_measure, t_next))
                task.add_done_callback(lambda t: (tasks.discard(t), keep(t.result())))
                tasks.add(task)
            t_next += rng.expovariate(level.rate) if arrival == "poisson" else 1.0 / level.rate

    async def report() -> None:
        assert progress is not None
        while True:
            now = loop.time()
            measuring = now >= t_measure
            progress.update(
                level,
                "measure" if measuring else "warm-up",
                now - (t_measure if measuring else t_begin),
                (duration or 0.0) if measuring else warmup,
            )
            await asyncio.sleep(0.5)

    async def at_measure() -> Totals:
        assert snapshot is not None
        await asyncio.sleep(max(0.0, t_measure - loop.time()))
        return await snapshot()

    before = asyncio.create_task(at_measure()) if snapshot else None
    cpu0 = time.process_time()
    reporter = asyncio.create_task(report()) if progress and progress.enabled else None
    try:
        if level.mode == "closed":
            assert level.concurrency is not None
            await asyncio.gather(*(client_loop() for _ in range(level.concurrency)))
        else:
            await arrivals()
            while tasks:
                await asyncio.gather(*list(tasks), return_exceptions=True)
    finally:
        if reporter:
            reporter.cancel()
            progress.done()  # type: ignore[union-attr]
    ends = [s.start + s.latency for s in level.samples if s.status != "dropped"]
    level.elapsed = max(ends) if ends else 0.0
    level.client_cpu = time.process_time() - cpu0
    if before is not None and snapshot is not None:
        try:
            level.server = server_view(await before, await snapshot(), level.elapsed)
        except (OSError, ValueError):  # /metrics is a bonus, not a condition
            level.server = None
    return level
