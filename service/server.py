"""Build and run the LitServe server: both LitAPIs, the HTTP gateway, /info, /metrics, error
handlers, graceful shutdown and the inference-worker watchdog.

Import this only through `service.__main__` (or `prepare_process()` first): prometheus_client
must see PROMETHEUS_MULTIPROC_DIR before it is imported.
"""

from __future__ import annotations

import json
import logging
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
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute

from service import __version__, logs
from service import metrics as M
from service.apis import SentimentAPI, TranslateAPI
from service.artifacts import ArtifactError, find_artifacts, load_metadata
from service.gateway import Gateway
from service.providers import ProviderError, create_session, threads_per_session
from service.schemas import LIMITS, ErrorResponse
from service.settings import Settings

log = logging.getLogger("service")
EXIT_WORKER_DIED = 3
ERROR_RESPONSES = {
    401: "missing or wrong API key", 413: "request body too large", 415: "Content-Type is not application/json",
    422: "invalid request: the message says what to fix", 429: "queue full: retry after Retry-After seconds",
    504: "request not answered in time",
}


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


def build(settings: Settings, state_dir: Path) -> ls.LitServer:
    has_sentiment, pairs = discover(settings)
    LIMITS.max_texts, LIMITS.max_text_chars = settings.max_texts, settings.max_text_chars
    LIMITS.max_translate_chars, LIMITS.pairs = settings.max_translate_chars, pairs
    families = int(has_sentiment) + int(bool(pairs))
    threads = settings.threads or threads_per_session(settings.workers * families)
    kw = {"models_dir": settings.models_dir, "device": settings.device, "threads": threads, "workers": settings.workers,
          "state_dir": state_dir, "max_batch_size": settings.max_batch_size, "batch_timeout": settings.batch_timeout,
          "log_level": settings.log_level}
    apis: list[ls.LitAPI] = []
    if has_sentiment:
        apis.append(SentimentAPI(**kw))
    if pairs:
        apis.append(TranslateAPI(**kw))
    server = ls.LitServer(apis, accelerator="cpu", workers_per_device=settings.workers, timeout=settings.request_timeout,
                          info_path="/litserve/info", track_requests=False)
    app = server.app
    app.title, app.version = "rnn-serve", __version__
    app.description = ("Sentiment (BiLSTM, IMDB) and translation (attention seq2seq, Multi30k) over ONNX Runtime. "
                       "Errors are JSON `{\"detail\": ...}` saying what to fix.")
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith("/v1/"):
            route.responses.update({c: {"model": ErrorResponse, "description": d} for c, d in ERROR_RESPONSES.items()})
            route.summary = {"/v1/sentiment": "Classify reviews as positive or negative",
                             "/v1/translate": "Translate sentences (beam search)"}.get(route.path)
    info_state = {"settings": settings, "state_dir": state_dir, "started": time.time(), "pairs": pairs,
                  "threads": threads}

    @app.get("/info", tags=["operations"], summary="Models, versions, metrics, execution provider, batching")
    async def info() -> JSONResponse:
        return JSONResponse(_info(info_state))

    @app.get("/metrics", tags=["operations"], summary="Prometheus exposition")
    async def metrics() -> Response:
        return Response(M.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back (it may be megabytes, or private); say where and what.
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error", exc_info=exc)
        return JSONResponse({"detail": "internal error; the request id is in the X-Request-ID header"}, status_code=500)

    app.add_middleware(Gateway, settings=settings)
    return server


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
                     "enabled": s.max_batch_size > 1},
        "limits": {"max_texts": s.max_texts, "max_text_chars": s.max_text_chars,
                   "max_translate_chars": s.max_translate_chars, "max_payload_bytes": s.max_payload_bytes,
                   "max_queue": s.max_queue, "request_timeout_s": s.request_timeout},
        "auth": {"api_key_required": s.api_key is not None},
    }


def _watch_workers(server: ls.LitServer, exit_code: list[int]) -> None:
    """If an inference worker dies, exit non-zero (the orchestrator restarts us) rather than
    report healthy while its requests hang. LitServe's own monitor cannot answer requests held by
    forked HTTP processes, so it is replaced by this one."""
    while not getattr(server, "inference_workers", None):
        time.sleep(0.2)
    while not server._shutdown_event.is_set():
        dead = [p for p in server.inference_workers if not p.is_alive()]
        if dead:
            log.error("inference worker died; shutting down to be restarted",
                      extra={"event": "worker_died", "status": dead[0].exitcode})
            exit_code[0] = EXIT_WORKER_DIED
            server.uvicorn_graceful_timeout = 2  # its requests will never be answered; do not wait long
            server._shutdown_event.set()
            return
        time.sleep(0.5)


def run(settings: Settings, state_dir: Path) -> int:
    logs.configure(settings.log_level)
    ls_server.configure_logging = logs.configure  # LitServe reconfigures logging in run(); keep JSON lines
    try:
        server = build(settings, state_dir)
        provider = check_device(settings)
    except (ArtifactError, ProviderError) as e:
        log.error(str(e), extra={"event": "startup_failed"})
        return 2
    log.info(f"serving on {settings.host}:{settings.port} with {provider} (device={settings.device})",
             extra={"event": "starting"})
    server.uvicorn_graceful_timeout = settings.shutdown_grace
    server._monitor_workers = False
    exit_code = [0]

    def on_term(signum, frame) -> None:
        log.info("SIGTERM: finishing accepted requests, then exiting", extra={"event": "shutdown"})
        if server._shutdown_event is not None:
            server._shutdown_event.set()

    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(target=_watch_workers, args=(server, exit_code), daemon=True, name="worker-watchdog").start()
    try:
        server.run(host=settings.host, port=settings.port, num_api_servers=1, generate_client_file=False,
                   log_level=settings.log_level, access_log=False, log_config=None)
    except RuntimeError as e:  # a worker failed in setup(): artifact, golden check or provider
        log.error(f"start-up failed: {e}", extra={"event": "startup_failed"})
        return 2
    return exit_code[0]
