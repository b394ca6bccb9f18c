"""OIP over gRPC: `inference.GRPCInferenceService` on its own port (settings.grpc_port), served by
the HTTP process on its event loop (grpc.aio), so a gRPC request takes the same path as an HTTP one:
the same admission (API key in the `x-api-key` or `authorization: Bearer` metadata, queue slots,
a dead worker), the same limits and validation, the same queue and workers, the same statistics.

The service's messages and stubs are Triton's (`tritonclient.grpc.service_pb2`, generated from
Triton's grpc_service.proto: KServe's open_inference_grpc.proto plus Triton's extensions, same
package and service name). Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata,
ModelMetadata, ModelInfer, and the read-only ModelConfig and ModelStatistics that Triton's
clients and perf_analyzer call; the rest answer UNIMPLEMENTED (the generated servicer's default).

Started in the HTTP process's lifespan (never before the fork: a gRPC server does not survive
one); at SIGTERM it stops taking new calls at once and finishes those it holds within the grace
period, like the HTTP side (batching.litserve_internals runs `stop` when uvicorn starts its
shutdown).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from grpc import aio
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from service import metrics as M
from service.admission import Admission, Refusal, presented_key
from service.batching.fair import CLIENT, client_id
from service.oip.rest import OipRest
from service.oip.tensors import (
    GRPC_CODES,
    NUMPY_TYPES,
    OipError,
    Tensor,
    bad,
    check_header,
    element_count,
    from_raw,
    to_raw,
)
from service.schemas import REQUEST_ID, REQUEST_LIMITS, Limits, request_id
from service.settings import Settings

log = logging.getLogger("service.grpc")

CODES = {status: getattr(grpc.StatusCode, name) for status, name in GRPC_CODES.items()}
# typed contents field of InferTensorContents, by datatype
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_value(p: pb.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def input_tensors(request: pb.ModelInferRequest) -> list[Tensor]:
    """The request's inputs, from raw_input_contents (what tritonclient sends) or typed contents."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad(f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents; give one per input")
    out = []
    for k, i in enumerate(request.inputs):
        shape = list(i.shape)
        if raw:
            out.append(from_raw(i.name, i.datatype, shape, raw[k]))
            continue
        check_header(i.name, i.datatype, shape)
        field = CONTENTS.get(i.datatype)
        if field is None:
            raise bad(f"input {i.name}: {i.datatype} must be sent in raw_input_contents")
        values = list(getattr(i.contents, field))
        if len(values) != element_count(shape):
            raise bad(
                f"input {i.name}: shape {shape} holds {element_count(shape)} elements; contents has {len(values)}"
            )
        data = values if i.datatype == "BYTES" else np.asarray(values, dtype=NUMPY_TYPES[i.datatype])
        out.append(Tensor(i.name, i.datatype, shape, data))
    return out


INFERENCE = ("sentiment", "translate")  # metrics labels of inference; anything else is "health" or "other"


def rpc(label: str | Callable[[Servicer, Any], str], *, guarded: bool = False) -> Callable:
    """An RPC of the servicer, run by `Servicer._call` under its metrics `label` (or the label
    computed from the request); `guarded`: the API key and a dead worker are checked first."""

    def wrap(fn: Callable[[Servicer, Any, aio.ServicerContext], Awaitable[Any]]) -> Callable:
        @functools.wraps(fn)
        async def method(self: Servicer, request: Any, context: aio.ServicerContext) -> Any:
            name = label if isinstance(label, str) else label(self, request)
            return await self._call(fn, request, context, name, guarded)

        return method

    return wrap


def _family(servicer: Servicer, request: pb.ModelInferRequest) -> str:
    model = servicer.registry.models.get(request.model_name)
    return model.family if model is not None else "other"


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, rest: OipRest, admission: Admission, limits: Limits, request_timeout: float):
        self.rest, self.registry, self.inference = rest, rest.registry, rest.inference
        self.admission, self.limits, self.request_timeout = admission, limits, request_timeout

    async def _call(self, fn: Callable, request: Any, context: aio.ServicerContext, label: str, guarded: bool) -> Any:
        """Run one RPC: request id and limits in context, the API key checked if `guarded`, errors
        as gRPC status, metrics and (inference) a log line."""
        meta = {k: str(v) for k, v in context.invocation_metadata() or ()}
        rid = request_id(meta.get("x-request-id", ""))
        token, limits_token = REQUEST_ID.set(rid), REQUEST_LIMITS.set(self.limits)
        client = CLIENT.set(client_id(meta.get("x-client-id")))  # the fair scheduler's client
        status, t0 = 200, time.perf_counter()
        try:
            if guarded:
                endpoint = label if label in INFERENCE else "other"
                refusal = self.admission.check(endpoint, presented_key(meta.get), "the x-api-key metadata")
                if refusal is not None:
                    raise _error(refusal)
            return await fn(self, request, context)
        except OipError as e:
            status = e.status
            trailer = [(k.lower(), v) for k, v in e.headers.items() if k.lower() in ("retry-after", "www-authenticate")]
            context.set_trailing_metadata([("x-request-id", rid), *trailer])
            await context.abort(CODES.get(e.status, grpc.StatusCode.UNKNOWN), e.message)
        except asyncio.CancelledError:
            status = 499  # the client went away, its deadline passed, or the server stopped
            raise
        except Exception:
            if status == 200:  # not context.abort()'s own exception
                status = 500
                log.exception("unhandled error", extra={"event": "internal_error", "request_id": rid})
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; the request id is in x-request-id")
            raise
        finally:
            dt = time.perf_counter() - t0
            M.REQUESTS.labels(label, str(status), "grpc").inc()
            if label in INFERENCE:
                M.REQUEST_LATENCY.labels(label, "grpc").observe(dt)
                log.info(
                    "request",
                    extra={
                        "method": "grpc",
                        "path": "ModelInfer",
                        "status": status,
                        "duration_ms": round(dt * 1000, 2),
                        "request_id": rid,
                    },
                )
            REQUEST_ID.reset(token)
            REQUEST_LIMITS.reset(limits_token)
            CLIENT.reset(client)

    # -- health and metadata ----------------------------------------------------------------------

    @rpc("health")
    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @rpc("health")
    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.rest.ready())

    @rpc("health", guarded=True)
    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext) -> pb.ModelReadyResponse:
        try:  # an unknown model or version is not ready (as Triton answers; HTTP says 404)
            self.registry.get(request.name, request.version)
        except OipError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self.rest.ready())

    @rpc("other")
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.rest.server_metadata())

    @rpc("other", guarded=True)
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        metadata = self.registry.get(request.name, request.version).metadata()
        return json_format.ParseDict(metadata, pb.ModelMetadataResponse())

    @rpc("other", guarded=True)
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: aio.ServicerContext) -> pb.ModelConfigResponse:
        config = self.registry.get(request.name, request.version).config(self.rest.max_batch_size)
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, mc.ModelConfig()))

    @rpc("other", guarded=True)
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        names = [self.registry.get(request.name, request.version).name] if request.name else list(self.registry.models)
        return json_format.ParseDict(self.inference.stats.report(names), pb.ModelStatisticsResponse())

    # -- inference --------------------------------------------------------------------------------

    @rpc(_family, guarded=True)
    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext) -> pb.ModelInferResponse:
        t0 = time.perf_counter_ns()
        endpoint = _family(self, request)
        refusal = self.admission.enter(endpoint)
        if refusal is not None:
            raise _error(refusal)
        try:
            return await asyncio.wait_for(self._infer(request, t0), self.request_timeout + 5)
        except asyncio.TimeoutError:
            M.REJECTED.labels(endpoint, "timeout").inc()
            raise OipError(504, f"request not answered within {self.request_timeout + 5:.0f} s; retry later") from None
        finally:
            self.admission.leave(endpoint)

    async def _infer(self, request: pb.ModelInferRequest, t0: int) -> pb.ModelInferResponse:
        model = self.registry.get(request.model_name, request.model_version)
        params = {k: parameter_value(v) for k, v in request.parameters.items()}
        wanted = [o.name for o in request.outputs] or None
        outputs = await self.inference(model, input_tensors(request), params, wanted, started_ns=t0)
        response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for t in outputs:
            response.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
            response.raw_output_contents.append(to_raw(t))
        return response


def _error(refusal: Refusal) -> OipError:
    return OipError(refusal.status, refusal.message, refusal.headers)


class GrpcServer:
    """The gRPC server of one HTTP process: `start` in its lifespan, `stop` at shutdown."""

    def __init__(self, settings: Settings, servicer: Servicer):
        self.settings, self.servicer = settings, servicer
        self.server: aio.Server | None = None
        self._stopping: asyncio.Future | None = None
        self.address = (
            f"[::]:{settings.grpc_port}" if settings.host == "::" else f"{settings.host}:{settings.grpc_port}"
        )

    async def start(self) -> None:
        limit = self.settings.max_payload_bytes
        self.server = aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),  # larger: RESOURCE_EXHAUSTED, like HTTP's 413
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 0),  # a port already in use is an error, not a second listener
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, self.server)
        self.server.add_insecure_port(self.address)
        await self.server.start()
        log.info(f"gRPC (Open Inference Protocol) on {self.address}", extra={"event": "grpc_started"})

    async def stop(self) -> None:
        """Refuse new calls now; finish those held within the shutdown grace period. Called at
        SIGTERM and again when the lifespan ends: the second call waits for the first to finish
        (the calls held need the response reader, which the lifespan stops after this)."""
        if self._stopping is None and self.server is not None:
            self._stopping = asyncio.ensure_future(self.server.stop(self.settings.shutdown_grace))
        if self._stopping is not None:
            await asyncio.shield(self._stopping)
