"""loadgen/transport.py: both transports against the real server, and the raw one's edge cases
(keep-alive reuse, idle connections, chunked bodies, a server that never answers or hangs up)
against small asyncio servers that behave that way on purpose."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from loadgen.transport import HttpxTransport, RawTransport, make_transport
from tests.conftest import free_port

SENTIMENT = json.dumps({"texts": ["A wonderful, superb film."]}).encode()

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _serve(handler: Handler) -> tuple[asyncio.Server, str]:
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    return srv, f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}"


@pytest.mark.parametrize("kind", ["httpx", "raw"])
def test_both_transports_speak_to_the_server(server, kind):
    async def go() -> None:
        async with make_transport(kind, server.url, timeout=30) as t:
            assert (await t.request("GET", "/health")).status == 200
            ok = await t.request("POST", "/v1/sentiment", SENTIMENT)
            assert ok.status == 200
            assert json.loads(ok.body)["results"][0]["label"] in ("negative", "positive")
            bad = await t.request("POST", "/v1/sentiment", b'{"texts": []}')
            assert bad.status == 422 and json.loads(bad.body)["detail"][0]["loc"][-1] == "texts"
            info = json.loads((await t.request("GET", "/info")).body)
            assert info["service"]["name"] == "rnn-serve"

    asyncio.run(go())


def test_raw_keeps_connections_alive_one_per_request_in_flight(server):
    async def go() -> None:
        async with RawTransport(server.url) as t:
            for _ in range(5):
                assert (await t.request("POST", "/v1/sentiment", SENTIMENT)).status == 200
            assert len(t._idle) == 1  # five requests one after another: one connection
            first = t._idle[0][1]
            await asyncio.gather(*(t.request("POST", "/v1/sentiment", SENTIMENT) for _ in range(4)))
            assert len(t._idle) == 4 and any(w is first for _, w, _ in t._idle)
            t.MAX_IDLE = 0.0  # every idle connection is now too old to trust: a fresh one
            await asyncio.sleep(0.01)
            assert (await t.request("GET", "/health")).status == 200
            assert len(t._idle) == 1 and t._idle[0][1] is not first

    asyncio.run(go())


def test_raw_reads_chunked_bodies_and_honours_connection_close():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async def go() -> None:
        srv, url = await _serve(handler)
        async with srv, RawTransport(url) as t:
            reply = await t.request("GET", "/anything")
            assert (reply.status, reply.body) == (200, b"hello, world")
            assert not t._idle  # the server said close

    asyncio.run(go())


@pytest.mark.parametrize("kind", ["httpx", "raw"])
def test_failures_become_timeout_or_connection_errors(kind):
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        await asyncio.sleep(5)  # never answers
        writer.close()

    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1000)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\ncut short")
        await writer.drain()
        writer.close()

    async def go() -> None:
        srv, url = await _serve(silent)
        async with srv, make_transport(kind, url, timeout=0.3) as t:
            with pytest.raises(TimeoutError):
                await t.request("POST", "/v1/sentiment", SENTIMENT)
            srv.close()
        srv, url = await _serve(hangs_up)
        async with srv, make_transport(kind, url, timeout=5) as t:
            with pytest.raises(ConnectionError):
                await t.request("GET", "/")
        async with make_transport(kind, f"http://127.0.0.1:{free_port()}", timeout=5) as t:
            with pytest.raises(ConnectionError):
                await t.request("GET", "/health")

    asyncio.run(go())


def test_raw_refuses_what_it_cannot_speak():
    with pytest.raises(ValueError, match="plain http only"):
        RawTransport("https://example.org")
    with pytest.raises(ValueError, match="transport must be one of"):
        make_transport("h2", "http://127.0.0.1:1")
    assert isinstance(make_transport("httpx", "https://example.org"), HttpxTransport)
    assert isinstance(make_transport("auto", "https://example.org"), HttpxTransport)
    assert isinstance(make_transport("auto", "http://127.0.0.1:1"), RawTransport)
