"""Build and run the server: both LitAPIs behind LitServe, the gateway, the documented routes,
/info and /metrics, error handlers, graceful shutdown and the inference-worker watchdog.

Import this only through `service.__main__` (or `prepare_process()` first): prometheus_client
must see PROMETHEUS_MULTIPROC_DIR before it is imported.

LitServe is used as it ships, with these changes (all in batching.litserve_internals): requests
and responses travel over plain multiprocessing pipes instead of a Manager process; a /v1 body
that validates goes from the gateway straight onto the workers' queue (batching.fast_path); the
/v1 routes carry no dependency (the gateway authenticates; LitServe's sync no-op dependency cost
two thread-pool hops per request); there is no GZip middleware (the responses are small JSON).

And for failures and shutdown (tests/test_reliability_faults.py):
- Only the HTTP process holds the listening socket: the main process closes its copy once the
  HTTP process is forked, and the Manager process is started before the socket is bound (forked
  after, it inherited a copy). When the HTTP process stops listening at SIGTERM, new connections
  are refused at once instead of hanging, unanswered, until the last copy is closed.
- The forked HTTP process does not inherit the main process's SIGTERM handler (uvicorn re-raises
  the signal after its graceful shutdown; the inherited handler ran there a second time), and the
  main process waits for its drain a little longer than the drain may last before killing it.
- A dead inference worker or HTTP process: batching.watchdog.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
from pathlib import Path

from service import __version__, logs
from service.admission import Admission
from service.batching.apis import SentimentAPI, TranslateAPI
from service.batching.dispatch import FairDispatch
from service.batching.fast_path import FastPath
from service.batching.litserve_internals import SHUTDOWN_HOOKS, Server, install_process_hooks
from service.batching.watchdog import (
    EXIT_STARTUP_FAILED,
    ExitCode,
    ServiceState,
    setup_failures,
    stop_workers,
    watch_workers,
)
from service.http.errors import add_error_handlers
from service.http.gateway import Gateway
from service.http.openapi import describe_routes, serve_docs_offline
from service.http.operations import add_info_and_metrics
from service.oip.infer import Inference
from service.oip.models import Registry
from service.oip.rest import OipRest
from service.runtime.artifacts import ArtifactError, find_artifacts, load_metadata
from service.runtime.providers import CPU, ProviderError, create_session, threads_per_session, workers_per_family
from service.schemas import Limits, SentimentRequest, TranslateRequest
from service.settings import Settings

log = logging.getLogger("service")


def discover(settings: Settings) -> tuple[bool, list[str], dict[str, dict]]:
    """Which model families are present, and every artifact's metadata (hashes verified up front)."""
    arts = find_artifacts(settings.models_dir)
    has_sentiment = "sentiment" in arts
    pairs, metas = [], {}
    for name, folder in arts.items():
        metas[name] = meta = load_metadata(folder)  # raises ArtifactError naming the bad file
        if name.startswith("translate-"):
            pairs.append(f"{meta['config']['src_lang']}-{meta['config']['tgt_lang']}")
    if not has_sentiment and not pairs:
        raise ArtifactError(f"no model artifacts under {settings.models_dir} (expected sentiment/ or translate-xx-yy/)")
    return has_sentiment, sorted(pairs), metas


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


def build(settings: Settings, state_dir: Path, provider: str = CPU) -> Server:
    """The server, for `provider`: the one check_device found (it decides the automatic worker count)."""
    has_sentiment, pairs, metas = discover(settings)
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
    apis = ([SentimentAPI(**kw)] if has_sentiment else []) + ([TranslateAPI(**kw)] if pairs else [])
    server = Server(
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
        "`X-Request-ID` (the client's, when it sent one). The same models also speak the Open Inference "
        'Protocol (KServe v2) under `/v2` (errors `{"error": ...}`) and over gRPC.'
    )
    server.state = state = ServiceState()
    describe_routes(app, state)
    serve_docs_offline(app)
    add_error_handlers(app, settings.request_timeout)
    served = ({"sentiment": SentimentRequest} if has_sentiment else {}) | (
        {"translate": TranslateRequest} if pairs else {}
    )
    fast = FastPath(server, served, settings.request_timeout)
    scheduler = None
    if settings.scheduling == "fair":  # every inference request through the fair scheduler (batching.dispatch)
        scheduler = FairDispatch(
            server,
            api_paths=[api.api_path for api in apis],
            workers=workers,
            unit_ms=settings.unit_ms,
            limit_ms=settings.queue_cost * 1000,
            request_timeout=settings.request_timeout,
            uid=fast._uid,
        )
        fast.scheduler = scheduler
        server.on_failure = [scheduler.fail_waiting]
    # The Open Inference Protocol: /v2 over HTTP (routes here, inference in the gateway) and gRPC,
    # both onto the same queue as /v1, through the same admission, with statistics of all three.
    add_info_and_metrics(
        app, settings, state_dir, pairs, threads, workers, scheduler.describe() if scheduler else {"policy": "fifo"}
    )
    registry = Registry(metas)
    inference = Inference(registry, fast)
    fast.observe = inference.observe_v1
    oip = OipRest(registry, inference, server.ready, settings.max_batch_size)
    oip.add_routes(app)
    admission = Admission(settings, state)
    limits = settings.limits(pairs)
    app.add_middleware(Gateway, settings=settings, limits=limits, state=state, fast=fast, admission=admission, oip=oip)
    if settings.grpc_port:
        server.http_services = [grpc_service(settings, oip, admission, limits)]
    return server


def grpc_service(settings: Settings, oip: OipRest, admission: Admission, limits: Limits):
    """The gRPC server's life in the HTTP process: grpc is imported and the server made only there,
    after the fork (a gRPC server does not survive one)."""

    @contextlib.asynccontextmanager
    async def serve():
        from service.oip.grpc import GrpcServer, Servicer

        grpc_server = GrpcServer(settings, Servicer(oip, admission, limits, settings.request_timeout))
        await grpc_server.start()
        SHUTDOWN_HOOKS.append(grpc_server.stop)  # stop taking calls as soon as SIGTERM arrives
        try:
            yield
        finally:
            await grpc_server.stop()

    return serve


class PortTaken(RuntimeError):
    """The gRPC port cannot be bound."""


def check_port_free(host: str, port: int) -> None:
    """Fail at start-up, saying which, when the gRPC port is taken (the HTTP process binds it later)."""
    family = socket.AF_INET6 if host == "::" else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as e:
            raise PortTaken(f"cannot listen for gRPC on {host}:{port} ({e.strerror}); set --grpc-port") from None


def run(settings: Settings, state_dir: Path) -> int:
    """Serve until SIGTERM (exit 0), a failed start (2) or a lost worker (3)."""
    logs.configure(settings.log_level)
    install_process_hooks(logs.configure)
    try:
        if settings.grpc_port:
            check_port_free(settings.host, settings.grpc_port)
        provider = check_device(settings)
        server = build(settings, state_dir, provider)
    except (ArtifactError, ProviderError, PortTaken) as e:
        log.error(str(e), extra={"event": "startup_failed"})
        return EXIT_STARTUP_FAILED
    log.info(
        f"serving on {settings.host}:{settings.port} (HTTP)"
        + (f" and {settings.grpc_port} (gRPC)" if settings.grpc_port else "")
        + f" with {provider} (device={settings.device})",
        extra={"event": "starting"},
    )
    server.uvicorn_graceful_timeout = settings.shutdown_grace
    server.use_own_watchdog()
    exit_code = ExitCode()

    def on_term(signum, frame) -> None:
        log.info("SIGTERM: finishing accepted requests, then exiting", extra={"event": "shutdown"})
        server.request_shutdown_from_signal_handler()

    server.start_manager()  # before the handler: the forked Manager must not run it
    signal.signal(signal.SIGTERM, on_term)
    threading.Thread(
        target=watch_workers, args=(server, exit_code, state_dir), daemon=True, name="worker-watchdog"
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
            log.error(f"start-up failed: {setup_failures(state_dir) or e}", extra={"event": "startup_failed"})
        stop_workers(server)
        return EXIT_STARTUP_FAILED
    return exit_code.value or 0
