"""/health, /info and /metrics: what an orchestrator, an operator and Prometheus read."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from service import __version__
from service import metrics as M
from service.batching.watchdog import ServiceState
from service.settings import Settings


def health(
    endpoint: Callable[[Request], Awaitable[Response]], state: ServiceState
) -> Callable[[Request], Awaitable[PlainTextResponse]]:
    """LitServe's /health endpoint, answering text/plain (as documented; LitServe sends no
    Content-Type), and 503 once an inference worker has died."""

    async def health_(request: Request) -> PlainTextResponse:
        if state.failure is not None:
            return PlainTextResponse(f"not ready: {state.failure}", status_code=503)
        r = await endpoint(request)
        return PlainTextResponse(r.body, status_code=r.status_code)

    return health_


def add_info_and_metrics(
    app: FastAPI,
    settings: Settings,
    state_dir: Path,
    pairs: list[str],
    threads: int,
    workers: int,
    scheduling: dict[str, Any] | None = None,
) -> None:
    started = time.time()

    @app.get(
        "/info",
        tags=["operations"],
        summary="Models, versions, metrics, execution provider, batching",
        description="The models the inference workers loaded (name, version, metrics from their metadata, the ONNX "
        "Runtime execution provider actually in use), the translation pairs, batching and limits.",
    )
    async def info() -> JSONResponse:
        return JSONResponse(
            describe(
                settings,
                models(state_dir),
                started=started,
                pairs=pairs,
                threads=threads,
                workers=workers,
                scheduling=scheduling,
            )
        )

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus exposition",
        response_class=PlainTextResponse,
        description="Every process's metrics (HTTP process and inference workers), in the Prometheus text format.",
    )
    async def metrics() -> Response:
        return Response(M.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")


def models(state_dir: Path) -> list[dict[str, Any]]:
    """What the inference workers loaded, as they reported it (batching.apis), one entry per model."""
    found: dict[str, dict[str, Any]] = {}
    for f in sorted(Path(state_dir).glob("*.json")):
        try:
            w = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        for m in w["models"]:
            e = found.setdefault(m["name"], {**m, "providers": set(), "workers": 0})
            e["providers"].add(m["provider"])
            e["workers"] += 1
    for e in found.values():
        e["providers"] = sorted(e.pop("providers"))
        e.pop("provider", None)
    return list(found.values())


def describe(
    s: Settings,
    models: list[dict[str, Any]],
    *,
    started: float,
    pairs: list[str],
    threads: int,
    workers: int,
    scheduling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The /info document."""
    return {
        "service": {"name": "rnn-serve", "version": __version__, "uptime_seconds": round(time.time() - started, 1)},
        "models": models,
        "translation_pairs": pairs,
        "runtime": {
            "onnxruntime": ort.__version__,
            "device_requested": s.device,
            "available_providers": ort.get_available_providers(),
            "threads_per_session": threads,
            "spin_wait": s.spin == "on",
            "workers_per_family": workers,
        },
        "batching": {
            "max_batch_size": s.max_batch_size,
            "batch_timeout_s": s.batch_timeout,
            "enabled": s.max_batch_size > 1,
            "sentiment_token_budget": s.token_budget,
        },
        # the fair scheduler: policy, unit and window sizes, the cost model's coefficients (docs/scheduling.md)
        "scheduling": scheduling or {"policy": s.scheduling},
        "limits": {
            "max_texts": s.max_texts,
            "max_text_chars": s.max_text_chars,
            "max_translate_chars": s.max_translate_chars,
            "max_payload_bytes": s.max_payload_bytes,
            "max_queue": s.max_queue,
            "request_timeout_s": s.request_timeout,
        },
        # /v1 and the Open Inference Protocol's /v2 on the HTTP port; OIP over gRPC on its own (None: off)
        "protocols": {"http": ["v1", "v2"], "http_port": s.port, "grpc_port": s.grpc_port or None},
        "auth": {"api_key_required": s.api_key is not None},
    }
