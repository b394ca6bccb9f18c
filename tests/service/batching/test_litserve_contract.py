"""The contract with LitServe's private code (service.batching.litserve_internals): LitServe's own
request path runs next to ours on the same request, and what each queues, sends back and reads
has the same shape. A LitServe release that changes any of it fails here, in `make test`, not in
production. The pinned version is the installed one."""

from __future__ import annotations

import asyncio
import inspect
import queue
import re
import threading
import time
from importlib.metadata import version
from pathlib import Path

import litserve as ls
import litserve.server as ls_server
import pytest
import tomllib
from fastapi import HTTPException
from litserve.callbacks.base import CallbackRunner
from litserve.loops import BatchedLoop
from litserve.loops.base import _SENTINEL_VALUE, _StopLoopError
from litserve.transport.base import MessageTransport
from litserve.utils import ResponseBufferItem
from starlette.middleware.gzip import GZipMiddleware

from service.batching import litserve_internals as internals
from service.batching.fast_path import error_reply
from service.batching.loop import DynamicBatchLoop
from service.batching.queue import PipeQueue
from service.batching.transport import PipeTransport
from service.schemas import SentimentRequest

ROOT = Path(__file__).resolve().parents[3]
PATH = "/v1/sentiment"


class EchoAPI(ls.LitAPI):
    """Answers each request with its texts, upper-cased; "fail" raises an HTTPException."""

    def setup(self, device):
        pass

    def decode_request(self, request: SentimentRequest) -> SentimentRequest:
        return request

    def batch(self, inputs):
        return inputs

    def predict(self, x):
        if any(t == "fail" for r in x for t in r.texts):
            raise HTTPException(422, "cannot do that")
        return [[t.upper() for t in r.texts] for r in x]

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return {"texts": output}


def _api() -> EchoAPI:
    api = EchoAPI(max_batch_size=4, batch_timeout=0.0, api_path=PATH)
    api.request_timeout = 30
    return api


def _stock_server() -> ls.LitServer:
    server = ls.LitServer(_api(), accelerator="cpu", timeout=30)
    server.litapi_request_queues[PATH] = queue.Queue()
    server.app.response_queue_id = 0
    return server


def _our_server() -> internals.Server:
    server = internals.Server(_api(), accelerator="cpu", timeout=30)
    server.litapi_request_queues[PATH] = queue.Queue()
    server.app.response_queue_id = 0
    return server


class Worker:
    """A worker's batched loop (LitServe's run_batched_loop) over a queue, in a thread."""

    def __init__(self, loop, items: list, transport):
        self.queue: queue.Queue = queue.Queue()
        for item in items:
            self.queue.put(item)
        self.thread = threading.Thread(
            target=loop.run_batched_loop, args=(_api(), self.queue, transport, CallbackRunner()), daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        """Send the shutdown sentinel; the loop must return (LitServe's polls, so never leave it running)."""
        self.queue.put(_SENTINEL_VALUE)
        self.thread.join(10)
        assert not self.thread.is_alive(), "the loop did not stop at the sentinel"


async def _pump(server, transport) -> asyncio.Task:
    """LitServe's own response reader, filling server.response_buffer from the transport."""
    return asyncio.create_task(
        ls_server.response_queue_to_buffer(transport, server.response_buffer, 0, server.litapi_connector)
    )


def test_the_pinned_litserve_is_the_installed_one():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [d for d in deps if re.match(r"litserve\b", d)]
    assert re.fullmatch(r"litserve==[\w.]+", pin), f"litserve must be pinned exactly, not {pin!r}"
    assert pin.split("==")[1] == version("litserve")


def test_the_fast_path_queues_what_litserves_handler_queues_and_reads_back_the_same():
    async def go():
        request = SentimentRequest(texts=["good film"])
        stock, ours = _stock_server(), _our_server()

        # LitServe's handler, as its FastAPI route runs it: queue, wait, read the buffer.
        handler = ls_server.RegularRequestHandler(stock.litapi_connector.lit_apis[0], stock)
        stock_answer = asyncio.create_task(handler.handle_request(request, SentimentRequest))
        stock_item = await asyncio.to_thread(stock.litapi_request_queues[PATH].get, timeout=5)
        # Ours.
        our_answer = asyncio.create_task(ours.submit(PATH, "uid-1", request))
        our_item = await asyncio.to_thread(ours.litapi_request_queues[PATH].get, timeout=5)

        # Same tuple: (response queue id, uid, monotonic time queued, the request itself).
        assert len(stock_item) == len(our_item) == 4
        assert [type(v) for v in stock_item] == [type(v) for v in our_item] == [int, str, float, SentimentRequest]
        assert stock_item[0] == our_item[0] == 0 and our_item[1] == "uid-1"
        assert stock_item[3] is request and our_item[3] is request
        # Both sit in the same kind of buffer entry, keyed by uid.
        assert isinstance(stock.response_buffer[stock_item[1]], ResponseBufferItem)
        assert isinstance(ours.response_buffer["uid-1"], ResponseBufferItem)
        assert internals.unpack_request(our_item) == tuple(our_item)

        # A worker (LitServe's batched loop, then ours) answers through the pipe transport, and
        # LitServe's own response reader fills each buffer.
        for server, item, loop in ((stock, stock_item, BatchedLoop()), (ours, our_item, DynamicBatchLoop())):
            transport = PipeTransport([PipeQueue()])
            reader = await _pump(server, transport)
            worker = Worker(loop, [item], transport)
            if server is stock:
                assert await asyncio.wait_for(stock_answer, 10) == {"texts": ["GOOD FILM"]}
            else:
                assert await asyncio.wait_for(our_answer, 10) == ({"texts": ["GOOD FILM"]}, False)
            reader.cancel()
            await asyncio.to_thread(worker.stop)
        assert stock.response_buffer == {} and ours.response_buffer == {}

    asyncio.run(go())


def test_a_worker_error_reads_back_as_the_exception_it_raised():
    async def go():
        ours = _our_server()
        transport = PipeTransport([PipeQueue()])
        reader = await _pump(ours, transport)
        answer = asyncio.create_task(ours.submit(PATH, "uid-2", SentimentRequest(texts=["fail"])))
        item = await asyncio.to_thread(ours.litapi_request_queues[PATH].get, timeout=5)
        worker = Worker(BatchedLoop(), [item], transport)
        response, failed = await asyncio.wait_for(answer, 10)
        reader.cancel()
        await asyncio.to_thread(worker.stop)
        assert failed
        assert isinstance(internals.error_from_worker(response), HTTPException)
        status, body, _ = error_reply(response, 30.0)
        assert status == 422 and b"cannot do that" in body

    asyncio.run(go())


def test_fail_waiting_sets_the_entries_litserves_handler_waits_on():
    async def go():
        ours = _our_server()
        answer = asyncio.create_task(ours.submit(PATH, "uid-3", SentimentRequest(texts=["x"])))
        await asyncio.to_thread(ours.litapi_request_queues[PATH].get, timeout=5)
        assert ours.fail_waiting(HTTPException(503, "gone")) == 1
        response, failed = await asyncio.wait_for(answer, 5)
        assert failed and response.status_code == 503

    asyncio.run(go())


@pytest.mark.parametrize("loop", [BatchedLoop(), DynamicBatchLoop()], ids=["litserve", "ours"])
def test_the_shutdown_sentinel_stops_litserves_loop_and_ours(loop):
    # LitServe never sends it itself (it terminates its workers); its loops and ours stop on it alike.
    transport = PipeTransport([PipeQueue()])
    Worker(loop, [(0, "uid-4", time.monotonic(), SentimentRequest(texts=["x"]))], transport).stop()
    with pytest.raises(_StopLoopError):
        internals.unpack_request(_SENTINEL_VALUE)


def test_our_manager_setup_sets_what_litserves_sets():
    """_init_manager, run on a fresh server each: the same attributes come out."""
    from litserve.transport.factory import TransportConfig

    def attributes_set(server) -> set[str]:
        server.transport_config = TransportConfig(transport_type="mp")
        before = {k: id(v) for k, v in vars(server).items()}
        manager = server._init_manager(1)
        try:
            return {k for k, v in vars(server).items() if before.get(k) != id(v)}
        finally:
            manager.shutdown()

    stock, ours = ls.LitServer(_api(), accelerator="cpu"), internals.Server(_api(), accelerator="cpu")
    assert attributes_set(stock) == attributes_set(ours)
    assert isinstance(ours._transport, PipeTransport) and isinstance(ours.litapi_request_queues[PATH], PipeQueue)


def test_the_hooks_we_override_are_where_we_expect_them():
    run = inspect.getsource(ls.LitServer.run)
    for name in ("_init_manager", "_start_server", "_monitor_workers", "verify_worker_status", "_shutdown_event"):
        assert name in run, f"LitServer.run no longer uses {name}"
    assert "configure_logging(" in run and callable(ls_server.configure_logging)
    assert "_Server(" in inspect.getsource(ls.LitServer._start_server)
    assert list(inspect.signature(ls_server._Server.run).parameters) == ["self", "worker_id", "sockets"]
    assert list(inspect.signature(ls.LitServer._start_server).parameters) == [
        "self",
        "port",
        "num_uvicorn_servers",
        "log_level",
        "sockets",
        "uvicorn_worker_type",
        "kwargs",
    ]
    assert "get_batch_requests(" in inspect.getsource(BatchedLoop.run_batched_loop)
    assert MessageTransport.__abstractmethods__ == {"send", "areceive"}
    assert list(inspect.signature(MessageTransport.close).parameters) == ["self", "kwargs"]
    # LitServe adds GZip for non-streaming APIs; our _register_middleware drops it.
    stock = ls.LitServer(_api(), accelerator="cpu")
    assert any(isinstance(m, tuple) and m[0] is GZipMiddleware for m in stock.middlewares)
    ours = internals.Server(_api(), accelerator="cpu")
    ours._register_middleware()
    assert not any(m.cls is GZipMiddleware for m in ours.app.user_middleware)
    assert stock._monitor_workers is True
