"""The fair scheduler's core on a fake clock: fairness bound, no starvation, priority, timeout,
splitting, admission by cost; and the cost model's shape."""

from __future__ import annotations

import random

import pytest

from service.batching.fair import (
    ANONYMOUS,
    CostModel,
    FairScheduler,
    Job,
    client_class,
    client_id,
    split,
)
from service.schemas import SentimentRequest, TranslateRequest


def sched(window: float = 1.0, limit: float = 1e9) -> FairScheduler:
    return FairScheduler(window_ms=window, limit_ms=limit, workers=1)


def run(s: FairScheduler, now: float = 0.0, steps: int = 10_000) -> list:
    """Dispatch and complete one unit at a time (a window of one unit): the order of service."""
    order = []
    for _ in range(steps):
        u = s.next_unit(now)
        if u is None:
            break
        order.append(u)
        s.done(u)
    return order


def test_two_backlogged_clients_served_cost_differs_by_at_most_the_largest_unit():
    rng = random.Random(0)
    s = sched()
    largest = 0.0
    for _ in range(200):
        for client in ("bulk", "small"):
            costs = [rng.uniform(1, 250) if client == "bulk" else rng.uniform(1, 20) for _ in range(rng.randint(1, 4))]
            largest = max(largest, *costs)
            s.add(Job.of(client, costs, deadline=1e9))
    served = {"bulk": 0.0, "small": 0.0}
    while (u := s.next_unit(0.0)) is not None:
        served[u.job.client] += u.cost
        s.done(u)
        if s.clients.get("bulk") and s.clients["bulk"].jobs and s.clients.get("small") and s.clients["small"].jobs:
            assert abs(served["bulk"] - served["small"]) <= largest + 1e-9


def test_a_small_request_is_served_after_at_most_one_unit_of_a_heavy_backlog():
    s = sched()
    for _ in range(12):  # 12 heavy requests, 5 units of 250 ms each
        s.add(Job.of("bulk", [250.0] * 5, deadline=1e9))
    first = s.next_unit(0.0)
    assert first.job.client == "bulk"
    s.add(Job.of("small", [5.0], deadline=1e9))
    s.done(first)
    assert s.next_unit(0.0).job.client == "small"  # next, not after 60 units


def test_no_starvation_of_a_client_whose_units_are_larger():
    s = sched()
    for _ in range(50):
        s.add(Job.of("many-small", [1.0], deadline=1e9))
    s.add(Job.of("one-large", [40.0], deadline=1e9))
    order = [u.job.client for u in run(s)]
    assert order.index("one-large") <= 2  # its counter starts level: it is not queued behind the 50


def test_a_returning_client_gets_no_credit_for_time_away():
    s = sched()
    for _ in range(20):
        s.add(Job.of("a", [10.0], deadline=1e9))
    for _ in range(10):
        u = s.next_unit(0.0)
        s.done(u)
    for _ in range(20):
        s.add(Job.of("b", [10.0], deadline=1e9))
    order = [u.job.client for u in run(s)][:10]
    assert order.count("b") <= 6  # alternates with a, does not take the next 10 in a row


def test_priority_orders_a_clients_own_requests_not_its_share():
    s = sched()
    s.add(Job.of("a", [10.0], deadline=1e9, priority=0))  # default: 5
    s.add(Job.of("a", [10.0], deadline=1e9, priority=9))
    s.add(Job.of("a", [10.0], deadline=1e9, priority=1))
    order = [u.job.priority for u in run(s)]
    assert order == [1, 5, 9]
    s = sched()
    for _ in range(10):
        s.add(Job.of("urgent", [10.0], deadline=1e9, priority=1))
        s.add(Job.of("normal", [10.0], deadline=1e9))
    order = [u.job.client for u in run(s)]
    assert order[:6].count("urgent") == 3  # still alternates


def test_a_request_not_dispatched_by_its_deadline_is_dropped():
    s = sched(window=10.0)
    s.add(Job.of("a", [10.0], deadline=1e9))
    late = Job.of("b", [10.0, 10.0], deadline=5.0)
    s.add(late)
    first = s.next_unit(0.0)
    assert first is not None
    assert s.next_unit(1.0) is None  # window full
    s.done(first)
    u = s.next_unit(2.0)
    assert u.job is late and u.index == 0
    s.done(u)
    assert s.next_unit(6.0) is None  # its second unit came too late
    assert late.expired and list(s.expired) == [late]
    assert s.queued == pytest.approx(0.0)


def test_served_requests_are_not_kept_alive_until_their_deadline():
    """A busy server: 30,000 one-unit requests served at once, each with a deadline 30 s ahead.
    The deadline heap forgets the served ones (it was holding every request of the last 30 s,
    answer and all, and the garbage collector scanned them all), and deadlines still work."""
    import gc
    import weakref

    s = sched(window=10.0)
    refs = []
    for i in range(30_000):
        now = i / 700
        job = Job.of("a", [2.0], deadline=now + 30)
        s.add(job)
        s.done(s.next_unit(now))
        if i % 1000 == 0:
            refs.append(weakref.ref(job))
    del job
    gc.collect()
    assert sum(r() is not None for r in refs) <= 1
    assert len(s._deadlines) <= 2 * s._jobs_waiting + 65
    waiting = Job.of("a", [20.0], deadline=50.0)  # held back by a full window, then too late
    s.add(busy := Job.of("a", [10.0], deadline=1e9))
    s.add(waiting)
    u = s.next_unit(45.0)
    assert u.job is busy and s.next_unit(46.0) is None
    s.done(u)
    assert s.next_unit(51.0) is None and waiting.expired and s._jobs_waiting == 0


def test_window_holds_back_only_beyond_its_size():
    s = FairScheduler(window_ms=100.0, limit_ms=1e9)
    for _ in range(10):
        s.add(Job.of("a", [9.0], deadline=1e9))
    released = []
    while (u := s.next_unit(0.0)) is not None:
        released.append(u)
    assert len(released) == 10  # 90 ms: all at once, as without the scheduler
    s.add(Job.of("a", [500.0], deadline=1e9))
    assert s.next_unit(0.0) is None  # 90 in flight + 500 > 100
    for u in released:
        s.done(u)
    assert s.next_unit(0.0).cost == 500.0  # alone, a unit larger than the window still goes


def test_split_cuts_between_texts_and_reassembly_keeps_order():
    costs = [100.0, 100.0, 100.0, 30.0, 400.0, 10.0]
    units = split(costs, request_ms=1.0, unit_ms=250.0)
    assert units == [(0, 2, 201.0), (2, 4, 131.0), (4, 5, 401.0), (5, 6, 11.0)]
    assert [i for a, b, _ in units for i in range(a, b)] == list(range(6))
    assert split([5.0], 1.0, 250.0) == [(0, 1, 6.0)]
    # interleaved with another client's work, units of one job still come out in their order
    s = sched()
    job = Job.of("bulk", [c for *_, c in units], deadline=1e9)
    s.add(job)
    s.add(Job.of("small", [5.0], deadline=1e9))
    s.add(Job.of("small", [5.0], deadline=1e9))
    order = run(s)
    assert [u.index for u in order if u.job is job] == [0, 1, 2, 3]
    assert [u.job.client for u in order][:4] != ["bulk"] * 4


def test_admission_by_cost_refuses_the_client_over_its_share_only():
    s = FairScheduler(window_ms=1.0, limit_ms=1000.0, workers=2)
    assert s.admit("bulk", 900.0) is None  # nothing queued: one request always fits
    s.add(Job.of("bulk", [300.0, 300.0, 300.0], deadline=1e9))
    refused = s.admit("bulk", 300.0)
    assert refused is not None and refused.retry_after >= 1 and "bulk" in refused.message
    assert s.admit("small", 5.0) is None  # others are still admitted
    s.add(Job.of("small", [5.0], deadline=1e9))
    assert s.admit("small", 5.0) is None


def test_cost_model_grows_with_the_work_asked_for():
    m = CostModel()
    one = TranslateRequest(texts=["A man is riding a bicycle down the street."], target_lang="de", beam_size=1)
    heavy = TranslateRequest(
        texts=["A man is riding a bicycle down the street."] * 64,
        target_lang="de",
        beam_size=8,
        n_best=8,
        return_alignments=True,
    )
    capped = TranslateRequest(texts=["word " * 150], target_lang="de", max_length=5)
    assert m.cost("translate", heavy) > 64 * m.cost("translate", one)
    assert m.cost("translate", capped) < m.cost("translate", TranslateRequest(texts=["word " * 150], target_lang="de"))
    short = SentimentRequest(texts=["fine"])
    long = SentimentRequest(texts=["word " * 1000])
    assert m.cost("sentiment", long) > m.cost("sentiment", short)
    assert m.cost("sentiment", long) == m.cost("sentiment", SentimentRequest(texts=["word " * 3000]))  # capped


def test_client_identity_and_its_bounded_label():
    assert client_id(None) == ANONYMOUS
    assert client_id("team-a") == "team-a"
    assert client_id("bad id with spaces") == ANONYMOUS
    assert client_id("x" * 65) == ANONYMOUS
    assert {client_class(c) for c in ("a", "b", "c", ANONYMOUS)} == {"identified", ANONYMOUS}


def test_priority_and_timeout_arrive_from_v1_fields_and_from_tritons_parameters():
    from service.oip.models import scheduling_fields

    assert scheduling_fields({"priority": 2, "timeout": 1500}) == {"priority": 2, "timeout_ms": 2}
    assert scheduling_fields({"priority": 0, "timeout": 0}) == {}  # Triton's "none"
    assert scheduling_fields({"priority": 50}) == {"priority": 9}
    r = TranslateRequest(texts=["a"], target_lang="de", priority=1, timeout_ms=250)
    assert (r.priority, r.timeout_ms) == (1, 250)
    with pytest.raises(ValueError):
        TranslateRequest(texts=["a"], target_lang="de", priority=10)
    with pytest.raises(ValueError):
        SentimentRequest(texts=["a"], timeout_ms=0)


def test_direct_dispatch_is_add_then_next_unit_when_nothing_waits():
    """The cheap path for the common case leaves the scheduler as the general one does, and is
    refused whenever ordering could matter: work waiting, or a full window."""
    a, b = sched(window=10.0), sched(window=10.0)
    for client, cost in (("x", 3.0), ("y", 2.0), ("x", 4.0)):
        assert a.direct(client, cost)
        b.add(Job.of(client, [cost], deadline=1e9))
        u = b.next_unit(0.0)
        assert u is not None and u.job.client == client

    def state(s):
        return s.vtime, s.in_flight, s.queued, s.served, {n: (c.counter, c.in_flight) for n, c in s.clients.items()}

    assert state(a) == state(b)
    assert not a.direct("z", 2.0)  # 9 in flight + 2 > the window of 10
    a.done_direct("x", 3.0)
    assert a.in_flight == pytest.approx(6.0)
    a.add(Job.of("y", [1.0, 1.0], deadline=1e9))
    assert a.next_unit(0.0) is not None and a.queued == pytest.approx(1.0)
    assert not a.direct("z", 0.5)  # work is waiting: it takes its turn
    a.done_direct("x", 4.0)
    a.done_direct("y", 2.0)
    assert a.in_flight == pytest.approx(1.0)
