"""Tampered artifacts, the API key, and what the server lets out.

- A model file whose sha256 differs from its metadata, a truncated one, or a truncated one whose
  hash was updated to match: `python -m service` refuses to start, exits 2, and its error line
  names the file.
- The API key is compared with hmac.compare_digest (constant time) and never logged, whether it
  was given through the environment or the command line, at debug log level, including for
  requests that send a wrong key; no endpoint shows it.
- An internal error (forced: a corrupt metrics file) answers a JSON 500 with the request id and
  nothing of the error; the traceback goes to the log only, under the same request id. Corrupted
  request paths get 4xx, never a traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import httpx
import pytest

from service import admission as admission_module
from service.http.gateway import Gateway
from service.settings import Settings
from tests.service_http import inference_workers, log_records

KEY = "rk-7f3a9c1e5b-do-not-log-me"
WRONG = ["rk-7f3a9c1e5b-do-not-log-mf", "wrong-key-3b8e1d", "rk-7f3a9c1e5b"]  # near misses included
TRACE_MARKERS = ("Traceback", 'File "', "site-packages", "/service/", '.py", line')


def tamper_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def tamper_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def tamper_truncate_and_rehash(path: Path) -> None:
    """Truncated, with metadata.json updated to the truncated file's hash: the hashes match, ONNX
    Runtime must be the one to refuse it."""
    tamper_truncate(path)
    meta_path = path.parent / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["files"][path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "folder, name, tamper, says",
    [
        ("sentiment", "model.onnx", tamper_flip, "sha256 mismatch"),
        ("translate-en-de", "decoder.onnx", tamper_truncate, "sha256 mismatch"),
        ("translate-en-de", "encoder.onnx", tamper_truncate_and_rehash, "ONNX Runtime cannot load this model file"),
        ("sentiment", "model.onnx", tamper_truncate_and_rehash, "ONNX Runtime cannot load this model file"),
    ],
    ids=["flipped-byte", "truncated", "truncated-rehashed-translation", "truncated-rehashed-sentiment"],
)
def test_tampered_artifact_stops_start_up_naming_the_file(start_server, copy_models, folder, name, tamper, says):
    target = copy_models / folder / name
    tamper(target)
    srv = start_server(models=copy_models, wait=False)
    code = srv.proc.wait(120)
    failed = [r for r in log_records(srv) if r.get("event") == "startup_failed"]
    assert code == 2, srv.logs()[-2000:]
    assert len(failed) == 1, failed  # one clear line, not one per process
    assert str(target) in failed[0]["msg"] and says in failed[0]["msg"], failed[0]["msg"]
    assert "Traceback" not in failed[0]["msg"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/health", timeout=3)


# --------------------------------------------------------------------------------------------- API key


@pytest.fixture(scope="module", params=["env", "flag"])
def keyed_server(request, start_server):
    """The key from RNNSERVE_API_KEY (as documented) or from --api-key; debug logging either way."""
    if request.param == "env":
        srv = start_server("--log-level", "debug", env={"RNNSERVE_API_KEY": KEY})
    else:
        srv = start_server("--log-level", "debug", "--api-key", KEY)
    srv.how = request.param
    yield srv
    srv.stop()


def test_api_key_is_checked_and_never_logged_or_shown(keyed_server):
    url = keyed_server.url
    for headers in (
        {},
        *({"X-API-Key": w} for w in WRONG),
        *({"Authorization": f"Bearer {w}"} for w in WRONG),
        {"X-API-Key": KEY.upper()},
        {"X-API-Key": KEY + "x"},
        {"X-API-Key": KEY[:-1]},
    ):
        r = httpx.post(f"{url}/v1/sentiment", json={"texts": ["fine"]}, headers=headers)
        assert r.status_code == 401, (headers, r.status_code)
        assert r.headers["www-authenticate"] == "ApiKey"
        assert KEY not in r.text and all(w not in r.text for w in WRONG)
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        assert httpx.post(f"{url}/v1/sentiment", json={"texts": ["fine"]}, headers=headers).status_code == 200
        assert (
            httpx.post(
                f"{url}/v1/translate", json={"texts": ["A dog."], "target_lang": "de"}, headers=headers
            ).status_code
            == 200
        )
    # A key in the URL is not how to send it (401), and the URL does not carry it into the log either.
    assert httpx.post(f"{url}/v1/sentiment?api_key={KEY}", json={"texts": ["fine"]}).status_code == 401

    exposed = {
        path: httpx.get(f"{url}{path}", headers={"X-API-Key": KEY})
        for path in ("/health", "/info", "/metrics", "/openapi.json", "/docs", "/litserve/info", "/", "/no/such/path")
    }
    for path, r in exposed.items():
        assert KEY not in r.text and KEY not in str(r.headers), path
    assert exposed["/info"].json()["auth"] == {"api_key_required": True}

    logs = keyed_server.logs()
    assert any(r["level"] == "debug" for r in log_records(keyed_server))  # debug logging really is on
    assert KEY not in logs
    for w in WRONG:
        assert w not in logs
    if keyed_server.how == "env":  # the environment is not the command line (which `ps` shows)
        for pid in [keyed_server.proc.pid, *inference_workers(keyed_server.proc.pid)]:
            assert KEY.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()


def test_api_key_comparison_is_constant_time(monkeypatch):
    """Every /v1 request's key goes through hmac.compare_digest (in service.admission, which the
    gateway and gRPC share), whatever it looks like; nothing compares it with == (which stops at
    the first differing byte)."""
    calls: list[tuple[bytes, bytes]] = []

    def spy(a, b):
        calls.append((a, b))
        return hmac_compare(a, b)

    hmac_compare = admission_module.hmac.compare_digest
    monkeypatch.setattr(admission_module.hmac, "compare_digest", spy)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    gw = Gateway(app, Settings(api_key=KEY))

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=gw)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            out = []
            for headers in (
                {},
                {"X-API-Key": "x"},
                {"X-API-Key": KEY[:-1] + "X"},
                {"X-API-Key": KEY},
                {"Authorization": f"Bearer {KEY}"},
            ):
                out.append((await c.post("/v1/sentiment", json={"texts": ["a"]}, headers=headers)).status_code)
            out.append((await c.get("/health")).status_code)  # operations: no key asked for
            return out

    statuses = asyncio.run(go())
    assert statuses == [401, 401, 401, 200, 200, 200]
    assert calls == [
        (b"", KEY.encode()),
        (b"x", KEY.encode()),
        ((KEY[:-1] + "X").encode(), KEY.encode()),
        (KEY.encode(), KEY.encode()),
        (KEY.encode(), KEY.encode()),
    ]


# --------------------------------------------------------------------------------------------- errors


def _prometheus_dir(server) -> Path:
    worker = inference_workers(server.proc.pid)[0]
    env = dict(kv.split("=", 1) for kv in Path(f"/proc/{worker}/environ").read_text().split("\0") if "=" in kv)
    return Path(env["PROMETHEUS_MULTIPROC_DIR"])


def test_an_internal_error_shows_nothing_but_the_request_id(keyed_server):
    """A corrupt metrics file (say, a full disk) makes /metrics fail inside: the client gets a JSON
    500 naming its request id, and nothing of the error; the log has the traceback under that id."""
    bad = _prometheus_dir(keyed_server) / "counter_999999.db"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    try:
        r = httpx.get(f"{keyed_server.url}/metrics", headers={"X-Request-ID": "forced-500"})
    finally:
        bad.unlink()
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"] == "forced-500"
    assert r.json() == {"detail": "internal error; the request id is in the X-Request-ID header"}
    assert not any(m in r.text for m in TRACE_MARKERS) and KEY not in r.text
    logged = [x for x in log_records(keyed_server) if x.get("event") == "internal_error"]
    assert logged and logged[-1]["request_id"] == "forced-500" and "Traceback" in logged[-1]["exc"]
    assert not any(x.get("msg", "").startswith("Exception in ASGI application") for x in log_records(keyed_server))
    assert httpx.get(f"{keyed_server.url}/metrics").status_code == 200  # and it recovers


@pytest.mark.parametrize(
    "path",
    [
        "/v1/%ff%fe",
        "/v1/sentiment%00",
        "/v1/sentiment/..%2f..%2fetc%2fpasswd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/v1/" + "a" * 8000,
        "/v1/sentiment?x=%ff&y=" + "b" * 4000,
        "/v1//sentiment",
        "/v1/sentiment/",
        "/v1",
        "/v1/translate;jsessionid=1",
        "/docs/../v1/sentiment",
        "/openapi.json%00",
        "/v1/sentiment#frag",
    ],
)
def test_corrupted_paths_get_4xx_without_a_traceback(keyed_server, path):
    for method in ("GET", "POST"):
        r = httpx.request(
            method,
            f"{keyed_server.url}{path}",
            content=b'{"texts": ["a"]}',
            headers={"content-type": "application/json", "X-API-Key": KEY},
            timeout=30,
        )
        assert r.status_code < 500, (method, path, r.status_code, r.text[:300])
        if r.status_code != 200:
            assert not any(m in r.text for m in TRACE_MARKERS), r.text[:500]
        assert KEY not in r.text


def test_no_error_in_the_keyed_servers_log(keyed_server):
    """Runs last: of all the above, only the forced error was logged as one."""
    errors = [r for r in log_records(keyed_server) if r["level"] == "error"]
    assert all(r.get("event") == "internal_error" for r in errors), errors[:3]
    assert all(len(r.get("path", "")) < 300 for r in log_records(keyed_server))  # long paths are cut in the log
