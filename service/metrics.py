"""Prometheus metrics, defined once. Correct with several processes: the server runs
prometheus_client in multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by service.__main__ before
any worker starts) and /metrics aggregates every process's files.

Recorded in the HTTP process: requests, latency, in-flight, and the fair scheduler's cost and wait. In inference workers: queue wait,
inference time, batch size, tokens, decode steps, and the model-info gauge.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

NS = "rnnserve"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# protocol: "v1" (the JSON API), "v2" (Open Inference Protocol over HTTP), "grpc" (OIP over gRPC),
# "http" (everything else over HTTP: /health, /metrics, /docs...). status: the HTTP status code; for
# gRPC the HTTP code its status maps to (OK 200, INVALID_ARGUMENT 400, NOT_FOUND 404, ...).
PROTOCOLS = ("v1", "v2", "grpc", "http")
REQUESTS = Counter(
    f"{NS}_requests_total", "requests by endpoint, status code and protocol", ["endpoint", "status", "protocol"]
)
REQUEST_LATENCY = Histogram(
    f"{NS}_request_duration_seconds",
    "request latency, end to end in the server",
    ["endpoint", "protocol"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    f"{NS}_requests_in_flight", "requests accepted and not yet answered", ["endpoint"], multiprocess_mode="livesum"
)
REJECTED = Counter(
    f"{NS}_requests_rejected_total", "requests refused before inference, by reason", ["endpoint", "reason"]
)

QUEUE_WAIT = Histogram(
    f"{NS}_queue_wait_seconds",
    "time from request parsed to its batch starting inference",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_TIME = Histogram(
    f"{NS}_inference_duration_seconds",
    "time to run one batch (tokenize, ONNX, decode)",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(f"{NS}_batch_size_requests", "requests per dynamic batch", ["endpoint"], buckets=BATCH_BUCKETS)
BATCH_TEXTS = Histogram(f"{NS}_batch_size_texts", "texts per dynamic batch", ["endpoint"], buckets=BATCH_BUCKETS)
TOKENS = Counter(f"{NS}_tokens_total", "tokens processed", ["endpoint", "kind"])
DECODE_STEPS = Counter(f"{NS}_decode_steps_total", "decoder steps run (translation)", ["pair"])
# Fair scheduling (batching.dispatch, in the HTTP process). client_class: "anonymous" or
# "identified", never the client id itself (bounded cardinality).
SERVED_COST = Counter(
    f"{NS}_served_cost_seconds_total",
    "model time served by the cost model's estimate, by client class",
    ["endpoint", "client_class"],
)
SCHEDULER_WAIT = Histogram(
    f"{NS}_scheduler_wait_seconds",
    "time from a request's arrival to its first unit released to the workers, by client class",
    ["endpoint", "client_class"],
    buckets=LATENCY_BUCKETS,
)
MODEL_INFO = Gauge(
    f"{NS}_model_info",
    "1 per loaded model, labelled with version and execution provider",
    ["model", "version", "provider"],
    multiprocess_mode="liveall",
)  # adds a pid label


def exposition() -> bytes:
    """All processes' metrics in the Prometheus text format."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)
