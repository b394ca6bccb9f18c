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
import logging
import re
import time
import uuid
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
from service.admission import Admission, Refusal
from service.oip.rest import OipRest
from service.oip.tensors import NUMPY_TYPES, OipError, Tensor, bad, check_header, element_count, from_raw, to_raw
from service.schemas import REQUEST_ID, REQUEST_LIMITS, Limits
from service.settings import Settings

log = logging.getLogger("service.grpc")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

# HTTP status -> gRPC code (the metrics keep the HTTP status, whatever the protocol)
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
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


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, rest: OipRest, admission: Admission, limits: Limits, request_timeout: float):
        self.rest, self.registry, self.inference = rest, rest.registry, rest.inference
        self.admission, self.limits, self.request_timeout = admission, limits, request_timeout

    async def _call(self, context: aio.ServicerContext, label: str, body: Callable[[], Awaitable[Any]]) -> Any:
        """Run one RPC: request id and limits in context, errors as gRPC status, metrics and a log line."""
        meta = dict(context.invocation_metadata() or ())
        given = str(meta.get("x-request-id", ""))
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex
        token, limits_token = REQUEST_ID.set(rid), REQUEST_LIMITS.set(self.limits)
        status, t0 = 200, time.perf_counter()
        try:
            return await body()
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
            if label in ("sentiment", "translate"):
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

    def _authorized(self, context: aio.ServicerContext, endpoint: str) -> None:
        meta = dict(context.invocation_metadata() or ())
        given = str(meta.get("x-api-key") or str(meta.get("authorization", "")).removeprefix("Bearer ").strip())
        refusal = self.admission.check(endpoint, given, "the x-api-key metadata")
        if refusal is not None:
            raise _error(refusal)

    # -- health and metadata ----------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:
        async def body() -> pb.ServerLiveResponse:
            return pb.ServerLiveResponse(live=True)

        return await self._call(context, "health", body)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext) -> pb.ServerReadyResponse:
        async def body() -> pb.ServerReadyResponse:
            return pb.ServerReadyResponse(ready=self.rest.ready())

        return await self._call(context, "health", body)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext) -> pb.ModelReadyResponse:
        async def body() -> pb.ModelReadyResponse:
            self._authorized(context, "other")
            try:  # an unknown model or version is not ready (as Triton answers; HTTP says 404)
                self.registry.get(request.name, request.version)
            except OipError:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=self.rest.ready())

        return await self._call(context, "health", body)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        async def body() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(**self.rest.server_metadata())

        return await self._call(context, "other", body)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        async def body() -> pb.ModelMetadataResponse:
            self._authorized(context, "other")
            return json_format.ParseDict(
                self.registry.get(request.name, request.version).metadata(), pb.ModelMetadataResponse()
            )

        return await self._call(context, "other", body)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: aio.ServicerContext) -> pb.ModelConfigResponse:
        async def body() -> pb.ModelConfigResponse:
            self._authorized(context, "other")
            config = self.registry.get(request.name, request.version).config(self.rest.max_batch_size)
            return pb.ModelConfigResponse(config=json_format.ParseDict(config, mc.ModelConfig()))

        return await self._call(context, "other", body)

    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: aio.ServicerContext
    ) -> pb.ModelStatisticsResponse:
        async def body() -> pb.ModelStatisticsResponse:
            self._authorized(context, "other")
            names = (
                [self.registry.get(request.name, request.version).name] if request.name else list(self.registry.models)
            )
            return json_format.ParseDict(self.inference.stats.report(names), pb.ModelStatisticsResponse())

        return await self._call(context, "other", body)

    # -- inference --------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext) -> pb.ModelInferResponse:
        model = self.registry.models.get(request.model_name)
        endpoint = model.family if model is not None else "other"

        async def body() -> pb.ModelInferResponse:
            t0 = time.perf_counter_ns()
            self._authorized(context, endpoint)
            refusal = self.admission.enter(endpoint)
            if refusal is not None:
                raise _error(refusal)
            try:
                return await asyncio.wait_for(self._infer(request, t0), self.request_timeout + 5)
            except asyncio.TimeoutError:
                M.REJECTED.labels(endpoint, "timeout").inc()
                raise OipError(
                    504, f"request not answered within {self.request_timeout + 5:.0f} s; retry later"
                ) from None
            finally:
                self.admission.leave(endpoint)

        return await self._call(context, endpoint, body)

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
