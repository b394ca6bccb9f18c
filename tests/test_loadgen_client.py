"""The typed client (loadgen/client.py) against the real server over HTTP."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from loadgen.client import APIError, AsyncClient, Client
from service.schemas import SentimentRequest, SentimentResponse, TranslateRequest, TranslateResponse
from tests.conftest import free_port

API_KEY = "test-key-0123"


@pytest.fixture(scope="module")
def locked_server(start_server):
    """A server that wants an API key and queues at most one request per endpoint."""
    return start_server("--max-queue", "1", env={"RNNSERVE_API_KEY": API_KEY})


def test_sentiment_and_translate_return_the_schema_models(server):
    with Client(server.url) as c:
        r = c.sentiment(["A wonderful, superb film.", "Awful and boring."])
        assert isinstance(r, SentimentResponse)
        assert [x.label in ("negative", "positive") for x in r.results] == [True, True]
        assert all(abs(sum(x.probabilities.values()) - 1) < 1e-5 for x in r.results)
        assert r.model.name and r.model.version

        t = c.translate(["A dog runs in the park.", "A man sits."], "de", beam_size=3, n_best=2, return_alignments=True)
        assert isinstance(t, TranslateResponse) and len(t.results) == 2
        first = t.results[0]
        assert isinstance(first.translation, str)
        assert first.alternatives is not None and len(first.alternatives) == 1  # n_best=2: the other hypothesis
        assert first.alignments is not None
        assert len(first.alignments.weights) == len(first.alignments.target_tokens)

        # a pre-built request model goes through unchanged
        t2 = c.translate(TranslateRequest(texts=["A dog runs in the park."], target_lang="de", beam_size=1))
        assert t2.results[0].alternatives is None and t2.results[0].alignments is None
        assert c.sentiment(SentimentRequest(texts=["fine"])).results[0].label in ("negative", "positive")


def test_errors_carry_status_detail_and_our_request_id(server):
    with Client(server.url) as c:
        with pytest.raises(APIError) as e:
            c.sentiment([], request_id="client-test-422")
        assert e.value.status == 422
        assert e.value.request_id == "client-test-422"
        assert isinstance(e.value.detail, list) and e.value.detail[0]["loc"][-1] == "texts"

        with pytest.raises(APIError) as e:  # the tiny models serve en-de only
            c.translate(["A dog runs."], "fr")
        assert e.value.status == 422
        assert "unsupported language pair en-fr" in str(e.value.detail)
        assert "HTTP 422" in str(e.value)


def test_info_metrics_and_health(server):
    with Client(server.url) as c:
        assert c.health() is True
        c.wait_healthy(timeout=5)
        info = c.info()
        assert info["translation_pairs"] == ["en-de"]
        assert "rnnserve_requests_total" in c.metrics()


def test_async_client_concurrent_requests(server):
    async def go() -> list[SentimentResponse | TranslateResponse]:
        async with AsyncClient(server.url) as c:
            assert await c.health()
            jobs = [c.sentiment([f"A great film number {i}."]) for i in range(6)]
            jobs += [c.translate([f"A dog runs in the park {i}."], "de", beam_size=1) for i in range(3)]
            out = await asyncio.gather(*jobs)
            with pytest.raises(APIError) as e:
                await c.sentiment(["x" * 30_000])  # over the server's 20,000 characters per text
            assert e.value.status == 422
            assert (await c.info())["service"]["name"] == "rnn-serve"
            return out

    out = asyncio.run(go())
    assert [type(r) for r in out] == [SentimentResponse] * 6 + [TranslateResponse] * 3


def test_api_key_and_queue_full(locked_server):
    with Client(locked_server.url) as c, pytest.raises(APIError) as e:
        c.sentiment(["fine"])
    assert e.value.status == 401 and "X-API-Key" in str(e.value.detail)
    with Client(locked_server.url, api_key="wrong") as c, pytest.raises(APIError):
        c.sentiment(["fine"])
    with Client(locked_server.url, api_key=API_KEY) as c:
        assert c.sentiment(["fine"]).results[0].label in ("negative", "positive")
        assert c.health()  # /health needs no key

    async def burst() -> list[object]:
        async with AsyncClient(locked_server.url, api_key=API_KEY) as c:
            return await asyncio.gather(
                *(c.translate(["A man sits in the snow."], "de", beam_size=5) for _ in range(12)),
                return_exceptions=True,
            )

    out = asyncio.run(burst())
    busy = [r for r in out if isinstance(r, APIError)]
    assert any(isinstance(r, TranslateResponse) for r in out)
    assert busy and all(r.status == 429 and r.retry_after == 1.0 for r in busy), out


def test_non_json_error_from_a_proxy():
    """A 502 page from something in front of the server still becomes an APIError."""

    def proxy(request: httpx.Request) -> httpx.Response:
        assert request.headers["x-request-id"] and request.headers["x-api-key"] == "k"
        return httpx.Response(502, text="<html>Bad Gateway</html>", headers={"retry-after": "2.5"})

    with (
        Client("http://proxy.invalid", api_key="k", transport=httpx.MockTransport(proxy)) as c,
        pytest.raises(APIError) as e,
    ):
        c.sentiment(["fine"])
    assert (e.value.status, e.value.retry_after) == (502, 2.5)
    assert "Bad Gateway" in e.value.detail


def test_usage_errors_and_unreachable_server():
    with Client(f"http://127.0.0.1:{free_port()}", timeout=2) as c:
        with pytest.raises(TypeError):
            c.sentiment("one string, not a list")
        with pytest.raises(TypeError):
            c.translate(["A dog."])  # no target language
        with pytest.raises(httpx.ConnectError):
            c.sentiment(["fine"])
        with pytest.raises(TimeoutError):
            c.wait_healthy(timeout=0.5, interval=0.1)
