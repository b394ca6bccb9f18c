"""The gateway's fast path for valid /v1 bodies (service.batching.fast_path), without a server:
a stand-in for LitServe's queue and response buffer behind the real `Server.submit`
(test_litserve_contract.py checks that stand-in against LitServe). The HTTP tests cover it end
to end; these pin what it hands to the workers, what it answers, and when it leaves a request to
the FastAPI route."""

from __future__ import annotations

import asyncio
import functools
import json
import pickle
from types import SimpleNamespace

from fastapi import HTTPException
from litserve.utils import LitAPIStatus

from service.batching.fast_path import FastPath, error_reply
from service.batching.litserve_internals import Server
from service.batching.watchdog import WORKER_LOST
from service.schemas import ModelRef, SentimentRequest, SentimentResponse, SentimentResult, TranslateRequest

RESULT = SentimentResponse(
    model=ModelRef(name="m", version="1"),
    results=[SentimentResult(label="positive", score=0.9, probabilities={"negative": 0.1, "positive": 0.9})],
)


class _Worker:
    """Stands for the request queue and the inference worker behind it: answers what is put."""

    def __init__(self, server, answer):
        self.server, self.answer, self.got = server, answer, []

    def put(self, item):
        self.got.append(item)
        _, uid, _, _ = item
        loop = asyncio.get_running_loop()

        def reply():
            entry = self.server.response_buffer[uid]
            entry.response = self.answer
            entry.event.set()

        loop.call_soon(reply)


def _fast(answer):
    server = SimpleNamespace(response_buffer={}, app=SimpleNamespace(response_queue_id=0))
    worker = _Worker(server, answer)
    server._get_request_queue = lambda path: worker
    for name in ("submit", "enqueue", "forget"):
        setattr(server, name, functools.partial(getattr(Server, name), server))
    server.is_error = Server.is_error
    return FastPath(server, {"sentiment": SentimentRequest, "translate": TranslateRequest}, 30.0), server, worker


def test_a_valid_body_goes_to_the_queue_validated_and_comes_back_as_json():
    fast, server, worker = _fast((RESULT, LitAPIStatus.OK))
    status, body, headers = asyncio.run(fast("sentiment", b'{"texts": ["good film"]}'))
    assert status == 200 and headers == {}
    assert json.loads(body) == RESULT.model_dump()
    [(queue_id, _uid, submitted, request)] = worker.got
    assert queue_id == 0 and isinstance(submitted, float)
    assert isinstance(request, SentimentRequest) and request.texts == ["good film"]
    assert server.response_buffer == {}  # nothing left behind
    # ids are unique per process
    asyncio.run(fast("sentiment", b'{"texts": ["again"]}'))
    assert worker.got[0][1] != worker.got[1][1]


def test_the_answer_leaves_out_fields_that_are_none():
    from service.schemas import TranslateResponse, TranslateResult

    answer = TranslateResponse(
        model=ModelRef(name="m", version="1"), results=[TranslateResult(translation="Hallo", score=-1.0)]
    )
    fast, _, _ = _fast((answer, LitAPIStatus.OK))
    _, body, _ = asyncio.run(fast("translate", b'{"texts": ["hello"], "target_lang": "de"}'))
    assert json.loads(body) == {
        "model": {"name": "m", "version": "1"},
        "results": [{"translation": "Hallo", "score": -1.0}],
    }


def test_bodies_that_do_not_validate_are_left_to_the_fastapi_route():
    fast, server, worker = _fast((RESULT, LitAPIStatus.OK))
    for endpoint, body in [
        ("sentiment", b"{not json"),
        ("sentiment", b'{"texts": []}'),
        ("sentiment", b'{"texts": ["x"], "extra": 1}'),
        ("sentiment", b"[1, 2]"),
        ("translate", b'{"texts": ["x"], "target_lang": "de", "beam_size": 99}'),
        ("nope", b'{"texts": ["x"]}'),
    ]:
        assert asyncio.run(fast(endpoint, body)) is None, body
    assert worker.got == [] and server.response_buffer == {}


def test_worker_errors_keep_their_status_detail_and_headers():
    cases = [
        (
            pickle.dumps(HTTPException(422, "unsupported language pair en-xx")),
            422,
            "unsupported language pair en-xx",
            {},
        ),
        (HTTPException(503, WORKER_LOST, headers={"Retry-After": "1"}), 503, WORKER_LOST, {"Retry-After": "1"}),
    ]
    for answer, status, detail, headers in cases:
        fast, _, _ = _fast((answer, LitAPIStatus.ERROR))
        got = asyncio.run(fast("sentiment", b'{"texts": ["x"]}'))
        assert got == (status, json.dumps({"detail": detail}).encode(), headers)


def test_a_queue_timeout_says_the_server_is_overloaded_and_anything_else_is_a_500():
    status, body, _ = error_reply(HTTPException(504, "Request timed out"), 30.0)
    assert status == 504 and "the server is overloaded: retry later" in json.loads(body)["detail"]
    status, body, _ = error_reply(RuntimeError("boom"), 30.0)
    assert status == 500 and "boom" not in body.decode()  # the log has it, the client does not
