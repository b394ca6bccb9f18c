"""The fair scheduler (batching.fair) on the HTTP process's event loop, between the validated
request and the inference workers' queue.

`FairDispatch.submit` takes the place of `Server.submit` for every inference request (the /v1 fast
path and the Open Inference Protocol over HTTP and gRPC): it prices the request, admits it by cost
(or answers 429), cuts it into units, queues them under its client, and puts each unit on the
workers' queue when the scheduler releases it, as the same message LitServe's handler puts there.
The answers of a split request are joined in order. No message is added between the processes:
a request that is released at once (no backlog beyond the window, the usual case for a single
client) takes exactly the path it took before, plus some bookkeeping in this process.

Units are released when a request arrives and when a unit's answer comes back (and at an explicit
per-request deadline), so the workers' queue holds at most about `window_ms` of work: the rest
waits here, where the order can still be chosen.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from fastapi import HTTPException

from service import metrics as M
from service.batching.fair import CLIENT, CostModel, FairScheduler, Job, Unit, client_class, split


class Queueing(Protocol):
    def enqueue(self, api_path: str, uid: str, request: Any, submitted: float) -> Any: ...
    def forget(self, uid: str) -> None: ...
    def is_error(self, status: Any) -> bool: ...


class _Waiting:
    __slots__ = ("arrival", "endpoint", "failure", "job", "wake")

    def __init__(self, job: Job, endpoint: str, arrival: float):
        self.job, self.endpoint, self.arrival = job, endpoint, arrival
        self.wake: asyncio.Event | None = None
        self.failure: Exception | None = None


def timed_out(timeout: float) -> str:
    return f"not started within {timeout:g} s (the request's timeout, or the server's): retry later"


def join(responses: list[Any]) -> Any:
    """The answers of a split request as one: results in order, inference time summed."""
    first = responses[0]
    if len(responses) == 1:
        return first
    first.results = [r for resp in responses for r in resp.results]
    first._infer_ns = sum(r._infer_ns for r in responses)
    return first


class FairDispatch:
    def __init__(
        self,
        server: Queueing,
        *,
        api_paths: list[str],
        workers: int,
        unit_ms: float,
        limit_ms: float,
        request_timeout: float,
        cost_model: CostModel | None = None,
        uid: Any = None,
    ):
        self.server, self.unit_ms, self.request_timeout = server, unit_ms, request_timeout
        self.model = cost_model or CostModel()
        self.window_ms = unit_ms * max(1, workers)
        self.schedulers = {
            p: FairScheduler(window_ms=self.window_ms, limit_ms=limit_ms, workers=workers) for p in api_paths
        }
        self._uid = uid  # a function making unique request ids (FastPath's)
        self._waiting: dict[int, _Waiting] = {}  # id(job) -> its waiter
        self._children: dict[tuple, Any] = {}

    def describe(self) -> dict[str, Any]:
        """For /info."""
        some = next(iter(self.schedulers.values()), None)
        return {
            "policy": "fair",
            "unit_ms": self.unit_ms,
            "window_ms": self.window_ms,
            "queue_cost_limit_s": some.limit_ms / 1000 if some else None,
            "cost_model_ms": self.model.describe(),
        }

    async def submit(self, api_path: str, request: Any) -> tuple[Any, bool]:
        """Queue a validated request under its client; (response, True if an error answer)."""
        sched = self.schedulers[api_path]
        endpoint = api_path.rsplit("/", 1)[-1]
        client = CLIENT.get()
        parts = split(self.model.text_costs(endpoint, request), self.model.request_ms(endpoint), self.unit_ms)
        costs = [c for *_, c in parts]
        total = sum(costs)
        refused = sched.admit(client, total)
        if refused is not None:
            M.REJECTED.labels(endpoint, "over_share").inc()
            return HTTPException(429, refused.message, headers={"Retry-After": str(refused.retry_after)}), True
        now = time.monotonic()
        if len(parts) == 1 and sched.direct(client, total):  # nothing waits: straight to the workers
            return await self._direct(api_path, sched, endpoint, client, request, total, now)
        timeout = self.request_timeout
        own = getattr(request, "timeout_ms", None)
        if own:
            timeout = min(timeout, own / 1000)
        job = Job.of(client, costs, now + timeout, getattr(request, "priority", None))
        if len(parts) == 1:
            job.units[0].payload = request
        else:
            for unit, (a, b, _) in zip(job.units, parts):
                unit.payload = request.model_copy(update={"texts": request.texts[a:b]})
        w = self._waiting[id(job)] = _Waiting(job, endpoint, now)
        timer = None
        try:
            sched.add(job)
            self._pump(api_path, sched)
            if own and job.units[-1].handle is None:  # wake at its deadline even if nothing else happens
                timer = asyncio.get_running_loop().call_later(timeout, self._pump, api_path, sched)
            responses = []
            for unit in job.units:
                while unit.handle is None:
                    if w.failure is not None:
                        return w.failure, True
                    if job.expired:
                        M.REJECTED.labels(endpoint, "timeout").inc()
                        return HTTPException(504, timed_out(timeout)), True
                    w.wake = asyncio.Event()
                    await w.wake.wait()
                item = unit.handle[1]
                await item.event.wait()
                self._done(api_path, sched, unit)
                response, status = item.response
                if self.server.is_error(status):
                    return response, True
                responses.append(response)
            self._metric(M.SERVED_COST, endpoint, client).inc(total / 1000)
            return join(responses), False
        finally:
            if timer is not None:
                timer.cancel()
            self._waiting.pop(id(job), None)
            sched.cancel(job)  # what was not dispatched (an error, a cancelled request) is withdrawn
            for unit in job.units:
                if unit.handle is not None and unit.payload is not None:  # dispatched, never collected
                    self._done(api_path, sched, unit)

    async def _direct(
        self, api_path: str, sched: FairScheduler, endpoint: str, client: str, request: Any, cost: float, now: float
    ) -> tuple[Any, bool]:
        """A request the scheduler dispatched at once (`FairScheduler.direct`): the path a request
        takes without the scheduler, plus its cost in and out of the window."""
        uid = self._uid()
        try:
            item = self.server.enqueue(api_path, uid, request, now)
            self._metric(M.SCHEDULER_WAIT, endpoint, client).observe(0.0)
            await item.event.wait()
        finally:
            self.server.forget(uid)
            sched.done_direct(client, cost)
            if sched.queued > 0:
                self._pump(api_path, sched)
        response, status = item.response
        if self.server.is_error(status):
            return response, True
        self._metric(M.SERVED_COST, endpoint, client).inc(cost / 1000)
        return response, False

    def _metric(self, metric: Any, endpoint: str, client: str) -> Any:
        """The metric's child for (endpoint, client class), looked up once (labels() costs a few us)."""
        key = (id(metric), endpoint, client_class(client))
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(endpoint, key[2])
        return child

    def _pump(self, api_path: str, sched: FairScheduler) -> None:
        """Release what the window admits; wake the requests whose units went or whose time ran out."""
        now = time.monotonic()
        while (unit := sched.next_unit(now)) is not None:
            w = self._waiting.get(id(unit.job))
            uid = self._uid()
            arrival = w.arrival if w is not None else now
            unit.handle = (uid, self.server.enqueue(api_path, uid, unit.payload, arrival))
            if w is not None:
                if unit.index == 0:
                    self._metric(M.SCHEDULER_WAIT, w.endpoint, unit.job.client).observe(now - arrival)
                if w.wake is not None:
                    w.wake.set()
        while sched.expired:
            w = self._waiting.get(id(sched.expired.popleft()))
            if w is not None and w.wake is not None:
                w.wake.set()

    def _done(self, api_path: str, sched: FairScheduler, unit: Unit) -> None:
        """A unit's answer is in (or its request gave up): out of the window, let the next go."""
        self.server.forget(unit.handle[0])
        unit.payload = None  # marks it collected
        sched.done(unit)
        self._pump(api_path, sched)

    def fail_waiting(self, error: Exception) -> int:
        """An inference worker died: every request held here is answered with `error` too."""
        n = 0
        for w in list(self._waiting.values()):
            if w.job.next_unit == len(w.job.units):
                continue  # all its units are on the workers' queue: Server.fail_waiting answers them
            for sched in self.schedulers.values():
                sched.cancel(w.job)
            w.job.expired = True
            w.failure = error
            if w.wake is not None:
                w.wake.set()
            n += 1
        return n
