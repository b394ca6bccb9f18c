"""Request and response schemas of the HTTP API (pydantic), shared by the server and the client.

Limits that operators configure (texts per request, characters per text, supported language
pairs) travel with each request, like its id: the HTTP gateway puts the server's `Limits` (made
from Settings and the artifacts present at start-up) into `REQUEST_LIMITS` for every request it
handles, and the validators and the OpenAPI schema read them from there. Outside a server (the
client, tests) the defaults apply.
"""

from __future__ import annotations

import contextvars
import math
import re
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# The X-Request-ID of the request being parsed (set by the HTTP middleware), so that it travels
# with the parsed request into the inference worker.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SANE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


def request_id(given: str) -> str:
    """The id a request is known by: the client's (X-Request-ID header, x-request-id gRPC metadata)
    when it is sane, else a new one."""
    return given if _SANE_ID.match(given) else uuid.uuid4().hex


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64
    max_text_chars: int = 20_000
    max_translate_chars: int = 1_000
    pairs: tuple[str, ...] = ("en-de", "en-fr")


# The limits of the server handling the request being parsed (set by the HTTP gateway).
REQUEST_LIMITS: contextvars.ContextVar[Limits] = contextvars.ContextVar("request_limits", default=Limits())  # noqa: B039 (frozen)

# What str.strip() removes (str.isspace()), spelled out so that every regex engine reading the
# OpenAPI schema agrees with the server: "\s" differs between Python, ECMA-262 and Rust (U+001C-1F).
WHITESPACE = "\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
NOT_BLANK = f"[^{WHITESPACE}]"  # a text must hold at least one character that is not whitespace


def _json_int(v: Any) -> Any:
    """An integer as JSON Schema means it: 3 or 3.0, never "3" or true (pydantic's lax mode takes both)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or (isinstance(v, float) and not math.isfinite(v)):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    if isinstance(v, float):
        if not v.is_integer():
            raise PydanticCustomError(
                "int_from_float", "Input should be a valid integer, got a number with a fractional part"
            )
        return int(v)
    return v


def json_int(ge: int, le: int) -> Any:
    """An integer in [ge, le]; constraints inside, so that the JSON schema says minimum/maximum."""
    return Annotated[int, Field(ge=ge, le=le), BeforeValidator(_json_int)]


def _count_texts(texts: Any) -> Any:
    """Before each text is validated: too many texts is the one thing to say (not 10,000 errors)."""
    limit = REQUEST_LIMITS.get().max_texts
    if isinstance(texts, list) and len(texts) > limit:
        raise ValueError(f"at most {limit} texts per request (got {len(texts)}); split the request")
    return texts


def _check_texts(texts: list[str], max_chars: int) -> list[str]:
    if not texts:
        raise ValueError("texts must hold at least one text")
    limit = REQUEST_LIMITS.get().max_texts
    if len(texts) > limit:
        raise ValueError(f"at most {limit} texts per request (got {len(texts)}); split the request")
    for i, t in enumerate(texts):
        if not t.strip():
            raise ValueError(f"texts[{i}] is empty or whitespace only; send some text")
        if len(t) > max_chars:
            raise ValueError(f"texts[{i}] has {len(t)} characters; the limit is {max_chars}")
    return texts


def _request_schema(max_chars_attr: str, example: dict[str, Any]):
    """Schema extras filled in when the schema is generated (inside a request to /openapi.json, so
    with that server's limits): the configured limits, the supported pairs, and a whole-request example."""

    def extra(schema: dict[str, Any]) -> None:
        limits = REQUEST_LIMITS.get()
        props = schema.get("properties", {})
        if "texts" in props:
            props["texts"]["maxItems"] = limits.max_texts
            props["texts"]["items"]["maxLength"] = getattr(limits, max_chars_attr)
            props["texts"]["items"]["pattern"] = NOT_BLANK
            props["texts"]["items"]["description"] = "not empty or whitespace only"
        if "target_lang" in props:
            pairs = ", ".join(limits.pairs) or "none"
            split = [p.split("-", 1) for p in limits.pairs]
            sources, targets = sorted({s for s, _ in split}), sorted({t for _, t in split})
            props["target_lang"]["description"] = f"target language; supported pairs (source-target): {pairs}"
            props["source_lang"]["description"] = f"source language; supported pairs (source-target): {pairs}"
            if split:
                props["source_lang"]["enum"], props["target_lang"]["enum"] = sources, targets
            rules: list[dict[str, Any]] = []
            if split and len(sources) * len(targets) != len(split):  # not every combination is served: list the pairs
                default = props["source_lang"].get("default")
                rules.append(
                    {
                        "anyOf": [
                            {
                                "properties": {"source_lang": {"const": s}, "target_lang": {"const": t}},
                                **({} if s == default else {"required": ["source_lang"]}),
                            }
                            for s, t in split
                        ]
                    }
                )
            # n_best <= beam_size (default 5), as alternatives: no n_best (or null), or n_best n with a beam of n or more
            beam = props["beam_size"]
            rules.append(
                {
                    "anyOf": [{"properties": {"n_best": {"type": "null"}}}]
                    + [
                        {
                            "properties": {"n_best": {"const": n}, "beam_size": {"minimum": n}},
                            "required": ["n_best", "beam_size"] if n > beam["default"] else ["n_best"],
                        }
                        for n in range(1, int(beam["maximum"]) + 1)
                    ]
                }
            )
            schema["allOf"] = rules
        schema["examples"] = [example]

    return extra


class _Received(BaseModel):
    """Remembers when and under which request id a request was parsed (travels to the worker)."""

    _received_at: float = PrivateAttr(default_factory=time.time)
    _request_id: str = PrivateAttr(default_factory=REQUEST_ID.get)


PRIORITY_DESCRIPTION = (
    "1 (first) to 9 (last); absent or 0: 5. Orders this client's own requests; it does not take a larger "
    "share of the server from other clients (X-Client-ID)"
)
TIMEOUT_DESCRIPTION = "answer 504 if not started within this many milliseconds (at most the server's request timeout)"


class SentimentRequest(_Received):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=_request_schema(
            "max_text_chars", {"texts": ["A wonderful, moving film.", "Two hours I will never get back."]}
        ),
    )

    texts: list[str] = Field(
        ...,
        min_length=1,
        description="reviews to classify",
        examples=[["A wonderful, moving film.", "Two hours I will never get back."]],
    )

    priority: json_int(0, 9) | None = Field(None, description=PRIORITY_DESCRIPTION)
    timeout_ms: json_int(1, 3_600_000) | None = Field(None, description=TIMEOUT_DESCRIPTION)

    @field_validator("texts", mode="before")
    @classmethod
    def _count(cls, v: Any) -> Any:
        return _count_texts(v)

    @field_validator("texts")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        return _check_texts(v, REQUEST_LIMITS.get().max_text_chars)


class ModelRef(BaseModel):
    name: str
    version: str


class SentimentResult(BaseModel):
    label: Literal["negative", "positive"]
    score: float = Field(..., ge=0, le=1, description="probability of the label")
    probabilities: dict[Literal["negative", "positive"], float]


class _Timed(BaseModel):
    """Set by the inference worker for the request this answers; private, so never serialized to a
    client, but pickled with the response to the HTTP process (service.oip.stats)."""

    _queue_ns: int = PrivateAttr(default=0)  # from parsed to its batch starting
    _infer_ns: int = PrivateAttr(default=0)  # the batch it ran in
    _first_in_batch: bool = PrivateAttr(default=False)  # first request of its model in that batch

    def timed(self, queue_ns: int, infer_ns: int, first: bool) -> _Timed:
        self._queue_ns, self._infer_ns, self._first_in_batch = queue_ns, infer_ns, first
        return self


class SentimentResponse(_Timed):
    model: ModelRef
    results: list[SentimentResult]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": {"name": "imdb-sentiment-bilstm", "version": "2026-11-22+abcdef12"},
                    "results": [
                        {"label": "positive", "score": 0.98, "probabilities": {"negative": 0.02, "positive": 0.98}}
                    ],
                }
            ]
        }
    )


class TranslateRequest(_Received):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=_request_schema(
            "max_translate_chars",
            {
                "texts": ["A man is riding a bicycle down the street."],
                "source_lang": "en",
                "target_lang": "de",
                "beam_size": 5,
            },
        ),
    )

    texts: list[str] = Field(
        ...,
        min_length=1,
        description="sentences to translate",
        examples=[["A man is riding a bicycle down the street."]],
    )
    source_lang: str = Field("en", examples=["en"])
    target_lang: str = Field(..., examples=["de"])
    beam_size: json_int(1, 8) = Field(5, description="1 = greedy search")
    max_length: json_int(1, 256) | None = Field(
        None, description="output subwords at most (default: 1.5 x source + 10)"
    )
    n_best: json_int(1, 8) | None = Field(None, description="hypotheses returned per text (<= beam_size)")
    return_alignments: StrictBool = Field(False, description="attention weights of the chosen hypothesis")
    priority: json_int(0, 9) | None = Field(None, description=PRIORITY_DESCRIPTION)
    timeout_ms: json_int(1, 3_600_000) | None = Field(None, description=TIMEOUT_DESCRIPTION)

    @field_validator("texts", mode="before")
    @classmethod
    def _count(cls, v: Any) -> Any:
        return _count_texts(v)

    @field_validator("texts")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        return _check_texts(v, REQUEST_LIMITS.get().max_translate_chars)

    @model_validator(mode="after")
    def _pair(self) -> TranslateRequest:
        pair, pairs = f"{self.source_lang}-{self.target_lang}", REQUEST_LIMITS.get().pairs
        if pair not in pairs:
            raise ValueError(f"unsupported language pair {pair}; supported: {', '.join(pairs) or 'none'}")
        if self.n_best is not None and self.n_best > self.beam_size:
            raise ValueError(f"n_best ({self.n_best}) cannot exceed beam_size ({self.beam_size})")
        return self


class Alternative(BaseModel):
    translation: str
    score: float


class Alignment(BaseModel):
    source_tokens: list[str] = Field(..., description="source subwords")
    target_tokens: list[str] = Field(..., description="target subwords")
    weights: list[list[float]] = Field(..., description="[target][source] attention weights")


class TranslateResult(BaseModel):
    translation: str
    score: float = Field(..., description="length-normalized log-probability")
    alternatives: list[Alternative] | None = Field(None, description="the other n-best hypotheses, when n_best > 1")
    alignments: Alignment | None = Field(None, description="when return_alignments is true")


class TranslateResponse(_Timed):
    model: ModelRef
    results: list[TranslateResult]

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": {"name": "general-en-de-attention", "version": "2026-12-06+abcdef12"},
                    "results": [
                        {
                            "translation": "Ein Mann fährt mit dem Fahrrad die Straße hinunter.",
                            "score": -0.31,
                            "alternatives": None,
                            "alignments": None,
                        }
                    ],
                }
            ]
        }
    )


class ErrorResponse(BaseModel):
    detail: str | list[dict[str, Any]]
