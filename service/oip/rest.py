"""OIP over HTTP: the /v2 routes, on the service's port.

Inference (`POST /v2/models/{name}[/versions/{version}]/infer`) is answered by the HTTP gateway,
after the same checks as /v1 (API key, size, queue, deadline, shutdown), through `OipRest.infer`:
a JSON body, or Triton's binary tensor data extension (an `Inference-Header-Content-Length`
header giving the length of the JSON header; the raw tensors follow it). Outputs come back as
JSON, or raw (binary) when the request asks for it (`binary_data_output`, or an output's
`binary_data`). The other routes are FastAPI routes (`add_routes`). Every error is
`{"error": "..."}`.
"""

from __future__ import annotations

import inspect
import json
import re
import time
import zlib
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from service import __version__
from service.oip.infer import Inference
from service.oip.models import OipModel, Registry
from service.oip.schemas import (
    SENTIMENT_EXAMPLE,
    TRANSLATION_EXAMPLE,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    OipErrorBody,
    ServerMetadata,
)
from service.oip.tensors import OipError, Tensor, bad, from_json, from_raw, to_json_data, to_raw

SERVER_NAME = "rnn-serve"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics"]
HEADER_LENGTH = "inference-header-content-length"
# /v2/models/{name}[/versions/{version}][/infer|/ready|/config|/stats]
MODEL_PATH = re.compile(r"^/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<what>/[a-z]+)?$")


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def decode_body(body: bytes, encoding: str, limit: int) -> bytes:
    """The request body as sent before its Content-Encoding (gzip or deflate, which Triton's clients
    offer: request_compression_algorithm), at most `limit` bytes once inflated (else 413)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise OipError(415, f"Content-Encoding {encoding!r} is not supported; send gzip, deflate or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise bad(f"request body is not valid {encoding} data ({e})") from None
    if len(out) > limit:
        raise OipError(413, f"request body exceeds the limit of {limit} bytes once inflated")
    if not inflater.eof:
        raise bad(f"request body ends inside its {encoding} stream")
    return out


def infer_target(path: str) -> tuple[str, str | None] | None:
    """(model name, version) when `path` is an infer route, else None."""
    m = MODEL_PATH.match(path)
    if m is None or m["what"] != "/infer":
        return None
    return m["name"], m["version"]


def _explain(e: ValidationError) -> str:
    err = e.errors()[0]
    kind, loc = err.get("type", ""), [str(x) for x in err.get("loc", ())]
    if kind == "json_invalid":
        return f"request body is not valid JSON ({(err.get('ctx') or {}).get('error', 'invalid JSON')})"
    if kind == "model_type" and not loc:
        return "request body must be a JSON object with an inputs array"
    where = ".".join(loc) or "request"
    if kind == "missing":
        return f"field {where} is required"
    if kind == "extra_forbidden":
        return f"unknown field {where}; remove it"
    return f"{where}: {err.get('msg', 'invalid')}"


def parse_request(body: bytes, header_length: str | None) -> tuple[InferenceRequest, list[Tensor]]:
    """The request document and its input tensors, from JSON or the binary extension."""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise bad(
                f"Inference-Header-Content-Length is {header_length!r}; it must be the byte length of the JSON "
                f"header, at most the body's {len(body)} bytes"
            )
        n = int(header_length)
        head, tail = body[:n], memoryview(body)[n:]
    else:
        head, tail = body, memoryview(b"")
    try:
        doc = InferenceRequest.model_validate_json(head)
    except ValidationError as e:
        raise bad(_explain(e)) from None
    tensors, pos = [], 0
    for i in doc.inputs:
        size = (i.parameters or {}).get("binary_data_size")
        if size is None:
            if i.data is None:
                raise bad(f"input {i.name}: no data (give data, or binary_data_size with the binary extension)")
            tensors.append(from_json(i.name, i.datatype, i.shape, i.data))
            continue
        if header_length is None:
            raise bad(f"input {i.name}: binary_data_size needs the Inference-Header-Content-Length header")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad(f"input {i.name}: binary_data_size must be a non-negative integer")
        if i.data is not None:
            raise bad(f"input {i.name}: give data or binary_data_size, not both")
        if pos + size > len(tail):
            raise bad(f"input {i.name}: binary_data_size {size} runs past the end of the body")
        tensors.append(from_raw(i.name, i.datatype, i.shape, tail[pos : pos + size]))
        pos += size
    if pos != len(tail):
        raise bad(f"{len(tail) - pos} bytes after the JSON header belong to no input (check binary_data_size)")
    return doc, tensors


def encode_response(model: OipModel, doc: InferenceRequest, outputs: list[Tensor]) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, or JSON header + raw outputs (binary extension)."""
    binary_all = (doc.parameters or {}).get("binary_data_output") is True
    binary = {o.name: (o.parameters or {}).get("binary_data", binary_all) is True for o in doc.outputs or []}
    entries, blobs = [], []
    for t in outputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if binary.get(t.name, binary_all):
            raw = to_raw(t)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = to_json_data(t)
        entries.append(entry)
    resp: dict[str, Any] = {"model_name": model.name, "model_version": model.version}
    if doc.id is not None:
        resp["id"] = doc.id
    resp["outputs"] = entries
    head = json.dumps(resp, ensure_ascii=False).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


class OipRest:
    def __init__(self, registry: Registry, inference: Inference, ready: Callable[[], bool], max_batch_size: int):
        self.registry, self.inference, self.ready, self.max_batch_size = registry, inference, ready, max_batch_size

    async def infer(
        self, name: str, version: str | None, header_length: str | None, body: bytes
    ) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) for an infer request whose body the gateway has read."""
        t0 = time.perf_counter_ns()
        try:
            model = self.registry.get(name, version)
            doc, tensors = parse_request(body, header_length)
            wanted = [o.name for o in doc.outputs] if doc.outputs else None
            outputs = await self.inference(model, tensors, doc.parameters or {}, wanted, started_ns=t0)
            payload, headers = encode_response(model, doc, outputs)
            return 200, payload, headers
        except OipError as e:
            return e.status, error_body(e.message), {"content-type": "application/json", **e.headers}

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def add_routes(self, app: FastAPI) -> None:
        """The /v2 routes, documented (tag "open inference protocol")."""
        tag = ["open inference protocol (v2)"]
        errors = {
            400: {"model": OipErrorBody, "description": "bad request: the message says what to fix"},
            404: {"model": OipErrorBody, "description": "no such model or version"},
        }

        def answer(fn: Callable[[], Any]) -> Response:
            try:
                return JSONResponse(fn())
            except OipError as e:
                return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

        @app.get("/v2", tags=tag, summary="Server metadata", response_model=ServerMetadata)
        async def server_metadata() -> Response:
            return JSONResponse(self.server_metadata())

        @app.get(
            "/v2/health/live",
            tags=tag,
            summary="Live: the server answers",
            response_class=Response,
            responses={200: {"description": "live (no body)"}},
        )
        async def live() -> Response:
            return Response(status_code=200)

        @app.get(
            "/v2/health/ready",
            tags=tag,
            summary="Ready: 200 once every model is loaded and verified (as /health)",
            response_class=Response,
            responses={200: {"description": "ready (no body)"}, 503: {"description": "not ready (no body)"}},
        )
        async def ready() -> Response:
            return Response(status_code=200 if self.ready() else 503)

        for prefix in ("/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}"):
            self._model_routes(app, prefix, tag, errors, answer)

    def _model_routes(self, app: FastAPI, prefix: str, tag: list[str], errors: dict, answer: Callable) -> None:
        versioned = "model_version" in prefix

        def route(fn: Callable[..., Any], *extra: inspect.Parameter) -> Callable[..., Any]:
            """`fn(**path_params)` with the signature FastAPI reads: the path's parameters, then `extra`."""
            names = ["model_name", "model_version"] if versioned else ["model_name"]
            params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=str) for n in names]
            fn.__signature__ = inspect.Signature([*params, *extra])  # type: ignore[attr-defined]
            return fn

        def model_of(kw: dict[str, Any]) -> OipModel:
            return self.registry.get(kw["model_name"], kw.get("model_version"))

        async def metadata(**kw: Any) -> Response:
            return answer(lambda: model_of(kw).metadata())

        async def model_ready(**kw: Any) -> Response:
            try:
                model_of(kw)
            except OipError as e:
                return JSONResponse({"error": e.message}, status_code=e.status)
            return Response(status_code=200 if self.ready() else 503)

        async def config(**kw: Any) -> Response:
            return answer(lambda: model_of(kw).config(self.max_batch_size))

        async def stats(**kw: Any) -> Response:
            return answer(lambda: self.inference.stats.report([model_of(kw).name]))

        async def infer(request: Request, **kw: Any) -> Response:
            status, body, headers = await self.infer(
                kw["model_name"], kw.get("model_version"), request.headers.get(HEADER_LENGTH), await request.body()
            )
            return Response(body, status_code=status, headers=headers)

        for fn in (metadata, model_ready, config, stats):
            route(fn)
        route(infer, inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request))

        suffix = " (a given version)" if versioned else ""
        no_body = {200: {"description": "ready (no body)"}, 503: {"description": "not ready (no body)"}}
        gets = [
            ("", metadata, "Model metadata", {"response_model": ModelMetadata}),
            ("/ready", model_ready, "Model ready", {"response_class": Response, "responses": {**errors, **no_body}}),
            ("/config", config, "Model configuration (Triton's model configuration extension)", {}),
            ("/stats", stats, "Model statistics (Triton's statistics extension)", {}),
        ]
        for path, fn, summary, extra in gets:
            app.get(f"{prefix}{path}", tags=tag, summary=f"{summary}{suffix}", **{"responses": errors, **extra})(fn)
        app.post(
            f"{prefix}/infer",
            tags=tag,
            summary=f"Inference{suffix}",
            description="Input TEXT (BYTES, [n]). sentiment: outputs LABEL (BYTES, [n]) and PROBABILITIES (FP32, "
            "[n, 2]: negative, positive). translate-<src>-<tgt>: parameters beam_size, max_length, n_best; outputs "
            "TRANSLATION (BYTES, [n, n_best]) and SCORE (FP32, [n, n_best]). JSON, or Triton's binary tensor data "
            "extension: an Inference-Header-Content-Length header, the JSON header, then the raw tensors.",
            response_model=InferenceResponse,
            responses={
                **errors,
                401: {"model": OipErrorBody, "description": "missing or wrong API key (when the server requires one)"},
                413: {"model": OipErrorBody, "description": "request body larger than the limit (once inflated)"},
                415: {"model": OipErrorBody, "description": "a Content-Encoding other than gzip or deflate"},
                429: {"model": OipErrorBody, "description": "queue full: retry after Retry-After seconds"},
                503: {"model": OipErrorBody, "description": "an inference worker died or the server is shutting down"},
                504: {"model": OipErrorBody, "description": "request not answered in time"},
            },
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": inline_schema(InferenceRequest),
                            "examples": {
                                "sentiment": {"value": SENTIMENT_EXAMPLE},
                                "translation, 2-best": {"value": TRANSLATION_EXAMPLE},
                            },
                        }
                    },
                }
            },
        )(infer)


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its $defs inlined (it is embedded in a route's request body)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)
