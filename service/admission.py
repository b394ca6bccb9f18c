"""What every inference request passes before it may be queued, whatever its protocol (/v1 and
/v2 over HTTP, the gateway; OIP over gRPC, service.oip.grpc): the API key, a dead worker, and a
slot in the bounded queue. One object per HTTP process, shared by both, so the queue bound and the
in-flight gauge count every protocol's requests together."""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from service import metrics as M
from service.batching.watchdog import WORKER_LOST, ServiceState
from service.settings import Settings


@dataclass(frozen=True)
class Refusal:
    status: int  # HTTP status; gRPC maps it to its code
    reason: str  # the rnnserve_requests_rejected_total reason
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def presented_key(get: Callable[[str, str], str]) -> str:
    """The API key a request presents, from HTTP headers or gRPC metadata (`get(name, default)`):
    `x-api-key`, else `authorization: Bearer <key>`."""
    return get("x-api-key", "") or get("authorization", "").removeprefix("Bearer ").strip()


def busy(max_queue: int) -> Refusal:
    return Refusal(
        429, "queue_full", f"server busy: {max_queue} requests already queued; retry shortly", {"retry-after": "1"}
    )


class Admission:
    def __init__(self, settings: Settings, state: ServiceState):
        self.state = state
        self.max_queue = settings.max_queue
        self.key = settings.api_key.get_secret_value().encode() if settings.api_key else None
        self.in_flight: Counter[str] = Counter()

    def check(self, endpoint: str, given_key: str | None, where: str = "the X-API-Key header") -> Refusal | None:
        """The API key (constant-time comparison), then a dead worker; None when the request may go on."""
        if self.key is not None and not hmac.compare_digest((given_key or "").encode(), self.key):
            M.REJECTED.labels(endpoint, "unauthorized").inc()
            return Refusal(
                401, "unauthorized", f"missing or wrong API key: send it in {where}", {"www-authenticate": "ApiKey"}
            )
        if self.state.failure is not None:
            M.REJECTED.labels(endpoint, "worker_lost").inc()
            return Refusal(503, "worker_lost", WORKER_LOST, {"retry-after": "1"})
        return None

    def enter(self, endpoint: str) -> Refusal | None:
        """Take a queue slot (then `leave` it), or the 429 to answer."""
        if self.in_flight[endpoint] >= self.max_queue:
            M.REJECTED.labels(endpoint, "queue_full").inc()
            return busy(self.max_queue)
        self.in_flight[endpoint] += 1
        M.IN_FLIGHT.labels(endpoint).inc()
        return None

    def leave(self, endpoint: str) -> None:
        self.in_flight[endpoint] -= 1
        M.IN_FLIGHT.labels(endpoint).dec()
