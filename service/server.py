"""Build and run the LitServe server: both LitAPIs, the HTTP gateway, /info, /metrics, error
handlers, the OpenAPI description, graceful shutdown and the inference-worker watchdog.

Import this only through `service.__main__` (or `prepare_process()` first): prometheus_client
must see PROMETHEUS_MULTIPROC_DIR before it is imported.

LitServe is used as it ships, with three changes on the hot path (see `_LitServer`): requests and
responses travel over plain multiprocessing pipes instead of a Manager process (each message
used to cost a blocking round trip through that process, on the event loop for requests), the
/v1 routes carry no dependency (the gateway does authentication; LitServe's sync no-op
dependency cost two thread-pool hops per request), and there is no GZip middleware (the
responses are small JSON).
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing as mp
import multiprocessing.queues
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Any

import litserve as ls
import litserve.server as ls_server
import onnxruntime as ort
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from litserve.transport.base import MessageTransport
from litserve.utils import WorkerSetupStatus
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware

from service import __version__, logs
from service import metrics as M
from service.apis import SentimentAPI, TranslateAPI
from service.artifacts import ArtifactError, find_artifacts, load_metadata
from service.gateway import Gateway
from service.providers import ProviderError, create_session, threads_per_session
from service.schemas import LIMITS, ErrorResponse
from service.settings import Settings

log = logging.getLogger("service")
EXIT_STARTUP_FAILED, EXIT_WORKER_DIED = 2, 3

_EXAMPLE_422 = {"detail": [{"loc": ["body", "texts"], "msg": "texts[0] is empty or whitespace only; send some text",
                            "type": "value_error"}]}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing or wrong API key (when the server requires one)",
          "example": {"detail": "missing or wrong API key: send it in the X-API-Key header"}},
    413: {"description": "request body larger than the limit",
          "example": {"detail": "request body is 3000015 bytes; the limit is 2000000"}},
    415: {"description": "Content-Type is not application/json",
          "example": {"detail": "Content-Type must be application/json (got 'text/plain')"}},
    422: {"description": "invalid request (malformed JSON, invalid UTF-8, wrong types, empty or oversize input, "
                         "unsupported language pair): the message says what to fix", "example": _EXAMPLE_422},
    429: {"description": "queue full: retry after Retry-After seconds",
          "example": {"detail": "server busy: 512 requests already queued; retry shortly"},
          "headers": {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}},
    504: {"description": "request not answered in time (it waited too long in the queue)",
          "example": {"detail": "request waited more than 30 s for a model worker; the server is overloaded: retry later"}},
}
ROUTES = {
    "/v1/sentiment": ("Classify reviews as positive or negative",
                      "One result per text, in request order: the label, its probability and both class probabilities. "
                      "Requests from different clients are batched together dynamically.",
                      {"two reviews": {"value": {"texts": ["A wonderful, moving film.", "Two hours I will never get back."]}}}),
    "/v1/translate": ("Translate sentences (beam search)",
                      "One result per text, in request order. `n_best` > 1 adds the other hypotheses as `alternatives`; "
                      "`return_alignments` adds the attention weights of the chosen hypothesis. Unsupported language "
                      "pairs are rejected with 422 listing the supported ones.",
                      {"English to German": {"value": {"texts": ["A man is riding a bicycle down the street."],
                                                       "source_lang": "en", "target_lang": "de"}},
                       "3-best with alignments": {"value": {"texts": ["Two dogs play in the snow."], "target_lang": "de",
                                                            "beam_size": 5, "n_best": 3, "return_alignments": True}}}),
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
            threading.Thread(target=self._pump, args=(self._queues[consumer_id], asyncio.get_running_loop(), self._inbox),
                             daemon=True, name="response-pump").start()
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


async def _no_auth() -> None:
    """The gateway authenticates /v1/*; /health must stay open for orchestrators."""


class _LitServer(ls.LitServer):
    def setup_auth(self, lit_api: ls.LitAPI | None = None):
        return _no_auth

    def _register_middleware(self) -> None:
        self.middlewares = [m for m in self.middlewares if not (isinstance(m, tuple) and m[0] is GZipMiddleware)]
        super()._register_middleware()

    def _init_manager(self, num_api_servers: int):
        manager = super()._init_manager(num_api_servers)  # keeps its dict (worker status) and shutdown event
        for path in self.litapi_request_queues:
            self.litapi_request_queues[path] = _Queue()
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
        return "CPUExecutionProvider"
    arts = find_artifacts(settings.models_dir)
    probe = arts.get("sentiment")
    path = probe / "model.onnx" if probe else next(iter(arts.values())) / "encoder.onnx"
    _, provider = create_session(path, settings.device, 1)
    return provider


def _error_responses() -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse, "description": r["description"],
                   "content": {"application/json": {"example": r["example"]}},
                   **({"headers": r["headers"]} if "headers" in r else {})}
            for code, r in ERROR_RESPONSES.items()}


def _describe_routes(app) -> None:
    """Re-create LitServe's routes with their documentation: summaries, request examples, every
    error response with its schema and an example. The /v1 routes lose LitServe's no-op auth
    dependency (the gateway authenticates)."""
    routes = app.router.routes
    for i, route in enumerate(routes):
        if not isinstance(route, APIRoute):
            continue
        if route.path in ROUTES:
            summary, description, examples = ROUTES[route.path]
            routes[i] = APIRoute(route.path, route.endpoint, methods=["POST"], response_model=route.response_model,
                                 response_model_exclude_none=True, summary=summary, description=description,
                                 tags=["inference"], operation_id=route.path.rsplit("/", 1)[-1], responses=_error_responses(),
                                 openapi_extra={"requestBody": {"content": {"application/json": {"examples": examples}}}})
        elif route.path == "/health":
            routes[i] = APIRoute(route.path, route.endpoint, methods=["GET"], dependencies=route.dependencies,
                                 response_class=PlainTextResponse, tags=["operations"],
                                 summary="Ready: 200 once every model is loaded, verified and warmed up",
                                 responses={200: {"description": "ready", "content": {"text/plain": {"example": "ok"}}},
                                            503: {"description": "still starting (or a worker is not ready)",
                                                  "content": {"text/plain": {"example": "not ready"}}}})
        elif route.path in ("/", "/litserve/info"):
            route.include_in_schema = False


def build(settings: Settings, state_dir: Path) -> ls.LitServer:
    has_sentiment, pairs = discover(settings)
    LIMITS.max_texts, LIMITS.max_text_chars = settings.max_texts, settings.max_text_chars
    LIMITS.max_translate_chars, LIMITS.pairs = settings.max_translate_chars, pairs
    families = int(has_sentiment) + int(bool(pairs))
    threads = settings.threads or threads_per_session(settings.workers * families)
    kw = {"models_dir": settings.models_dir, "device": settings.device, "threads": threads, "workers": settings.workers,
          "state_dir": state_dir, "max_batch_size": settings.max_batch_size, "batch_timeout": settings.batch_timeout,
          "token_budget": settings.token_budget, "log_level": settings.log_level}
    apis: list[ls.LitAPI] = []
    if has_sentiment:
        apis.append(SentimentAPI(**kw))
    if pairs:
        apis.append(TranslateAPI(**kw))
    server = _LitServer(apis, accelerator="cpu", workers_per_device=settings.workers, timeout=settings.request_timeout,
                        info_path="/litserve/info", track_requests=False)
    app = server.app
    app.title, app.version = "rnn-serve", __version__
    app.description = ("Sentiment (BiLSTM, IMDB) and translation (attention seq2seq, Multi30k) over ONNX Runtime. "
                       "Errors are JSON `{\"detail\": ...}` saying what to fix; every response carries an "
                       "`X-Request-ID` (the client's, when it sent one).")
    _describe_routes(app)
    info_state = {"settings": settings, "state_dir": state_dir, "started": time.time(), "pairs": pairs,
                  "threads": threads}

    @app.get("/info", tags=["operations"], summary="Models, versions, metrics, execution provider, batching",
             description="The models the inference workers loaded (name, version, metrics from their metadata, the ONNX "
                         "Runtime execution provider actually in use), the translation pairs, batching and limits.")
    async def info() -> JSONResponse:
        return JSONResponse(_info(info_state))

    @app.get("/metrics", tags=["operations"], summary="Prometheus exposition", response_class=PlainTextResponse,
             description="Every process's metrics (HTTP process and inference workers), in the Prometheus text format.")
    async def metrics() -> Response:
        return Response(M.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back (it may be megabytes, or private); say where and what.
        return JSONResponse({"detail": [_explain(e) for e in exc.errors()]}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 504:  # LitServe: the request waited in the queue past the timeout
            detail = (f"request waited more than {settings.request_timeout:g} s for a model worker; "
                      "the server is overloaded: retry later")
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse({"detail": "internal error; the request id is in the X-Request-ID header"}, status_code=500)

    app.add_middleware(Gateway, settings=settings)
    return server


_EXAMPLE_BODY = '{"texts": ["..."]}'


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
        "service": {"name": "rnn-serve", "version": __version__, "uptime_seconds": round(time.time() - st["started"], 1)},
        "models": list(models.values()),
        "translation_pairs": st["pairs"],
        "runtime": {"onnxruntime": ort.__version__, "device_requested": s.device,
                    "available_providers": ort.get_available_providers(), "threads_per_session": st["threads"],
                    "workers_per_family": s.workers},
        "batching": {"max_batch_size": s.max_batch_size, "batch_timeout_s": s.batch_timeout,
                     "enabled": s.max_batch_size > 1, "sentiment_token_budget": s.token_budget},
        "limits": {"max_texts": s.max_texts, "max_text_chars": s.max_text_chars,
                   "max_translate_chars": s.max_translate_chars, "max_payload_bytes": s.max_payload_bytes,
                   "max_queue": s.max_queue, "request_timeout_s": s.request_timeout},
        "auth": {"api_key_required": s.api_key is not None},
    }


def _watch_workers(server: ls.LitServer, exit_code: list[int]) -> None:
    """If an inference worker dies, exit non-zero (the orchestrator restarts us) rather than
    report healthy while its requests hang. LitServe's own monitor cannot answer requests held by
    forked HTTP processes, so it is replaced by this one. A worker that failed its setup after
    the HTTP server started (another family was ready first) is a start-up failure (exit 2)."""
    try:
        while not getattr(server, "inference_workers", None):
            time.sleep(0.2)
        while not server._shutdown_event.is_set():
            dead = [p for p in server.inference_workers if not p.is_alive()]
            if dead:
                setup_failed = any(v == WorkerSetupStatus.ERROR for v in server.workers_setup_status.values())
                log.error("an inference worker failed its setup; shutting down" if setup_failed else
                          "inference worker died; shutting down to be restarted",
                          extra={"event": "startup_failed" if setup_failed else "worker_died", "status": dead[0].exitcode})
                exit_code[0] = EXIT_STARTUP_FAILED if setup_failed else EXIT_WORKER_DIED
                server.uvicorn_graceful_timeout = 2  # its requests will never be answered; do not wait long
                server._shutdown_event.set()
                return
            time.sleep(0.5)
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
    try:
        server = build(settings, state_dir)
        provider = check_device(settings)
    except (ArtifactError, ProviderError) as e:
        log.error(str(e), extra={"event": "startup_failed"})
        return EXIT_STARTUP_FAILED
    log.info(f"serving on {settings.host}:{settings.port} with {provider} (device={settings.device})",
             extra={"event": "starting"})
    server.uvicorn_graceful_timeout = settings.shutdown_grace
    server._monitor_workers = False
    exit_code = [0]

    def on_term(signum, frame) -> None:
        log.info("SIGTERM: finishing accepted requests, then exiting", extra={"event": "shutdown"})
        if server._shutdown_event is not None:
            # Not from this thread: the main thread is inside a call to the same Manager-held event
            # (LitServe waits on it), and a second call on that connection from a signal handler
            # deadlocks. Another thread has its own connection.
            threading.Thread(target=server._shutdown_event.set, daemon=True, name="sigterm").start()

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=_watch_workers, args=(server, exit_code), daemon=True, name="worker-watchdog").start()
    try:
        server.run(host=settings.host, port=settings.port, num_api_servers=1, generate_client_file=False,
                   log_level=settings.log_level, access_log=False, log_config=None)
    except RuntimeError as e:  # a worker failed in setup(): artifact, golden check or provider
        log.error(f"start-up failed: {e}", extra={"event": "startup_failed"})
        _stop_workers(server)
        return EXIT_STARTUP_FAILED
    return exit_code[0]
