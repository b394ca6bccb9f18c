"""The fair scheduler on the event loop (batching.dispatch) against a fake workers' queue: what
goes on the queue, in which order, and how split answers come back together."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from service.batching.dispatch import FairDispatch
from service.batching.fair import CLIENT, CostModel
from service.schemas import TranslateRequest

PATH = "/v1/translate"
# one character costs 1 ms whatever the beam: easy arithmetic
MODEL = CostModel(translate_request_ms=0.0, translate_per_char_ms=1.0, translate_per_char_beam_ms=0.0)


class FakeQueue:
    """The workers' queue and one worker: answers what was put, one at a time, in queue order."""

    def __init__(self):
        self.put: list[list[str]] = []  # the texts of each unit, in the order they reached the queue
        self.items: dict[str, SimpleNamespace] = {}
        self.pending: asyncio.Queue = asyncio.Queue()

    def enqueue(self, api_path, uid, request, submitted):
        item = SimpleNamespace(event=asyncio.Event(), response=None)
        self.items[uid] = item
        self.put.append(list(request.texts))
        self.pending.put_nowait((item, request))
        return item

    def forget(self, uid):
        self.items.pop(uid, None)

    def is_error(self, status):
        return status == "error"

    async def work(self):
        while True:
            item, request = await self.pending.get()
            await asyncio.sleep(0)
            results = [SimpleNamespace(text=t) for t in request.texts]
            item.response = (SimpleNamespace(results=results, _infer_ns=1), "ok")
            item.event.set()


def dispatch(q: FakeQueue, unit_ms: float = 10.0, limit_ms: float = 1e6) -> FairDispatch:
    ids = iter(range(10**6))
    return FairDispatch(
        q,
        api_paths=[PATH],
        workers=1,
        unit_ms=unit_ms,
        limit_ms=limit_ms,
        request_timeout=30,
        cost_model=MODEL,
        uid=lambda: str(next(ids)),
    )


async def send(d: FairDispatch, client: str, texts: list[str], **kw):
    CLIENT.set(client)
    return await d.submit(PATH, TranslateRequest(texts=texts, target_lang="de", **kw))


def test_a_heavy_request_is_split_interleaved_and_joined_in_order():
    async def main():
        q = FakeQueue()
        d = dispatch(q)
        worker = asyncio.ensure_future(q.work())
        heavy = [f"sentence{i:02d}" for i in range(12)]  # 10 characters each: one per 10 ms unit
        bulk = [asyncio.ensure_future(send(d, "bulk", heavy)) for _ in range(3)]
        await asyncio.sleep(0)
        small = asyncio.ensure_future(send(d, "small", ["hi"]))
        done = await asyncio.gather(*bulk, small)
        worker.cancel()
        return q, done

    q, done = asyncio.run(main())
    for response, failed in done[:3]:
        assert not failed and [r.text for r in response.results] == [f"sentence{i:02d}" for i in range(12)]
    assert [r.text for r in done[3][0].results] == ["hi"]
    assert q.put.index(["hi"]) <= 2  # not behind 36 units of bulk work
    assert q.put[0] == ["sentence00"]  # one sentence per unit
    assert len(q.put) == 37


def test_a_single_request_goes_straight_to_the_queue():
    async def main():
        q = FakeQueue()
        d = dispatch(q, unit_ms=1000)
        worker = asyncio.ensure_future(q.work())
        out = await send(d, "a", ["one", "two"])
        worker.cancel()
        return q, out

    q, (_, failed) = asyncio.run(main())
    assert not failed and q.put == [["one", "two"]]


def test_over_its_share_a_client_gets_429_and_another_is_admitted():
    async def main():
        q = FakeQueue()  # no worker: everything stays queued
        d = dispatch(q, unit_ms=10, limit_ms=100)
        first = asyncio.ensure_future(send(d, "bulk", ["x" * 10] * 8))
        await asyncio.sleep(0)
        second = await send(d, "bulk", ["x" * 10] * 8)
        third = asyncio.ensure_future(send(d, "small", ["hi"]))
        await asyncio.sleep(0)
        small_admitted = not third.done() and d.schedulers[PATH].clients["small"].queued > 0
        first.cancel()
        third.cancel()
        return second, small_admitted

    (error, failed), small_admitted = asyncio.run(main())
    assert failed and error.status_code == 429 and int(error.headers["Retry-After"]) >= 1
    assert small_admitted  # queued behind the window, not refused


def test_a_request_not_started_within_its_timeout_gets_504():
    async def main():
        q = FakeQueue()  # no worker: the first unit never finishes
        d = dispatch(q, unit_ms=10)
        blocker = asyncio.ensure_future(send(d, "a", ["x" * 10] * 3))
        await asyncio.sleep(0)
        out = await send(d, "b", ["y" * 10], timeout_ms=50)
        blocker.cancel()
        await asyncio.gather(blocker, return_exceptions=True)
        return out, d

    (error, failed), d = asyncio.run(main())
    assert failed and error.status_code == 504 and "not started within 0.05 s" in error.detail
    sched = d.schedulers[PATH]
    assert sched.in_flight == 0 and sched.queued == 0  # the cancelled request left nothing behind


def test_a_dead_worker_fails_the_requests_held_here_too():
    from fastapi import HTTPException

    async def main():
        q = FakeQueue()  # no worker: the first unit is never answered
        d = dispatch(q, unit_ms=10)
        blocker = asyncio.ensure_future(send(d, "a", ["x" * 10]))
        held = asyncio.ensure_future(send(d, "b", ["y" * 10]))
        await asyncio.sleep(0)
        n = d.fail_waiting(HTTPException(503, "worker lost"))
        out = await held
        blocker.cancel()
        await asyncio.gather(blocker, return_exceptions=True)
        return n, out, q.put

    n, (error, failed), put = asyncio.run(main())
    assert n == 1 and failed and error.status_code == 503  # the one on the queue is Server.fail_waiting's
    assert put == [["x" * 10]]
