"""Per-model statistics (Triton's statistics extension: GET /v2/models/{name}/stats over HTTP,
ModelStatistics over gRPC), counted by the HTTP process for every inference request it answers,
/v1 (its fast path) and v2 alike, from the service's own timings:

- success / fail: requests answered with results / with an error after they named a model, and
  their time in the server (from the body read to the answer ready);
- queue: from the request parsed to its batch starting, measured by the inference worker;
- compute_input: tensors (or JSON) to a validated request, in the HTTP process;
- compute_infer: the batch the request ran in (tokenize, ONNX Runtime, decode), by the worker;
- compute_output: the answer to output tensors, in the HTTP process;
- inference_count: texts inferred; execution_count: batches run that held this model's requests;
- last_inference: milliseconds since the epoch of the last success.

The service runs one HTTP process, which serves both protocols, so these are the server's counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

KINDS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += max(0, int(ns))


@dataclass
class ModelStats:
    name: str
    version: str
    durations: dict[str, Duration] = field(default_factory=lambda: {k: Duration() for k in KINDS})
    inference_count: int = 0
    execution_count: int = 0
    last_inference: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Triton's JSON form (numbers as JSON numbers)."""
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {k: {"count": d.count, "ns": d.ns} for k, d in self.durations.items()},
            "batch_stats": [],
            "memory_usage": [],
        }


@dataclass(frozen=True)
class Timing:
    """One request's timings, in nanoseconds; queue and infer come from the inference worker."""

    total: int
    compute_input: int = 0
    queue: int = 0
    compute_infer: int = 0
    compute_output: int = 0
    texts: int = 0
    first_in_batch: bool = False


class Statistics:
    def __init__(self, models: dict[str, str]):
        """`models`: name -> version."""
        self.models = {name: ModelStats(name, version) for name, version in models.items()}

    def success(self, name: str, t: Timing) -> None:
        s = self.models.get(name)
        if s is None:
            return
        d = s.durations
        d["success"].add(t.total)
        d["compute_input"].add(t.compute_input)
        d["queue"].add(t.queue)
        d["compute_infer"].add(t.compute_infer)
        d["compute_output"].add(t.compute_output)
        s.inference_count += t.texts
        s.execution_count += int(t.first_in_batch)
        s.last_inference = time.time_ns() // 1_000_000

    def failure(self, name: str, total_ns: int) -> None:
        s = self.models.get(name)
        if s is not None:
            s.durations["fail"].add(total_ns)

    def report(self, names: list[str]) -> dict[str, Any]:
        return {"model_stats": [self.models[n].as_dict() for n in names if n in self.models]}
