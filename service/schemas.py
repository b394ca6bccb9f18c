"""Request and response schemas of the HTTP API (pydantic), shared by the server and the client.

Limits that operators configure (texts per request, characters per text, supported language
pairs) are checked by validators against `LIMITS`, which the server fills from Settings and the
artifacts present at start-up, and are also written into the OpenAPI schema.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

# The X-Request-ID of the request being parsed (set by the HTTP middleware), so that it travels
# with the parsed request into the inference worker.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


@dataclass
class Limits:
    max_texts: int = 64
    max_text_chars: int = 20_000
    max_translate_chars: int = 1_000
    pairs: list[str] = field(default_factory=lambda: ["en-de", "en-fr"])


LIMITS = Limits()


def _check_texts(texts: list[str], max_chars: int) -> list[str]:
    if not texts:
        raise ValueError("texts must hold at least one text")
    if len(texts) > LIMITS.max_texts:
        raise ValueError(f"at most {LIMITS.max_texts} texts per request (got {len(texts)}); split the request")
    for i, t in enumerate(texts):
        if not t.strip():
            raise ValueError(f"texts[{i}] is empty or whitespace only; send some text")
        if len(t) > max_chars:
            raise ValueError(f"texts[{i}] has {len(t)} characters; the limit is {max_chars}")
    return texts


def _request_schema(max_chars_attr: str, example: dict[str, Any]):
    """Schema extras filled in when the schema is generated (after the server set LIMITS): the
    configured limits, the supported pairs, and a whole-request example."""

    def extra(schema: dict[str, Any]) -> None:
        props = schema.get("properties", {})
        if "texts" in props:
            props["texts"]["maxItems"] = LIMITS.max_texts
            props["texts"]["items"]["maxLength"] = getattr(LIMITS, max_chars_attr)
        if "target_lang" in props:
            pairs = ", ".join(LIMITS.pairs) or "none"
            props["target_lang"]["description"] = f"target language; supported pairs (source-target): {pairs}"
            props["source_lang"]["description"] = f"source language; supported pairs (source-target): {pairs}"
        schema["examples"] = [example]
    return extra


class _Received(BaseModel):
    """Remembers when and under which request id a request was parsed (travels to the worker)."""

    _received_at: float = PrivateAttr(default_factory=time.time)
    _request_id: str = PrivateAttr(default_factory=REQUEST_ID.get)


class SentimentRequest(_Received):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_request_schema(
        "max_text_chars", {"texts": ["A wonderful, moving film.", "Two hours I will never get back."]}))

    texts: list[str] = Field(..., min_length=1, description="reviews to classify",
                             examples=[["A wonderful, moving film.", "Two hours I will never get back."]])

    @field_validator("texts")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        return _check_texts(v, LIMITS.max_text_chars)


class ModelRef(BaseModel):
    name: str
    version: str


class SentimentResult(BaseModel):
    label: Literal["negative", "positive"]
    score: float = Field(..., ge=0, le=1, description="probability of the label")
    probabilities: dict[Literal["negative", "positive"], float]


class SentimentResponse(BaseModel):
    model: ModelRef
    results: list[SentimentResult]

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": {"name": "imdb-sentiment-bilstm", "version": "2026-11-22+abcdef12"},
        "results": [{"label": "positive", "score": 0.98, "probabilities": {"negative": 0.02, "positive": 0.98}}]}]})


class TranslateRequest(_Received):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_request_schema(
        "max_translate_chars", {"texts": ["A man is riding a bicycle down the street."], "source_lang": "en",
                                "target_lang": "de", "beam_size": 5}))

    texts: list[str] = Field(..., min_length=1, description="sentences to translate",
                             examples=[["A man is riding a bicycle down the street."]])
    source_lang: str = Field("en", examples=["en"])
    target_lang: str = Field(..., examples=["de"])
    beam_size: int = Field(5, ge=1, le=8, description="1 = greedy search")
    max_length: int | None = Field(None, ge=1, le=256, description="output subwords at most (default: 1.5 x source + 10)")
    n_best: int | None = Field(None, ge=1, le=8, description="hypotheses returned per text (<= beam_size)")
    return_alignments: bool = Field(False, description="attention weights of the chosen hypothesis")

    @field_validator("texts")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        return _check_texts(v, LIMITS.max_translate_chars)

    @model_validator(mode="after")
    def _pair(self) -> TranslateRequest:
        pair = f"{self.source_lang}-{self.target_lang}"
        if pair not in LIMITS.pairs:
            raise ValueError(f"unsupported language pair {pair}; supported: {', '.join(LIMITS.pairs) or 'none'}")
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


class TranslateResponse(BaseModel):
    model: ModelRef
    results: list[TranslateResult]

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model": {"name": "multi30k-en-de-attention", "version": "2026-11-22+abcdef12"},
        "results": [{"translation": "Ein Mann fährt mit dem Fahrrad die Straße hinunter.", "score": -0.31,
                     "alternatives": None, "alignments": None}]}]})


class ErrorResponse(BaseModel):
    detail: str | list[dict[str, Any]]
