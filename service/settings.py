"""Service settings: one pydantic-settings object, from the environment (prefix RNNSERVE_) and
the command line (which wins; service.__main__ generates it from these fields). Each option is
documented here once, in its description. Nothing else in the service reads the environment.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.schemas import Limits

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Serve the models in --models-dir over HTTP. Every option also comes from the environment,
    upper-case with the prefix RNNSERVE_ (RNNSERVE_PORT=9000); the command line wins."""

    model_config = SettingsConfigDict(env_prefix="RNNSERVE_", extra="forbid")

    host: str = Field("0.0.0.0", description="interface to bind: 0.0.0.0, 127.0.0.1 or ::")
    port: int = Field(
        8000, ge=1024, le=65535, description="port to listen on (HTTP: /v1 and the Open Inference Protocol's /v2)"
    )
    grpc_port: int = Field(
        8001,
        description="port for the Open Inference Protocol over gRPC (inference.GRPCInferenceService); 0 = no gRPC",
    )
    models_dir: Path = Field(
        PROJECT_ROOT / "models", description="folder of model artifacts (default: the shipped models/)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="ONNX Runtime device: auto (CUDA if it works, else CPU), cpu, or cuda (fail if CUDA cannot be used)",
    )
    workers: int = Field(
        0,
        ge=0,
        le=64,
        description="inference worker processes per model family; 0 = auto: one per core on CPU (each with "
        "single-threaded sessions; at most 8), one on CUDA",
    )
    precision: Literal["auto", "fp32", "int8"] = Field(
        "auto",
        description="weights of the sentiment model and of the translators' decoder step: auto = the shipped "
        "int8 variants when running on CPU (same accuracy and BLEU within 0.2, faster), fp32 on CUDA; fp32; or int8",
    )
    threads: int = Field(0, ge=0, description="ONNX Runtime threads per session; 0 = cores / workers")
    spin: Literal["on", "off"] = Field(
        "on",
        description="on: ONNX Runtime threads spin-wait between operators while a run lasts and stop when it ends "
        "(1.4x batched throughput on 2 cores); off: they sleep whenever idle",
    )
    max_batch_size: int = Field(32, ge=1, le=512, description="requests per dynamic batch; 1 turns batching off")
    batch_timeout: float = Field(
        0.0,
        ge=0,
        le=1,
        description="seconds a batch waits to fill once a worker has taken its first request; 0 = no waiting: "
        "a free worker takes what is queued (under load requests queue while it computes, so batches form)",
    )
    token_budget: int = Field(
        1024,
        ge=64,
        description="padded tokens per sentiment sub-batch (a batch is sorted by "
        "length and cut so that short reviews are not padded to a long one)",
    )
    max_texts: int = Field(64, ge=1, le=1024, description="texts per request")
    max_text_chars: int = Field(20_000, ge=1, description="characters per sentiment text")
    max_translate_chars: int = Field(1_000, ge=1, description="characters per text to translate")
    max_payload_bytes: int = Field(2_000_000, ge=1024, description="request body limit (413 above)")
    max_queue: int = Field(512, ge=1, description="requests in flight before 429")
    request_timeout: float = Field(30.0, gt=0, description="seconds before a queued request gets 504")
    scheduling: Literal["fair", "fifo"] = Field(
        "fair",
        description="fair: requests are priced, cut into units and served fairly between clients (X-Client-ID), "
        "docs/scheduling.md; fifo: first come, first served, as they arrive",
    )
    unit_ms: float = Field(
        250.0,
        ge=10,
        le=10_000,
        description="fair scheduling: a request is cut into units of at most this much estimated model time (ms); "
        "the workers' queue holds about one unit per worker, the rest waits to be ordered",
    )
    queue_cost: float = Field(
        120.0,
        gt=0,
        description="fair scheduling: seconds of estimated model work queued per model family before 429; a client "
        "past its share (this over the clients waiting) is refused while the others are served",
    )
    api_key: SecretStr | None = Field(
        None,
        description="if set, /v1/* and /v2/models/* require this key in the X-API-Key header, gRPC in the x-api-key "
        "metadata (prefer the RNNSERVE_API_KEY variable)",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="log level (JSON lines on stderr)"
    )
    shutdown_grace: float = Field(20.0, ge=0, description="seconds to finish accepted requests on SIGTERM")

    @field_validator("grpc_port")
    @classmethod
    def _grpc_port(cls, v: int) -> int:
        if v != 0 and not 1024 <= v <= 65535:
            raise ValueError("grpc_port must be 0 (off) or a port from 1024 to 65535")
        return v

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        # gRPC binds with SO_REUSEPORT: on the HTTP port it would start, and take some HTTP connections
        if self.grpc_port == self.port:
            raise ValueError(f"grpc_port must differ from port ({self.port}), or be 0 (no gRPC)")
        return self

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if v not in ("0.0.0.0", "127.0.0.1", "::"):
            raise ValueError("host must be 0.0.0.0, 127.0.0.1 or ::")
        return v

    def limits(self, pairs: Sequence[str] = Limits.pairs) -> Limits:
        """The request limits these settings configure, for the translation pairs being served."""
        return Limits(self.max_texts, self.max_text_chars, self.max_translate_chars, tuple(pairs))
