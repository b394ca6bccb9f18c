"""Fair scheduling between clients: the deterministic core (no asyncio, no clock of its own).

The problem (issue 22): admission counted requests and the batch loop served first come first
served, so one client's twelve 64-sentence beam-8 translations made another client's one-sentence
request wait 14 s. Here, in the HTTP process, in front of the inference workers' queue:

- **Cost** (`CostModel`): every request gets an estimate of the model time it needs, in
  milliseconds of one single-threaded worker, from what the HTTP process knows without
  tokenizing: characters per text, beam size, alignments, max_length, texts. The coefficients were
  measured on the shipped models (`python -m bench.cost_model`; figures in docs/scheduling.md).
- **Units** (`split`): a request is cut, between its texts, into units of at most `unit_ms` of
  estimated cost (a single text is never cut). Each unit is an ordinary request of the same
  family with a slice of the texts; the worker batches it like any other, and the HTTP process
  puts the answers back together in order. No unit holds a worker for much longer than `unit_ms`.
- **Order** (`FairScheduler`): per-client queues, served by a virtual token counter (VTC, Sheng
  et al., OSDI 2024): each client's counter is charged the cost of each unit dispatched for it,
  and the next unit goes to the backlogged client with the smallest counter. A client that
  arrives (or returns from idle) starts at the smallest counter among the backlogged ones, so
  idleness saves no credit. Between two backlogged clients the served cost never differs by more
  than the largest unit (tests/service/batching/test_fair.py).
- **Priority**: within one client, its requests go by priority (1 first, 9 last; absent or 0 is
  5), then arrival. Priority does not buy a larger share than other clients': a client that marks
  everything urgent only reorders its own work. With a single client (no identities sent) that
  is exactly Triton's priority levels.
- **Timeout**: a request whose units are not all dispatched by its deadline (its own `timeout`,
  else the server's `request_timeout`) is dropped from the queue and answered 504.
- **Window**: units are released to the workers' queue only while the cost in flight is below
  `window_ms` (one unit always goes when nothing is in flight). Below that backlog nothing is held
  back and nothing is reordered: a single client's traffic flows exactly as without the scheduler,
  and the workers still form batches from what is queued.
- **Admission by cost** (`admit`): the queued cost is bounded (`limit_ms`); a client whose own
  backlog would pass its share (the limit over the number of backlogged clients) is refused
  with 429 and a Retry-After computed from its backlog, while other clients are still admitted.
  A client with nothing queued is always admitted one request (however large) unless the whole
  limit is used.
"""

from __future__ import annotations

import bisect
import contextvars
import heapq
import math
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PRIORITY, MIN_PRIORITY, MAX_PRIORITY = 5, 1, 9
ANONYMOUS = "anonymous"
SENTIMENT_CHAR_CAP = 2_000  # the sentiment model reads at most 400 tokens (head 100 + tail 300): ~2,000 characters
CHARS_PER_OUTPUT_STEP = 4.0  # max_length caps decoder steps; ~4 source characters per output subword

# Who sent the request being handled (set by the HTTP gateway and the gRPC servicer).
CLIENT: contextvars.ContextVar[str] = contextvars.ContextVar("client", default=ANONYMOUS)
_SANE_CLIENT = re.compile(r"^[A-Za-z0-9._:@/\-]{1,64}$")


def client_id(header: str | None) -> str:
    """The client a request is counted against: its X-Client-ID (gRPC: x-client-id metadata) when
    sane, else the anonymous default."""
    return header if header and _SANE_CLIENT.match(header) else ANONYMOUS


def client_class(client: str) -> str:
    """A metrics label with two values whatever the number of clients: anonymous or identified."""
    return ANONYMOUS if client == ANONYMOUS else "identified"


def effective_priority(priority: int | None) -> int:
    return DEFAULT_PRIORITY if not priority else min(max(int(priority), MIN_PRIORITY), MAX_PRIORITY)


@dataclass(frozen=True)
class CostModel:
    """Estimated model milliseconds of one request on one single-threaded worker (see module doc).

    translation: request + sum over texts of chars * (per_char + per_char_beam * beam), times
    align_factor when alignments are asked for; a text's characters count at most max_length *
    CHARS_PER_OUTPUT_STEP (max_length bounds the decoder's steps). sentiment: request + per_char *
    sum of min(chars, SENTIMENT_CHAR_CAP). Measured by bench/cost_model.py; docs/scheduling.md."""

    # python -m bench.cost_model, 2026-12-04 16:24 UTC, AMD EPYC, 2 shared cores (load average 4-6),
    # int8 (bench/results/cost_model.json): each measured configuration within 0.80-1.22x; the
    # issue's worst case (64 sentences, beam 8, n-best 8, alignments) 910 ms measured, 891 estimated.
    translate_request_ms: float = 2.0
    translate_per_char_ms: float = 0.01361
    translate_per_char_beam_ms: float = 0.02097
    translate_align_factor: float = 1.209
    sentiment_request_ms: float = 0.0
    sentiment_per_char_ms: float = 0.001687

    def request_ms(self, endpoint: str) -> float:
        return self.translate_request_ms if endpoint == "translate" else self.sentiment_request_ms

    def text_costs(self, endpoint: str, request: Any) -> list[float]:
        """The cost of each text of `request` (without the per-request part)."""
        if endpoint == "translate":
            per = self.translate_per_char_ms + self.translate_per_char_beam_ms * request.beam_size
            if request.return_alignments:
                per *= self.translate_align_factor
            cap = request.max_length * CHARS_PER_OUTPUT_STEP if request.max_length else math.inf
            return [min(len(t), cap) * per for t in request.texts]
        return [min(len(t), SENTIMENT_CHAR_CAP) * self.sentiment_per_char_ms for t in request.texts]

    def cost(self, endpoint: str, request: Any) -> float:
        return self.request_ms(endpoint) + sum(self.text_costs(endpoint, request))

    def describe(self) -> dict[str, float]:
        return dict(self.__dict__)


def split(text_costs: Sequence[float], request_ms: float, unit_ms: float) -> list[tuple[int, int, float]]:
    """Consecutive slices (start, stop, cost) of the texts, each costing at most `unit_ms`
    (request_ms + its texts) unless a single text costs more (never cut)."""
    out: list[tuple[int, int, float]] = []
    start, acc = 0, request_ms
    for i, c in enumerate(text_costs):
        if i > start and acc + c > unit_ms:
            out.append((start, i, acc))
            start, acc = i, request_ms
        acc += c
    out.append((start, len(text_costs), acc))
    return out


@dataclass(eq=False)
class Unit:
    job: Job
    index: int
    cost: float
    payload: Any = None  # what goes to the workers (a request with a slice of the texts)
    handle: Any = None  # set by the dispatcher when it is queued for the workers


@dataclass(eq=False)
class Job:
    """One request, as units, from one client."""

    client: str
    cost: float
    deadline: float
    priority: int = DEFAULT_PRIORITY
    seq: int = 0
    units: list[Unit] = field(default_factory=list)
    next_unit: int = 0  # the first unit not yet dispatched
    expired: bool = False

    @classmethod
    def of(cls, client: str, costs: Sequence[float], deadline: float, priority: int | None = None) -> Job:
        job = cls(client, sum(costs), deadline, effective_priority(priority))
        job.units = [Unit(job, i, c) for i, c in enumerate(costs)]
        return job

    @property
    def queued_cost(self) -> float:
        return sum(u.cost for u in self.units[self.next_unit :])


def _order(job: Job) -> tuple[int, int]:
    return job.priority, job.seq


@dataclass
class _Client:
    counter: float = 0.0  # virtual cost served (VTC)
    jobs: list[Job] = field(default_factory=list)  # waiting, sorted by (priority, seq)
    queued: float = 0.0  # cost of its units not yet dispatched
    in_flight: float = 0.0
    last: int = -1  # when it was last served (dispatch count): ties go to the one served longest ago


@dataclass(frozen=True)
class Refused:
    """Admission said no: 429 with Retry-After seconds."""

    retry_after: int
    message: str


class FairScheduler:
    """The deterministic core: no clock and no I/O; the caller passes `now` (the dispatcher:
    time.monotonic())."""

    def __init__(self, *, window_ms: float, limit_ms: float, workers: int = 1):
        self.window_ms, self.limit_ms, self.workers = window_ms, limit_ms, max(1, workers)
        self.clients: dict[str, _Client] = {}
        self.in_flight = 0.0
        self.queued = 0.0
        self.vtime = 0.0  # the counter of the client served last: where a client with no rivals restarts
        self._seq = 0
        self._dispatched = 0
        self.served: dict[str, float] = {}  # cost dispatched per client, for tests and /metrics
        self.expired: deque[Job] = deque()
        # A heap: the next deadline is checked, not every job. Jobs leave it lazily (one dispatched
        # at once stays until its deadline passes), so it is compacted when it holds more than twice
        # the jobs still waiting: otherwise a busy server would keep every request of the last
        # request_timeout seconds alive, answer and all (30 s at 700 requests/s: 21,000).
        self._deadlines: list[tuple[float, int, Job]] = []
        self._jobs_waiting = 0

    # -- admission ---------------------------------------------------------------------------------

    def backlogged(self) -> list[str]:
        return [n for n, c in self.clients.items() if c.jobs]

    def admit(self, client: str, cost: float) -> Refused | None:
        """None when a request of `cost` from `client` may queue, else the 429 to answer."""
        c = self.clients.get(client)
        mine = c.queued if c is not None else 0.0
        if mine == 0.0 and self.queued < self.limit_ms:
            return None  # one request from a client with nothing queued always fits (unless all is used)
        active = len(set(self.backlogged()) | {client})
        share = self.limit_ms / active
        if mine + cost <= share and self.queued + cost <= self.limit_ms:
            return None
        wait_s = (mine + min(self.queued, self.limit_ms) / active) / 1000 / self.workers
        retry = max(1, math.ceil(wait_s))
        return Refused(
            retry,
            f"client {client!r} has {mine / 1000:.1f} s of model work queued, its share of the queue "
            f"({share / 1000:.1f} s) with {active} client(s) waiting; retry after {retry} s",
        )

    # -- queueing and dispatch ---------------------------------------------------------------------

    def add(self, job: Job) -> None:
        c = self.clients.get(job.client)
        if c is None:
            c = self.clients[job.client] = _Client()
        if not c.jobs:  # arriving or back from idle: no credit for the time away
            others = [o.counter for n, o in self.clients.items() if o.jobs and n != job.client]
            c.counter = max(c.counter, min(others) if others else self.vtime)
        job.seq = self._seq = self._seq + 1
        bisect.insort(c.jobs, job, key=_order)
        self._jobs_waiting += 1
        if len(self._deadlines) > 2 * self._jobs_waiting + 64:
            self._deadlines = [e for e in self._deadlines if e[2].next_unit < len(e[2].units) and not e[2].expired]
            heapq.heapify(self._deadlines)
        heapq.heappush(self._deadlines, (job.deadline, job.seq, job))
        c.queued += job.queued_cost
        self.queued += job.queued_cost

    def _pick(self) -> tuple[str, _Client] | None:
        best = None
        for name, c in self.clients.items():
            if not c.jobs:
                continue
            head = c.jobs[0]
            key = (c.counter, c.last, head.priority, head.seq)
            if best is None or key < best[0]:
                best = (key, name, c)
        return None if best is None else (best[1], best[2])

    def expire(self, now: float) -> list[Job]:
        """Drop the jobs whose deadline passed before their last unit was dispatched."""
        gone = []
        while self._deadlines and self._deadlines[0][0] <= now:
            job = heapq.heappop(self._deadlines)[2]
            c = self.clients.get(job.client)
            if c is None or job.next_unit == len(job.units) or job not in c.jobs:
                continue  # all dispatched, or withdrawn
            c.jobs.remove(job)
            self._jobs_waiting -= 1
            q = job.queued_cost
            c.queued -= q
            self.queued -= q
            job.expired = True
            gone.append(job)
            self._tidy(job.client)
        return gone

    def next_unit(self, now: float) -> Unit | None:
        """The next unit to release to the workers, or None (nothing waits, or the window is full).
        Expired jobs are dropped first (`expire`; the caller collects them from `self.expired`)."""
        self.expired.extend(self.expire(now))
        picked = self._pick()
        if picked is None:
            return None
        name, c = picked
        job = c.jobs[0]
        unit = job.units[job.next_unit]
        if self.in_flight > 0 and self.in_flight + unit.cost > self.window_ms:
            return None
        job.next_unit += 1
        if job.next_unit == len(job.units):
            c.jobs.pop(0)
            self._jobs_waiting -= 1
        self.vtime = c.counter
        self._dispatched += 1
        c.last = self._dispatched
        c.counter += unit.cost
        c.queued -= unit.cost
        c.in_flight += unit.cost
        self.queued -= unit.cost
        self.in_flight += unit.cost
        self.served[name] = self.served.get(name, 0.0) + unit.cost
        return unit

    def direct(self, client: str, cost: float) -> bool:
        """The common case, cheaply: when no client has work waiting and the window has room, a
        one-unit request is dispatched at once, as add() then next_unit() would dispatch it (the
        same counters, the same window), without a Job, a deadline or a pick. True if it was;
        the caller then calls `done_direct` when it is answered. False: queue it as a Job."""
        if self.queued > 1e-9 or (self.in_flight > 0 and self.in_flight + cost > self.window_ms):
            return False
        if any(c.jobs for c in self.clients.values()):
            return False
        c = self.clients.get(client)
        if c is None:
            c = self.clients[client] = _Client()
        c.counter = max(c.counter, self.vtime)  # arriving: no credit for time away (add())
        self.vtime = c.counter
        self._dispatched += 1
        c.last = self._dispatched
        c.counter += cost
        c.in_flight += cost
        self.in_flight += cost
        self.served[client] = self.served.get(client, 0.0) + cost
        return True

    def done_direct(self, client: str, cost: float) -> None:
        """A request dispatched by `direct` is answered (or abandoned)."""
        c = self.clients.get(client)
        if c is not None:
            c.in_flight -= cost
        self.in_flight = max(0.0, self.in_flight - cost)
        self._tidy(client)

    def done(self, unit: Unit) -> None:
        """A dispatched unit is answered (or abandoned): its cost leaves the window."""
        c = self.clients.get(unit.job.client)
        if c is not None:
            c.in_flight -= unit.cost
        self.in_flight = max(0.0, self.in_flight - unit.cost)
        self._tidy(unit.job.client)

    def cancel(self, job: Job) -> None:
        """Withdraw a job's undispatched units (its client went away, or one unit failed)."""
        c = self.clients.get(job.client)
        if c is None or job not in c.jobs:
            return
        c.jobs.remove(job)
        self._jobs_waiting -= 1
        q = job.queued_cost
        c.queued -= q
        self.queued -= q
        job.next_unit = len(job.units)
        self._tidy(job.client)

    def _idle(self, c: _Client) -> bool:
        return not c.jobs and c.in_flight <= 1e-9 and c.counter <= self.vtime

    def _tidy(self, name: str) -> None:
        """Forget a client gone idle once its counter holds no lead (a returning client restarts at
        vtime anyway); one whose counter is ahead is kept, so that leaving earns it nothing."""
        c = self.clients.get(name)
        if c is not None and self._idle(c):
            del self.clients[name]
            self.served.pop(name, None)
        if len(self.clients) > 64:  # those kept for their lead: forget them once they have none
            for n in [n for n, o in self.clients.items() if self._idle(o)]:
                del self.clients[n]
                self.served.pop(n, None)


def drain(sched: FairScheduler, now: float, on_unit: Callable[[Unit], None]) -> int:
    """Release every unit the window admits now; how many."""
    n = 0
    while (unit := sched.next_unit(now)) is not None:
        on_unit(unit)
        n += 1
    return n
