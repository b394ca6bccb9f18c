"""One OIP inference, whatever the protocol: input tensors to the model's /v1 request, onto the
same queue as /v1 (batching.fast_path), the answer back to output tensors; counted in the
statistics. Also counts the /v1 requests the fast path answers (`observe_v1`)."""

from __future__ import annotations

import time
from typing import Any

from service.batching.fast_path import FastPath, worker_error
from service.oip.models import OipModel, Registry
from service.oip.stats import Statistics, Timing
from service.oip.tensors import OipError, Tensor, bad


class Inference:
    def __init__(self, registry: Registry, fast: FastPath, stats: Statistics | None = None):
        self.registry, self.fast = registry, fast
        self.stats = stats or Statistics({n: m.version for n, m in registry.models.items()})

    @staticmethod
    def check_outputs(model: OipModel, wanted: list[str] | None) -> None:
        if not wanted:
            return
        names = [t.name for t in model.outputs]
        for name in wanted:
            if name not in names:
                raise bad(f"unknown output {name!r}; model {model.name} has outputs {', '.join(names)}")
        if len(set(wanted)) != len(wanted):
            raise bad("an output is requested twice")

    async def __call__(
        self,
        model: OipModel,
        inputs: list[Tensor],
        params: dict[str, Any],
        wanted: list[str] | None = None,
        started_ns: int | None = None,
    ) -> list[Tensor]:
        """The output tensors (all, or those `wanted`, in that order); OipError when it fails."""
        t0 = started_ns or time.perf_counter_ns()
        try:
            self.check_outputs(model, wanted)
            request = model.to_request(inputs, params)
            t1 = time.perf_counter_ns()
            response, failed = await self.fast.submit(model.api_path, request)
            if failed:
                status, detail, headers = worker_error(response, self.fast.request_timeout)
                raise OipError(status, detail if isinstance(detail, str) else str(detail), headers)
            t2 = time.perf_counter_ns()
            outputs = model.to_outputs(response)
        except OipError:
            self.stats.failure(model.name, time.perf_counter_ns() - t0)
            raise
        if wanted:
            by_name = {t.name: t for t in outputs}
            outputs = [by_name[n] for n in wanted]
        t3 = time.perf_counter_ns()
        self.stats.success(model.name, _timing(request, response, t3 - t0, t1 - t0, t3 - t2))
        return outputs

    def observe_v1(
        self, endpoint: str, request: Any, response: Any, failed: bool, total_ns: int, input_ns: int
    ) -> None:
        """batching.fast_path's observer: /v1 traffic in the same statistics."""
        model = self.registry.for_request(endpoint, request)
        if model is None:
            return
        if failed:
            self.stats.failure(model.name, total_ns)
        else:
            self.stats.success(model.name, _timing(request, response, total_ns, input_ns, 0))


def _timing(request: Any, response: Any, total: int, compute_input: int, compute_output: int) -> Timing:
    return Timing(
        total=total,
        compute_input=compute_input,
        queue=response._queue_ns,
        compute_infer=response._infer_ns,
        compute_output=compute_output,
        texts=len(request.texts),
        first_in_batch=response._first_in_batch,
    )
