"""Typed HTTP client for rnn-serve, sync and async (httpx).

    from loadgen.client import Client, APIError
    with Client("http://127.0.0.1:8000", api_key=None) as c:
        c.sentiment(["A wonderful film."]).results[0].label         # 'positive'
        c.translate(["A dog runs in the park."], target_lang="de").results[0].translation

    async with AsyncClient(url) as c:
        r = await c.translate(["A dog runs."], target_lang="fr", beam_size=1)

Requests and responses are the server's own pydantic models (service.schemas); pass a
`SentimentRequest`/`TranslateRequest` or the plain arguments. The limits a server is configured
with (texts per request, characters per text, language pairs) are the server's to check, not
this client's, which cannot know them: a refused request raises `APIError` carrying the HTTP
status, the server's `detail`, the request id and Retry-After. Connection failures and time-outs
raise httpx's own exceptions (`httpx.TransportError`, `httpx.TimeoutException`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from service import __version__
from service.schemas import SentimentRequest, SentimentResponse, TranslateRequest, TranslateResponse

R = TypeVar("R", bound=BaseModel)
DEFAULT_URL = "http://127.0.0.1:8000"


class APIError(Exception):
    """The server answered 4xx or 5xx. `detail` is its JSON detail: a message, or for 422 a list
    of {loc, msg, type} saying which field to fix."""

    def __init__(self, status: int, detail: Any, *, request_id: str | None = None, retry_after: float | None = None):
        self.status, self.detail, self.request_id, self.retry_after = status, detail, request_id, retry_after
        super().__init__(f"HTTP {status}: {detail}" + (f" (request id {request_id})" if request_id else ""))


def sentiment_request(texts: Sequence[str] | SentimentRequest) -> SentimentRequest:
    if isinstance(texts, SentimentRequest):
        return texts
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    # Not validated here: the server checks its own limits and says what to fix.
    return SentimentRequest.model_construct(texts=list(texts))


def translate_request(
    texts: Sequence[str] | TranslateRequest, target_lang: str | None = None, **options: Any
) -> TranslateRequest:
    """Only the options given (not None) are sent; the server's defaults apply to the rest."""
    if isinstance(texts, TranslateRequest):
        return texts
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    if target_lang is None:
        raise TypeError("translate() needs target_lang (for example 'de')")
    given = {k: v for k, v in options.items() if v is not None}
    return TranslateRequest.model_construct(texts=list(texts), target_lang=target_lang, **given)


class _Base:
    def __init__(self, base_url: str, api_key: str | None):
        self.base_url = base_url.rstrip("/")
        self._headers = {"user-agent": f"rnn-serve-client/{__version__}", "accept": "application/json"}
        if api_key:
            self._headers["x-api-key"] = api_key

    def _request_headers(self, request_id: str | None) -> dict[str, str]:
        return {"x-request-id": request_id or uuid.uuid4().hex}

    @staticmethod
    def _body(req: BaseModel) -> dict[str, Any]:
        return req.model_dump(mode="json", exclude_unset=True)

    @staticmethod
    def _check(r: httpx.Response) -> httpx.Response:
        if r.status_code < 400:
            return r
        try:
            detail = r.json().get("detail", r.text)
        except (ValueError, AttributeError):
            detail = r.text[:500]
        retry = r.headers.get("retry-after")
        raise APIError(
            r.status_code,
            detail,
            request_id=r.headers.get("x-request-id"),
            retry_after=float(retry) if retry and retry.replace(".", "", 1).isdigit() else None,
        )

    @classmethod
    def _parse(cls, r: httpx.Response, model: type[R]) -> R:
        return model.model_validate_json(cls._check(r).content)


class Client(_Base):
    """Blocking client. Thread-safe (httpx.Client is); reuse one per process for keep-alive."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        limits: httpx.Limits | None = None,
        transport: httpx.BaseTransport | None = None,
    ):
        super().__init__(base_url, api_key)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=self._headers,
            timeout=timeout,
            limits=limits or httpx.Limits(),
            transport=transport,
        )

    def sentiment(self, texts: Sequence[str] | SentimentRequest, *, request_id: str | None = None) -> SentimentResponse:
        r = self._http.post(
            "/v1/sentiment", json=self._body(sentiment_request(texts)), headers=self._request_headers(request_id)
        )
        return self._parse(r, SentimentResponse)

    def translate(
        self,
        texts: Sequence[str] | TranslateRequest,
        target_lang: str | None = None,
        *,
        source_lang: str | None = None,
        beam_size: int | None = None,
        max_length: int | None = None,
        n_best: int | None = None,
        return_alignments: bool | None = None,
        request_id: str | None = None,
    ) -> TranslateResponse:
        req = translate_request(
            texts,
            target_lang,
            source_lang=source_lang,
            beam_size=beam_size,
            max_length=max_length,
            n_best=n_best,
            return_alignments=return_alignments,
        )
        r = self._http.post("/v1/translate", json=self._body(req), headers=self._request_headers(request_id))
        return self._parse(r, TranslateResponse)

    def health(self) -> bool:
        """True when the server is up and its models are loaded (/health 200)."""
        return self._http.get("/health").status_code == 200

    def wait_healthy(self, timeout: float = 120.0, interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.health():
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.base_url} not healthy within {timeout:.0f} s")
            time.sleep(interval)

    def info(self) -> dict[str, Any]:
        """Models, versions, execution provider, batching and limits (/info)."""
        return self._check(self._http.get("/info")).json()

    def metrics(self) -> str:
        """The Prometheus exposition (/metrics)."""
        return self._check(self._http.get("/metrics")).text

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """asyncio client; one instance serves many concurrent requests over a connection pool."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        limits: httpx.Limits | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        super().__init__(base_url, api_key)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=self._headers,
            timeout=timeout,
            limits=limits or httpx.Limits(),
            transport=transport,
        )

    async def sentiment(
        self, texts: Sequence[str] | SentimentRequest, *, request_id: str | None = None
    ) -> SentimentResponse:
        r = await self._http.post(
            "/v1/sentiment", json=self._body(sentiment_request(texts)), headers=self._request_headers(request_id)
        )
        return self._parse(r, SentimentResponse)

    async def translate(
        self,
        texts: Sequence[str] | TranslateRequest,
        target_lang: str | None = None,
        *,
        source_lang: str | None = None,
        beam_size: int | None = None,
        max_length: int | None = None,
        n_best: int | None = None,
        return_alignments: bool | None = None,
        request_id: str | None = None,
    ) -> TranslateResponse:
        req = translate_request(
            texts,
            target_lang,
            source_lang=source_lang,
            beam_size=beam_size,
            max_length=max_length,
            n_best=n_best,
            return_alignments=return_alignments,
        )
        r = await self._http.post("/v1/translate", json=self._body(req), headers=self._request_headers(request_id))
        return self._parse(r, TranslateResponse)

    async def health(self) -> bool:
        return (await self._http.get("/health")).status_code == 200

    async def wait_healthy(self, timeout: float = 120.0, interval: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if await self.health():
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.base_url} not healthy within {timeout:.0f} s")
            await asyncio.sleep(interval)

    async def info(self) -> dict[str, Any]:
        return self._check(await self._http.get("/info")).json()

    async def metrics(self) -> str:
        return self._check(await self._http.get("/metrics")).text

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
