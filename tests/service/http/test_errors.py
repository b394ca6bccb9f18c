"""Every error a client can cause, over HTTP against the real server: the status, a message that
says what to fix, an X-Request-ID, and never a 500. Plus the API key, the bounded queue (429 with
Retry-After) and the request timeout (504)."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.service_http import burst, frozen, in_flight, inference_workers, log_records, metrics, sample, wait_for

S, T = "/v1/sentiment", "/v1/translate"
OK_T = {"target_lang": "de"}


def send(
    server,
    path: str,
    content: bytes | None = None,
    *,
    json_body=None,
    ctype: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    h = dict(headers or {})
    if ctype is not None and json_body is None:
        h["content-type"] = ctype
    return httpx.post(f"{server.url}{path}", content=content, json=json_body, headers=h, timeout=60)


def detail(r: httpx.Response) -> str:
    return json.dumps(r.json()["detail"])


def assert_error(r: httpx.Response, status: int, *needles: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"]
    text = detail(r)
    for n in needles:
        assert n in text, (n, text)


# --------------------------------------------------------------------------------------------- 422


@pytest.mark.parametrize("path", [S, T])
def test_malformed_json(server, path):
    for raw in (b'{"texts": ["a"', b'{"texts": ["a"]} trailing', b"{texts: ['a']}", b"\x00"):
        assert_error(send(server, path, raw), 422, "not valid JSON", "send a JSON object")


@pytest.mark.parametrize("path", [S, T])
def test_invalid_utf8(server, path):
    for raw in (b'{"texts": ["\xff\xfe"]}', b'{"texts": ["caf\xe9"]}', b'{"texts": ["\xed\xa0\x80"]}'):
        assert_error(send(server, path, raw), 422, "not valid UTF-8", "encode text as UTF-8")


@pytest.mark.parametrize(
    "body, where, needle",
    [
        ({"texts": "just a string"}, "texts", "valid list"),
        ({"texts": [1, 2]}, "texts", "valid string"),
        ({"texts": [None]}, "texts", "valid string"),
        ({"texts": [["nested"]]}, "texts", "valid string"),
        ({"texts": {"a": 1}}, "texts", "valid list"),
        (["a", "b"], "body", "must be a JSON object"),
        ("a string", "body", "must be a JSON object"),
        (None, "body", "must be a JSON object"),
        ({}, "texts", "is required"),
        ({"text": ["a"]}, "text", "unknown field text"),
    ],
)
def test_wrong_types_sentiment(server, body, where, needle):
    r = send(server, S, json.dumps(body).encode())
    assert_error(r, 422, needle)
    assert where in detail(r)


@pytest.mark.parametrize(
    "extra, needle",
    [
        ({"beam_size": "five"}, "valid integer"),
        ({"beam_size": 0}, "greater than or equal to 1"),
        ({"beam_size": 9}, "less than or equal to 8"),
        ({"beam_size": 2.5}, "valid integer"),
        ({"n_best": 0}, "greater than or equal to 1"),
        ({"n_best": 6, "beam_size": 5}, "n_best (6) cannot exceed beam_size (5)"),
        ({"max_length": 0}, "greater than or equal to 1"),
        ({"max_length": 10_000}, "less than or equal to 256"),
        ({"return_alignments": "perhaps"}, "valid boolean"),
        ({"target_lang": 7}, "valid string"),
        ({"target_lang": None}, "valid string"),
    ],
)
def test_wrong_types_translate(server, extra, needle):
    assert_error(send(server, T, json_body={"texts": ["A dog runs."], **OK_T, **extra}), 422, needle)


def test_missing_target_language(server):
    assert_error(send(server, T, json_body={"texts": ["A dog runs."]}), 422, "target_lang is required")


def test_empty_body(server):
    assert_error(send(server, S, b""), 422, "request body is empty")


@pytest.mark.parametrize("path, extra", [(S, {}), (T, OK_T)])
def test_empty_or_whitespace_text(server, path, extra):
    assert_error(send(server, path, json_body={"texts": [], **extra}), 422, "at least 1")
    for blank in ("", " ", "\n\t  \r\n", "\u3000"):
        r = send(server, path, json_body={"texts": ["fine", blank], **extra})
        assert_error(r, 422, "texts[1] is empty or whitespace only; send some text")


@pytest.mark.parametrize("path, extra", [(S, {}), (T, OK_T)])
def test_too_many_texts(server, path, extra):
    assert send(server, path, json_body={"texts": ["ok"] * 64, **extra}).status_code == 200
    assert_error(
        send(server, path, json_body={"texts": ["ok"] * 65, **extra}),
        422,
        "at most 64 texts per request (got 65); split the request",
    )


@pytest.mark.parametrize("path, extra, limit", [(S, {}, 20_000), (T, OK_T, 1_000)])
def test_too_long_text(server, path, extra, limit):
    assert send(server, path, json_body={"texts": ["a" * limit], **extra}).status_code == 200
    assert_error(
        send(server, path, json_body={"texts": ["ok", "a" * (limit + 1)], **extra}),
        422,
        f"texts[1] has {limit + 1} characters; the limit is {limit}",
    )


# --------------------------------------------------------------------------------------------- 413, 415, 405


def test_payload_over_the_limit_is_413(server):
    big = json.dumps({"texts": ["a" * 1000] * 2100}).encode()  # > 2 MB (the default limit)
    assert_error(send(server, S, big), 413, "the limit is 2000000")

    def chunks():  # no Content-Length: the limit holds while streaming
        for _ in range(300):
            yield b"a" * 10_000

    r = httpx.post(f"{server.url}{S}", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert_error(r, 413, "exceeds the limit of 2000000 bytes")


def test_wrong_content_type_is_415(server):
    body = b'{"texts": ["fine"]}'
    for ctype in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ):
        assert_error(send(server, S, body, ctype=ctype), 415, "Content-Type must be application/json")
    assert_error(send(server, S, body, ctype=None), 415, "Content-Type must be application/json")
    # parameters are fine
    assert send(server, S, body, ctype="application/json; charset=utf-8").status_code == 200


def test_wrong_method_is_405(server):
    r = httpx.get(f"{server.url}{S}")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.headers["x-request-id"]


# --------------------------------------------------------------------------------------------- never a 500


ODD = [
    "\u200b",
    "\x00",
    "<br />",
    "<br /><br /><b>",
    "\ud800",
    "a\udfffb",
    "😀" * 50,
    "\u0301",
    "____",
    "ﷺ",
    "\u202etxet lmth",
    "x" * 999,
    "a\nb\tc\r",
    "!!!!!!!!!!!!!!!!!!!!!!",
    "日本語のテキスト",
    "اَلْعَرَبِيَّةُ",
    "-" * 500,
]


@pytest.mark.parametrize("path, extra", [(S, {}), (T, {**OK_T, "return_alignments": True, "n_best": 2})])
def test_odd_text_is_answered_not_a_500(server, path, extra):
    rng = random.Random(0)
    texts = ODD + ["".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(1, 300))) for _ in range(20)]
    texts = [t for t in texts if t.strip()]
    r = send(server, path, json.dumps({"texts": texts, **extra}).encode())
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == len(texts)


def test_no_server_error_was_logged(server):
    """Runs after the tests above on the same server: nothing they sent caused an internal error."""
    bad = [r for r in log_records(server) if r.get("status", 0) >= 500 or r["msg"] == "unhandled error"]
    assert not bad, bad[:3]


# --------------------------------------------------------------------------------------------- API key


@pytest.fixture(scope="module")
def keyed_server(start_server):
    """The key comes from the environment (RNNSERVE_API_KEY), as documented; device auto falls back
    to CPU on this GPU-less machine."""
    srv = start_server("--device", "auto", env={"RNNSERVE_API_KEY": "s3cret-key"})
    yield srv
    srv.stop()


def test_api_key_required_on_v1(keyed_server):
    body = {"texts": ["fine"]}
    for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}, {"Authorization": "Bearer wrong"}):
        r = send(keyed_server, S, json_body=body, headers=headers)
        assert_error(r, 401, "API key", "X-API-Key")
    assert send(keyed_server, T, json_body={"texts": ["a"], **OK_T}).status_code == 401
    assert send(keyed_server, S, json_body=body, headers={"X-API-Key": "s3cret-key"}).status_code == 200
    assert send(keyed_server, S, json_body=body, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    # Before anything else: a request without the key learns nothing about its body.
    assert send(keyed_server, S, b"not json", headers={}).status_code == 401
    for path in ("/health", "/metrics", "/info"):  # operations stay open (orchestrators, scrapers)
        assert httpx.get(f"{keyed_server.url}{path}").status_code == 200
    assert httpx.get(f"{keyed_server.url}/info").json()["auth"] == {"api_key_required": True}
    fams = metrics(keyed_server.url)
    assert sample(fams, "rnnserve_requests_rejected_total", endpoint="sentiment", reason="unauthorized") >= 5
    assert "s3cret-key" not in keyed_server.logs()


def test_device_auto_falls_back_to_cpu_with_a_warning(keyed_server):
    info = httpx.get(f"{keyed_server.url}/info").json()
    assert info["runtime"]["device_requested"] == "auto"
    assert all(m["providers"] == ["CPUExecutionProvider"] for m in info["models"])
    warnings = [r for r in log_records(keyed_server) if r["level"] == "warning" and "CPU" in r["msg"]]
    assert warnings, "no warning that auto fell back to CPU"


# --------------------------------------------------------------------------------------------- 429, 504


@pytest.fixture(scope="module")
def small_server(start_server):
    """Batch size 1, two requests in flight at most, 0.3 s in the queue at most."""
    srv = start_server("--max-batch-size", "1", "--max-queue", "2", "--request-timeout", "0.3")
    yield srv
    srv.stop()


def heavy_translation() -> dict:
    """The most work one request may ask for: 64 texts of 1,000 characters, beam 8 (a fraction of a
    second for the tiny model)."""
    rng = random.Random(1)
    words = [
        "a",
        "man",
        "dog",
        "woman",
        "child",
        "runs",
        "sits",
        "plays",
        "in",
        "the",
        "park",
        "snow",
        "street",
        "red",
        "big",
        "small",
        "water",
    ]
    texts = [" ".join(rng.choice(words) for _ in range(250))[:1000] for _ in range(64)]
    return {"texts": texts, "target_lang": "de", "beam_size": 8, "max_length": 256}


def _in_flight(server) -> float:
    return in_flight(server.url, "translate")


def _start_heavy(server, n: int) -> tuple[list[threading.Thread], list[httpx.Response]]:
    """n heavy translations, each accepted (in flight) before the next is sent."""
    out: list[httpx.Response] = []
    threads = []
    for k in range(n):
        t = threading.Thread(
            target=lambda: out.append(httpx.post(f"{server.url}{T}", json=heavy_translation(), timeout=60))
        )
        t.start()
        threads.append(t)
        wait_for(lambda k=k: _in_flight(server) >= k + 1, timeout=30, every=0.01, what=f"{k + 1} request(s) in flight")
    return threads, out


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the worker processes")
def test_request_past_its_timeout_gets_504(small_server):
    # The inference workers are frozen before the request is sent and for longer than the 0.3 s
    # timeout, so that it waits past it for certain, however fast the model is; the next one is
    # answered as usual.
    workers = inference_workers(small_server.proc.pid)
    assert workers
    with frozen(workers):
        threads, out = _start_heavy(small_server, 1)
        time.sleep(0.6)
    for t in threads:
        t.join(60)
    out.append(httpx.post(f"{small_server.url}{T}", json={"texts": ["A dog runs."], **OK_T}, timeout=60))
    assert [r.status_code for r in out] == [504, 200], [r.text[:200] for r in out]
    late = next(r for r in out if r.status_code == 504)
    assert_error(late, 504, "waited more than 0.3 s", "retry later")
    fams = metrics(small_server.url)
    assert sample(fams, "rnnserve_requests_total", endpoint="translate", status="504") >= 1


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the worker processes")
def test_full_queue_gets_429_with_retry_after(small_server):
    # Freeze the inference workers so the two accepted requests cannot finish while the burst
    # arrives: the queue is full for certain, however fast or loaded the machine is.
    workers = inference_workers(small_server.proc.pid)
    assert workers
    with frozen(workers):
        threads, out = _start_heavy(small_server, 2)  # both slots taken
        rejected = burst(small_server.url, T, [{"texts": [f"A dog runs {i}."], **OK_T} for i in range(8)])
    assert len(rejected) == 8
    for r in rejected:
        assert_error(r, 429, "server busy", "retry")
        assert int(r.headers["retry-after"]) >= 1
    for t in threads:
        t.join(60)
    assert all(r.status_code in (200, 504) for r in out)
    wait_for(lambda: _in_flight(small_server) == 0, timeout=10, what="queue drained")
    ok = send(small_server, T, json_body={"texts": ["A dog runs."], **OK_T})
    assert ok.status_code == 200, ok.text  # capacity is back once the queue drains
    fams = metrics(small_server.url)
    assert sample(fams, "rnnserve_requests_rejected_total", endpoint="translate", reason="queue_full") >= 8
    assert sample(fams, "rnnserve_requests_total", endpoint="translate", status="429") >= 8


def test_a_family_the_server_was_started_without_is_a_clear_404(start_server, copy_models):
    """A models directory with translators only: /v1/sentiment says what is missing (it was a
    500), translation and /info still work."""
    import shutil

    shutil.rmtree(copy_models / "sentiment")
    srv = start_server(models=copy_models)
    r = httpx.post(f"{srv.url}/v1/sentiment", json={"texts": ["fine"]}, timeout=30)
    assert r.status_code == 404, r.text
    assert "no sentiment model" in r.json()["detail"] and "/info" in r.json()["detail"]
    r = httpx.post(f"{srv.url}/v1/translate", json={"texts": ["a dog runs"], "target_lang": "de"}, timeout=60)
    assert r.status_code == 200, r.text
    tasks = {m["task"] for m in httpx.get(f"{srv.url}/info", timeout=10).json()["models"]}
    assert tasks == {"translation"}
    srv.stop()
