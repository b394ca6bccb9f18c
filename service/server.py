"""Build and run the LitServe server: both LitAPIs, the HTTP gateway, /info, /metrics, error
handlers, the OpenAPI description, graceful shutdown and the inference-worker watchdog.

Import this only through `service.__main__` (or `prepare_process()` first): prometheus_client
must see PROMETHEUS_MULTIPROC_DIR before it is imported.

LitServe is used as it ships, with four changes on the hot path (see `_LitServer`, `_FastPath`):
requests and responses travel over plain multiprocessing pipes instead of a Manager process (each
message used to cost a blocking round trip through that process, on the event loop for requests),
a /v1 body that validates goes from the gateway straight onto LitServe's queue (FastAPI's route
answers the rest, with its documented errors), the /v1 routes carry no dependency (the gateway
does authentication; LitServe's sync no-op dependency cost two thread-pool hops per request), and
there is no GZip middleware (the responses are small JSON).

And for failures and shutdown (tests/test_reliability_faults.py):
- Only the HTTP process holds the listening socket: the main process closes its copy once the
  HTTP process is forked, and the Manager process is started before the socket is bound (forked
  after, it inherited a copy). When the HTTP process stops listening at SIGTERM, new connections
  are refused at once instead of hanging, unanswered, until the last copy is closed.
- The forked HTTP process does not inherit the main process's SIGTERM handler (uvicorn re-raises
  the signal after its graceful shutdown; the inherited handler ran there a second time), and the
  main process waits for its drain a little longer than the drain may last before killing it.
- The HTTP process watches every inference worker (its process sentinel): when one dies, every
  request waiting for an answer gets 503 at once, later /v1 requests get 503, /health says 503,
  and the main process exits with code 3 for the orchestrator to restart it; the same when the
  HTTP process itself dies. Nothing hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import multiprocessing as mp
import multiprocessing.connection
import multiprocessing.queues
import os
import pickle
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

import litserve as ls
import litserve.server as ls_server
import onnxruntime as ort
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from litserve.transport.base import MessageTransport
from litserve.utils import LitAPIStatus, ResponseBufferItem, WorkerSetupStatus
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware

from service import __version__, logs
from service import metrics as M
from service.apis import SentimentAPI, TranslateAPI
from service.gateway import WORKER_LOST, Gateway, ServiceState
from service.runtime.artifacts import ArtifactError, find_artifacts, load_metadata
from service.runtime.providers import CPU, ProviderError, create_session, threads_per_session, workers_per_family
from service.schemas import LIMITS, ErrorResponse, SentimentRequest, TranslateRequest
from service.settings import Settings

log = logging.getLogger("service")
EXIT_STARTUP_FAILED, EXIT_WORKER_DIED = 2, 3

_EXAMPLE_422 = {
    "detail": [
        {"loc": ["body", "texts"], "msg": "texts[0] is empty or whitespace only; send some text", "type": "value_error"}
    ]
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "missing or wrong API key (when the server requires one)",
        "example": {"detail": "missing or wrong API key: send it in the X-API-Key header"},
    },
    413: {
        "description": "request body larger than the limit",
        "example": {"detail": "request body is 3000015 bytes; the limit is 2000000"},
    },
    415: {
        "description": "Content-Type is not application/json",
        "example": {"detail": "Content-Type must be application/json (got 'text/plain')"},
    },
    422: {
        "description": "invalid request (malformed JSON, invalid UTF-8, wrong types, empty or oversize input, "
        "unsupported language pair): the message says what to fix",
        "example": _EXAMPLE_422,
    },
    429: {
        "description": "queue full: retry after Retry-After seconds",
        "example": {"detail": "server busy: 512 requests already queued; retry shortly"},
        "headers": {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}},
    },
    503: {
        "description": "an inference worker died (the server answers what it holds with 503 and exits with code 3 "
        "to be restarted), or the server is shutting down and its grace period ended before this "
        "request was answered; retry after Retry-After seconds",
        "example": {"detail": WORKER_LOST},
        "headers": {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}},
    },
    504: {
        "description": "request not answered in time (it waited too long in the queue)",
        "example": {
            "detail": "request waited more than 30 s for a model worker; the server is overloaded: retry later"
        },
    },
}
ROUTES = {
    "/v1/sentiment": (
        "Classify reviews as positive or negative",
        "One result per text, in request order: the label, its probability and both class probabilities. "
        "Requests from different clients are batched together dynamically.",
        {"two reviews": {"value": {"texts": ["A wonderful, moving film.", "Two hours I will never get back."]}}},
    ),
    "/v1/translate": (
        "Translate sentences (beam search)",
        "One result per text, in request order. `n_best` > 1 adds the other hypotheses as `alternatives`; "
        "`return_alignments` adds the attention weights of the chosen hypothesis. Unsupported language "
        "pairs are rejected with 422 listing the supported ones.",
        {
            "English to German": {
                "value": {
                    "texts": ["A man is riding a bicycle down the street."],
                    "source_lang": "en",
                    "target_lang": "de",
                }
            },
            "3-best with alignments": {
                "value": {
                    "texts": ["Two dogs play in the snow."],
                    "target_lang": "de",
                    "beam_size": 5,
                    "n_best": 3,
                    "return_alignments": True,
                }
            },
        },
    ),
}


# ---------------------------------------------------------------------------------------------
# LitServe, with pipes instead of a Manager between the HTTP process and the inference workers


class _Queue(mp.queues.Queue):
    """A pipe-backed multiprocessing queue (spawn context, so spawned workers can open its locks).
    It never holds up process exit: an item still buffered when a process ends is lost anyway."""

    def __init__(self) -> None:
        super().__init__(ctx=mp.get_context("spawn"))

    def _reset(self, after_fork: bool = False) -> None:  # runs on creation, unpickling and fork
        super()._reset(after_fork)
        self._joincancelled = True


def _deliver(inbox: asyncio.Queue, items: list) -> None:
    for item in items:
        inbox.put_nowait(item)


class _PipeTransport(MessageTransport):
    """Responses, inference workers -> HTTP process, one queue per HTTP process. In the HTTP
    process a pump thread moves everything that arrived onto the event loop in one wake-up."""

    def __init__(self, queues: list[_Queue]):
        self._queues = queues
        self._closed = False
        self._inbox: asyncio.Queue | None = None

    def __reduce__(self):
        return (_PipeTransport, (self._queues,))

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
    def _pump(q: _Queue, loop: asyncio.AbstractEventLoop, inbox: asyncio.Queue) -> None:
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


class _FastPath:
    """/v1 requests that validate, straight from the gateway to the inference workers' queue.

    LitServe's FastAPI route parses the body with json.loads, validates the dict, solves the
    route's dependencies, runs its middleware stack and validates the returned model once more
    before serializing it. Here a valid body is validated once, from bytes (pydantic-core), put
    on the same queue with the same message LitServe's handler puts there, awaited the same way
    (LitServe's response reader fills the same buffer) and answered with the model's JSON. A body
    that does not validate goes the FastAPI way, which says what to fix (schemas, errors and
    /docs all stay FastAPI's). Measured on 2 cores, one review per request at concurrency 32: the
    HTTP process's CPU time per request fell from 0.71 to 0.30-0.34 ms."""

    def __init__(self, server: ls.LitServer, models: dict[str, type], request_timeout: float):
        self.server, self.models, self.request_timeout = server, models, request_timeout
        self._ids = itertools.count()
        self._prefix = ""

    def _uid(self) -> str:
        # Unique per HTTP process; uuid4 costs a getrandom system call per request. The prefix is
        # made on first use, in the HTTP process: this object is built before it is forked.
        if not self._prefix:
            self._prefix = f"{os.getpid():x}-{time.monotonic_ns():x}-"
        return f"{self._prefix}{next(self._ids):x}"

    async def __call__(self, endpoint: str, body: bytes) -> tuple[int, bytes, dict[str, str]] | None:
        """(status, JSON body, headers), or None when the FastAPI route must answer."""
        model = self.models.get(endpoint)
        if model is None:
            return None
        try:
            request = model.model_validate_json(body)
        except Exception:  # pydantic ValidationError, or anything else: FastAPI says what is wrong
            return None
        server = self.server
        uid = self._uid()
        item = ResponseBufferItem(asyncio.Event())
        server.response_buffer[uid] = item
        try:
            server._get_request_queue(f"/v1/{endpoint}").put(
                (server.app.response_queue_id, uid, time.monotonic(), request)
            )
            await item.event.wait()
        finally:
            server.response_buffer.pop(uid, None)
        response, status = item.response
        if status == LitAPIStatus.ERROR:
            return _error_reply(response, self.request_timeout)
        return 200, response.model_dump_json(exclude_none=True).encode(), {}


def _error_reply(response: Any, request_timeout: float) -> tuple[int, bytes, dict[str, str]]:
    """A worker's error answer (LitServe's conventions: an HTTPException, maybe pickled) as JSON."""
    if isinstance(response, bytes):
        with contextlib.suppress(Exception):
            response = pickle.loads(response)
    if isinstance(response, HTTPException):
        status, detail, headers = response.status_code, response.detail, dict(response.headers or {})
        if status == 504:
            detail = _timeout_detail(request_timeout)
        return status, json.dumps({"detail": detail}).encode(), headers
    log.error(f"inference worker answered with an error: {response!r}", extra={"event": "worker_error"})
    return 500, json.dumps({"detail": "internal error; the request id is in the X-Request-ID header"}).encode(), {}


def _timeout_detail(request_timeout: float) -> str:
    """LitServe's 504 (a request waited in the queue past its timeout), saying what to do."""
    return f"request waited more than {request_timeout:g} s for a model worker; the server is overloaded: retry later"


async def _no_auth() -> None:
    """The gateway authenticates /v1/*; /health must stay open for orchestrators."""


class _HTTPServer(ls_server._Server):
    """LitServe's uvicorn server, run in the forked HTTP process."""

    def run(self, worker_id: int, sockets=None) -> None:
        # Forked from the main process, this process has its SIGTERM handler, which must not run
        # here: uvicorn installs its own while serving and re-raises the signal after its graceful
        # shutdown, which (with the default action) then ends this process.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        super().run(worker_id, sockets)


class _LitServer(ls.LitServer):
    state: ServiceState  # shared by the gateway, /health and the worker watch, in the HTTP process
    manager: Any = None  # started by start_manager()
    http_processes: list = []  # noqa: RUF012 (the forked HTTP processes, once started)
    join_slack = 5.0  # seconds the main process waits for the HTTP process beyond its graceful timeout

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

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        async with super().lifespan(app):
            loop = asyncio.get_running_loop()
            watched = []
            for proc in getattr(self, "inference_workers", None) or []:
                # The sentinel is a pipe that reads as closed when the worker has exited; this
                # process inherited it when it was forked.
                loop.add_reader(proc.sentinel, self._worker_lost, loop, proc.sentinel, proc.pid)
                watched.append(proc.sentinel)
            try:
                yield
            finally:
                for fd in watched:
                    loop.remove_reader(fd)

    def _worker_lost(self, loop: asyncio.AbstractEventLoop, fd: int, pid: int) -> None:
        """In the HTTP process, on the event loop: an inference worker has exited. Its requests
        will never be answered (and the pipes it shared may be left half-written): answer every
        waiting request with 503 now, refuse new ones (gateway) and fail /health. The main
        process sees the same death and shuts the server down with exit code 3."""
        loop.remove_reader(fd)
        if self.state.failure is None:
            self.state.failure = f"inference worker {pid} exited"
        waiting = [item for item in self.response_buffer.values() if not item.event.is_set()]
        log.error(
            f"inference worker {pid} exited; answering {len(waiting)} waiting request(s) with 503",
            extra={"event": "worker_lost"},
        )
        for item in waiting:
            item.response = (HTTPException(503, WORKER_LOST, headers={"Retry-After": "1"}), LitAPIStatus.ERROR)
            item.event.set()

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
            self.litapi_request_queues[lit_api.api_path] = _Queue()
        if self._logger_connector._loggers:
            self.logger_queue = manager.Queue()
        self._logger_connector.run(self)
        self._transport = _PipeTransport([_Queue() for _ in range(num_api_servers)])
        return manager

    def verify_worker_status(self) -> None:
        """Wait for a first ready worker; fail (instead of waiting forever) when one fails its setup
        or dies before reporting, e.g. killed or crashed while loading."""
        while not any(v == WorkerSetupStatus.READY for v in self.workers_setup_status.values()):
            if any(v == WorkerSetupStatus.ERROR for v in self.workers_setup_status.values()):
                raise RuntimeError("an inference worker failed to set up its models (see the error above)")
            dead = [p for p in self.inference_workers if not p.is_alive()]
            if dead:
                raise RuntimeError(f"an inference worker exited during start-up (exit code {dead[0].exitcode})")
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------


def discover(settings: Settings) -> tuple[bool, list[str]]:
    """Which model families are present (verifying every artifact's hashes up front)."""
    arts = find_artifacts(settings.models_dir)
    has_sentiment = "sentiment" in arts
    pairs = []
    for name, folder in arts.items():
        meta = load_metadata(folder)  # raises ArtifactError naming the bad file
        if name.startswith("translate-"):
            pairs.append(f"{meta['config']['src_lang']}-{meta['config']['tgt_lang']}")
    if not has_sentiment and not pairs:
        raise ArtifactError(f"no model artifacts under {settings.models_dir} (expected sentiment/ or translate-xx-yy/)")
    return has_sentiment, sorted(pairs)


def check_device(settings: Settings) -> str:
    """Fail at start-up, with a clear message, when --device cuda cannot work; report the provider."""
    if settings.device == "cpu":
        return CPU
    arts = find_artifacts(settings.models_dir)
    if not arts:
        return CPU  # build() says what is missing
    probe = arts.get("sentiment")
    path = probe / "model.onnx" if probe else next(iter(arts.values())) / "encoder.onnx"
    _, provider = create_session(path, settings.device, 1)
    return provider


def _error_responses() -> dict[int | str, dict[str, Any]]:
    return {
        code: {
            "model": ErrorResponse,
            "description": r["description"],
            "content": {"application/json": {"example": r["example"]}},
            **({"headers": r["headers"]} if "headers" in r else {}),
        }
        for code, r in ERROR_RESPONSES.items()
    }


def _health(endpoint, state: ServiceState):
    """LitServe's /health, answering text/plain (as documented; LitServe sends no Content-Type),
    and 503 once an inference worker has died."""

    async def health(request: Request) -> PlainTextResponse:
        if state.failure is not None:
            return PlainTextResponse(f"not ready: {state.failure}", status_code=503)
        r = await endpoint(request)
        return PlainTextResponse(r.body, status_code=r.status_code)

    return health


def _describe_routes(app, state: ServiceState) -> None:
    """Re-create LitServe's routes with their documentation: summaries, request examples, every
    error response with its schema and an example. The /v1 routes lose LitServe's no-op auth
    dependency (the gateway authenticates)."""
    routes = app.router.routes
    for i, route in enumerate(routes):
        if not isinstance(route, APIRoute):
            continue
        if route.path in ROUTES:
            summary, description, examples = ROUTES[route.path]
            routes[i] = APIRoute(
                route.path,
                route.endpoint,
                methods=["POST"],
                response_model=route.response_model,
                response_model_exclude_none=True,
                summary=summary,
                description=description,
                tags=["inference"],
                operation_id=route.path.rsplit("/", 1)[-1],
                responses=_error_responses(),
                openapi_extra={"requestBody": {"content": {"application/json": {"examples": examples}}}},
            )
        elif route.path == "/health":
            routes[i] = APIRoute(
                route.path,
                _health(route.endpoint, state),
                methods=["GET"],
                dependencies=route.dependencies,
                response_class=PlainTextResponse,
                tags=["operations"],
                summary="Ready: 200 once every model is loaded, verified and warmed up",
                responses={
                    200: {"description": "ready", "content": {"text/plain": {"example": "ok"}}},
                    503: {
                        "description": "still starting, or an inference worker died",
                        "content": {"text/plain": {"example": "not ready"}},
                    },
                },
            )
        elif route.path in ("/", "/litserve/info"):
            route.include_in_schema = False


def build(settings: Settings, state_dir: Path, provider: str = CPU) -> ls.LitServer:
    """The server, for `provider`: the one check_device found (it decides the automatic worker count)."""
    has_sentiment, pairs = discover(settings)
    LIMITS.max_texts, LIMITS.max_text_chars = settings.max_texts, settings.max_text_chars
    LIMITS.max_translate_chars, LIMITS.pairs = settings.max_translate_chars, pairs
    # auto: one single-threaded worker per core on CPU (providers.workers_per_family has the
    # measurements), one on CUDA; explicit threads / workers win. Each family's workers get all the
    # cores: the two families seldom saturate together.
    workers = workers_per_family(settings.workers, provider)
    threads = settings.threads or threads_per_session(workers)
    kw = {
        "models_dir": settings.models_dir,
        "device": settings.device,
        "threads": threads,
        "workers": workers,
        "state_dir": state_dir,
        "max_batch_size": settings.max_batch_size,
        "batch_timeout": settings.batch_timeout,
        "token_budget": settings.token_budget,
        "precision": settings.precision,
        "spin": settings.spin == "on",
        "log_level": settings.log_level,
    }
    apis: list[ls.LitAPI] = []
    if has_sentiment:
        apis.append(SentimentAPI(**kw))
    if pairs:
        apis.append(TranslateAPI(**kw))
    server = _LitServer(
        apis,
        accelerator="cpu",
        workers_per_device=workers,
        timeout=settings.request_timeout,
        info_path="/litserve/info",
        track_requests=False,
    )
    app = server.app
    app.title, app.version = "rnn-serve", __version__
    app.description = (
        "Sentiment (BiLSTM, IMDB) and translation (attention seq2seq, Multi30k) over ONNX Runtime. "
        'Errors are JSON `{"detail": ...}` saying what to fix; every response carries an '
        "`X-Request-ID` (the client's, when it sent one)."
    )
    server.state = state = ServiceState()
    _describe_routes(app, state)
    info_state = {
        "settings": settings,
        "state_dir": state_dir,
        "started": time.time(),
        "pairs": pairs,
        "threads": threads,
        "workers": workers,
    }

    @app.get(
        "/info",
        tags=["operations"],
        summary="Models, versions, metrics, execution provider, batching",
        description="The models the inference workers loaded (name, version, metrics from their metadata, the ONNX "
        "Runtime execution provider actually in use), the translation pairs, batching and limits.",
    )
    async def info() -> JSONResponse:
        return JSONResponse(_info(info_state))

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus exposition",
        response_class=PlainTextResponse,
        description="Every process's metrics (HTTP process and inference workers), in the Prometheus text format.",
    )
    async def metrics() -> Response:
        return Response(M.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back (it may be megabytes, or private); say where and what, for the
        # first few errors only (64 texts of the wrong type would otherwise make 64 entries).
        errors = exc.errors()
        detail = [_explain(e) for e in errors[:MAX_ERRORS]]
        if len(errors) > MAX_ERRORS:
            detail.append(
                {
                    "loc": ["body"],
                    "msg": f"and {len(errors) - MAX_ERRORS} more errors like these",
                    "type": "more_errors",
                }
            )
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail, status = exc.detail, exc.status_code
        if status == 504:  # LitServe: the request waited in the queue past the timeout
            detail = _timeout_detail(settings.request_timeout)
        elif status == 400 and request.url.path.startswith("/v1/"):
            # FastAPI's answer when json.loads fails with something other than a syntax error:
            # nesting deeper than the parser's recursion limit, an integer of more than 4300
            # digits. Malformed JSON is a 422 like any other (as documented), saying what is wrong.
            cause = exc.__cause__
            why = (
                "nested too deeply"
                if isinstance(cause, RecursionError)
                else "a number has too many digits"
                if isinstance(cause, ValueError) and "digits" in str(cause)
                else "it cannot be parsed"
            )
            return JSONResponse(
                {
                    "detail": [
                        {
                            "loc": ["body"],
                            "type": "json_invalid",
                            "msg": f"request body is not valid JSON ({why}); send a JSON object such as "
                            f"{_EXAMPLE_BODY}",
                        }
                    ]
                },
                status_code=422,
            )
        return JSONResponse({"detail": detail}, status_code=status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse({"detail": "internal error; the request id is in the X-Request-ID header"}, status_code=500)

    fast = _FastPath(server, {"sentiment": SentimentRequest, "translate": TranslateRequest}, settings.request_timeout)
    app.add_middleware(Gateway, settings=settings, state=state, fast=fast)
    return server


_EXAMPLE_BODY = '{"texts": ["..."]}'
MAX_ERRORS = 10  # validation errors listed in one 422


def _explain(e: dict[str, Any]) -> dict[str, Any]:
    """One pydantic/FastAPI validation error as {loc, msg, type}, the message saying what to fix."""
    loc, kind, msg = list(e.get("loc", ())), e.get("type", ""), str(e.get("msg", ""))
    if kind == "json_invalid":
        pos = f" at character {loc[1]}" if len(loc) > 1 else ""
        reason = (e.get("ctx") or {}).get("error", "invalid JSON")
        msg = f"request body is not valid JSON ({reason}{pos}); send a JSON object such as {_EXAMPLE_BODY}"
        loc = ["body"]
    elif kind == "missing" and loc == ["body"]:
        msg = f"request body is empty; send a JSON object such as {_EXAMPLE_BODY}"
    elif kind == "model_attributes_type" and loc == ["body"]:
        msg = f"request body must be a JSON object such as {_EXAMPLE_BODY}"
    elif kind == "missing":
        msg = f"field {'.'.join(map(str, loc[1:]))} is required"
    elif kind == "extra_forbidden":
        msg = f"unknown field {'.'.join(map(str, loc[1:]))}; remove it (see /docs for the request schema)"
    else:
        msg = msg.removeprefix("Value error, ")
    return {"loc": loc, "msg": msg, "type": kind}


def _info(st: dict[str, Any]) -> dict[str, Any]:
    s: Settings = st["settings"]
    models: dict[str, dict[str, Any]] = {}
    for f in sorted(Path(st["state_dir"]).glob("*.json")):
        try:
            w = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for m in w["models"]:
            e = models.setdefault(m["name"], {**m, "providers": set(), "workers": 0})
            e["providers"].add(m["provider"])
            e["workers"] += 1
    for e in models.values():
        e["providers"] = sorted(e.pop("providers"))
        e.pop("provider", None)
    return {
        "service": {
            "name": "rnn-serve",
            "version": __version__,
            "uptime_seconds": round(time.time() - st["started"], 1),
        },
        "models": list(models.values()),
        "translation_pairs": st["pairs"],
        "runtime": {
            "onnxruntime": ort.__version__,
            "device_requested": s.device,
            "available_providers": ort.get_available_providers(),
            "threads_per_session": st["threads"],
            "spin_wait": s.spin == "on",
            "workers_per_family": st["workers"],
        },
        "batching": {
            "max_batch_size": s.max_batch_size,
            "batch_timeout_s": s.batch_timeout,
            "enabled": s.max_batch_size > 1,
            "sentiment_token_budget": s.token_budget,
        },
        "limits": {
            "max_texts": s.max_texts,
            "max_text_chars": s.max_text_chars,
            "max_translate_chars": s.max_translate_chars,
            "max_payload_bytes": s.max_payload_bytes,
            "max_queue": s.max_queue,
            "request_timeout_s": s.request_timeout,
        },
        "auth": {"api_key_required": s.api_key is not None},
    }


def _setup_failures(state_dir: Path) -> str:
    """Why inference workers failed their setup, as they reported it (naming the file)."""
    return "; ".join(f.read_text(errors="replace") for f in sorted(Path(state_dir).glob("failed-*.txt")))


class _ExitCode:
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


def _watch_workers(server: _LitServer, exit_code: _ExitCode, state_dir: Path) -> None:
    """If an inference worker dies, exit non-zero (the orchestrator restarts us) rather than
    report healthy while its requests hang. LitServe's own monitor cannot answer requests held by
    forked HTTP processes, so it is replaced by this one. A worker that failed its setup after
    the HTTP server started (another family was ready first) is a start-up failure (exit 2).
    The HTTP process dying (killed, out of memory) is the same: nothing would serve any more."""
    try:
        while not getattr(server, "inference_workers", None):
            time.sleep(0.2)
        while not server._shutdown_event.is_set():
            procs = [*server.inference_workers, *server.http_processes]
            mp.connection.wait([p.sentinel for p in procs], timeout=0.5)  # wakes when one exits
            if server._shutdown_event.is_set():  # stopping: processes exit on purpose
                return
            lost_http = [p for p in server.http_processes if not p.is_alive()]
            if lost_http and exit_code.claim(EXIT_WORKER_DIED):
                log.error(
                    "HTTP process died; shutting down to be restarted",
                    extra={"event": "worker_died", "status": lost_http[0].exitcode},
                )
                server._shutdown_event.set()
                return
            dead = [p for p in server.inference_workers if not p.is_alive()]
            if dead:
                setup_failed = any(v == WorkerSetupStatus.ERROR for v in server.workers_setup_status.values())
                if not exit_code.claim(EXIT_STARTUP_FAILED if setup_failed else EXIT_WORKER_DIED):
                    return  # a failed start, already reported
                log.error(
                    f"start-up failed: {_setup_failures(state_dir) or 'an inference worker failed its setup'}"
                    if setup_failed
                    else "inference worker died; shutting down to be restarted",
                    extra={"event": "startup_failed" if setup_failed else "worker_died", "status": dead[0].exitcode},
                )
                # The HTTP process has answered what it held (503); do not wait long for it.
                server.uvicorn_graceful_timeout = 3
                server._shutdown_event.set()
                return
    except (OSError, EOFError):  # the manager went away: the server is shutting down anyway
        return


def _stop_workers(server: ls.LitServer) -> None:
    """Terminate inference workers left running after a failed start (they would block exit)."""
    for p in getattr(server, "inference_workers", None) or []:
        if p.is_alive():
            p.terminate()
    for p in getattr(server, "inference_workers", None) or []:
        p.join(5)
        if p.is_alive():
            p.kill()


def run(settings: Settings, state_dir: Path) -> int:
    logs.configure(settings.log_level)
    ls_server.configure_logging = logs.configure  # LitServe reconfigures logging in run(); keep JSON lines
    ls_server._Server = _HTTPServer  # the HTTP process's uvicorn server (signal handling)
    try:
        provider = check_device(settings)
        server = build(settings, state_dir, provider)
    except (ArtifactError, ProviderError) as e:
        log.error(str(e), extra={"event": "startup_failed"})
        return EXIT_STARTUP_FAILED
    log.info(
        f"serving on {settings.host}:{settings.port} with {provider} (device={settings.device})",
        extra={"event": "starting"},
    )
    server.uvicorn_graceful_timeout = settings.shutdown_grace
    server._monitor_workers = False
    exit_code = _ExitCode()

    def on_term(signum, frame) -> None:
        log.info("SIGTERM: finishing accepted requests, then exiting", extra={"event": "shutdown"})
        if server._shutdown_event is not None:
            # Not from this thread: the main thread is inside a call to the same Manager-held event
            # (LitServe waits on it), and a second call on that connection from a signal handler
            # deadlocks. Another thread has its own connection.
            threading.Thread(target=server._shutdown_event.set, daemon=True, name="sigterm").start()

    server.start_manager()  # before the handler: the forked Manager must not run it
    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(
        target=_watch_workers, args=(server, exit_code, state_dir), daemon=True, name="worker-watchdog"
    ).start()
    try:
        server.run(
            host=settings.host,
            port=settings.port,
            num_api_servers=1,
            generate_client_file=False,
            log_level=settings.log_level,
            access_log=False,
            log_config=None,
        )
    except RuntimeError as e:  # a worker failed in setup(): artifact, golden check or provider
        if exit_code.claim(EXIT_STARTUP_FAILED):  # else the watchdog saw the worker exit and said why
            log.error(f"start-up failed: {_setup_failures(state_dir) or e}", extra={"event": "startup_failed"})
        _stop_workers(server)
        return EXIT_STARTUP_FAILED
    return exit_code.value or 0
