"""The real server over HTTP: the sentiment and translation contracts, /health (503 until every
model is ready), /info, /docs and /openapi.json, request ids and JSON logs.

Results are compared with the same artifacts run in-process (SentimentModel, TranslationModel):
the tiny test models are barely trained, so what matters is that the server returns what the
model computes, for the right text, in the right order."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service_http import burst, inference_workers, log_records, wait_for

REVIEWS = [
    "A wonderful, superb film. I loved it.",
    "Awful and boring, a waste of time.",
    "The plot was dull but the acting was brilliant.",
    "Great!",
    "<br /><br />It was really terrible.",
]
SENTENCES = [
    "A dog runs in the park.",
    "A small child plays in the snow.",
    "A woman sits in the street.",
    "A big red dog runs in the water.",
]


def post(server, path: str, body, **kw) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kw)


# --------------------------------------------------------------------------------------------- sentiment


def test_sentiment_results_are_the_models_in_request_order(server, sentiment_model):
    r = post(server, "/v1/sentiment", {"texts": REVIEWS})
    assert r.status_code == 200, r.text
    body = r.json()
    meta = sentiment_model.meta
    assert body["model"] == {"name": meta["name"], "version": meta["version"]}
    expected = sentiment_model.predict(REVIEWS)
    assert len(body["results"]) == len(REVIEWS)
    for res, probs in zip(body["results"], expected, strict=True):
        assert set(res["probabilities"]) == {"negative", "positive"}
        got = [res["probabilities"][label] for label in sentiment_model.labels]
        np.testing.assert_allclose(got, probs, atol=1e-5)
        assert abs(sum(got) - 1) < 1e-5
        assert res["label"] == sentiment_model.labels[int(np.argmax(probs))]
        assert res["score"] == max(res["probabilities"].values())
    # Reversed order in, reversed results out; and one text at a time gives the same numbers.
    rev = post(server, "/v1/sentiment", {"texts": REVIEWS[::-1]}).json()["results"]
    assert [x["label"] for x in rev] == [x["label"] for x in body["results"]][::-1]
    np.testing.assert_allclose([x["score"] for x in rev], [x["score"] for x in body["results"]][::-1], atol=1e-5)
    one = post(server, "/v1/sentiment", {"texts": [REVIEWS[2]]}).json()["results"][0]
    np.testing.assert_allclose(
        list(one["probabilities"].values()), list(body["results"][2]["probabilities"].values()), atol=1e-5
    )


def test_sentiment_concurrent_requests_each_get_their_own_results(server, sentiment_model):
    """Requests batched together in the worker are split back to the right callers."""
    texts = [f"{REVIEWS[i % len(REVIEWS)]} {'really ' * (i % 7)}" for i in range(24)]
    expected = sentiment_model.predict(texts)
    responses = burst(server.url, "/v1/sentiment", [{"texts": [t]} for t in texts])
    for r, probs in zip(responses, expected, strict=True):
        assert r.status_code == 200, r.text
        got = r.json()["results"]
        assert len(got) == 1
        np.testing.assert_allclose([got[0]["probabilities"][k] for k in sentiment_model.labels], probs, atol=1e-5)


# --------------------------------------------------------------------------------------------- translation


def test_translate_results_are_the_models_in_request_order(server, translator):
    r = post(server, "/v1/translate", {"texts": SENTENCES, "source_lang": "en", "target_lang": "de"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == {"name": translator.name, "version": translator.version}
    hyps = translator.translate(SENTENCES, beam_size=5)
    assert [x["translation"] for x in body["results"]] == [translator.detok(h[0]) for h in hyps]
    for res, h in zip(body["results"], hyps, strict=True):
        assert res["score"] == pytest.approx(h[0].score, abs=1e-4)
        assert "alternatives" not in res and "alignments" not in res  # only when asked for
    rev = post(server, "/v1/translate", {"texts": SENTENCES[::-1], "target_lang": "de"}).json()["results"]
    assert [x["translation"] for x in rev] == [x["translation"] for x in body["results"]][::-1]


@pytest.mark.parametrize("beam", range(1, 9))
def test_translate_every_beam_size(server, translator, beam):
    r = post(server, "/v1/translate", {"texts": SENTENCES[:2], "target_lang": "de", "beam_size": beam})
    assert r.status_code == 200, r.text
    expected = [translator.detok(h[0]) for h in translator.translate(SENTENCES[:2], beam_size=beam)]
    assert [x["translation"] for x in r.json()["results"]] == expected


def test_translate_n_best_alternatives(server, translator):
    r = post(server, "/v1/translate", {"texts": SENTENCES[:2], "target_lang": "de", "beam_size": 4, "n_best": 3})
    assert r.status_code == 200, r.text
    hyps = translator.translate(SENTENCES[:2], beam_size=4, n_best=3)
    for res, h in zip(r.json()["results"], hyps, strict=True):
        alts = res["alternatives"]
        assert len(alts) == len(h) - 1 == 2
        assert [a["translation"] for a in alts] == [translator.detok(x) for x in h[1:]]
        scores = [res["score"]] + [a["score"] for a in alts]
        assert scores == sorted(scores, reverse=True)


def test_translate_alignments(server, translator):
    r = post(server, "/v1/translate", {"texts": SENTENCES[:2], "target_lang": "de", "return_alignments": True})
    assert r.status_code == 200, r.text
    src_ids = translator.encode_texts(SENTENCES[:2])
    for res, ids in zip(r.json()["results"], src_ids, strict=True):
        a = res["alignments"]
        assert a["source_tokens"] == translator.src_tok.pieces(ids)
        assert len(a["weights"]) == len(a["target_tokens"]) > 0
        for row in a["weights"]:
            assert len(row) == len(a["source_tokens"])
            assert all(0 <= w <= 1 and w == round(w, 4) for w in row)
            assert sum(row) == pytest.approx(1, abs=0.01)  # attention over the source


@pytest.mark.parametrize("max_length", [1, 3])
def test_translate_max_length_is_respected(server, max_length):
    body = {"texts": SENTENCES, "target_lang": "de", "max_length": max_length, "return_alignments": True}
    r = post(server, "/v1/translate", body)
    assert r.status_code == 200, r.text
    for res in r.json()["results"]:
        assert len(res["alignments"]["target_tokens"]) <= max_length


def test_unsupported_language_pair_lists_the_supported_ones(server):
    for src, tgt in (("en", "fr"), ("de", "en"), ("en", "xx")):
        r = post(server, "/v1/translate", {"texts": ["A dog."], "source_lang": src, "target_lang": tgt})
        assert r.status_code == 422, r.text
        msg = json.dumps(r.json()["detail"])
        assert f"unsupported language pair {src}-{tgt}" in msg and "supported: en-de" in msg


# --------------------------------------------------------------------------------------------- operations


def test_info_reports_models_provider_and_batching(server, models_dir):
    from service.runtime.providers import CPU, threads_per_session, workers_per_family

    info = httpx.get(f"{server.url}/info").json()
    workers = workers_per_family(0, CPU)  # the default: one single-threaded worker per core, on CPU
    by_name = {m["name"]: m for m in info["models"]}
    for folder in ("sentiment", "translate-en-de"):
        meta = json.loads((models_dir / folder / "metadata.json").read_text())
        m = by_name[meta["name"]]
        assert m["version"] == meta["version"]
        assert m["metrics"] == meta["metrics"]
        assert m["providers"] == ["CPUExecutionProvider"]  # what the session runs on, read back from it
        assert m["workers"] == workers  # every worker reported what it loaded
        assert m["precision"] == "fp32"  # the tiny sentiment artifact ships no int8 variant
        if folder == "sentiment":  # what it learned from, and the calibration the service applies
            assert m["training_data"] == meta["data"] and set(m["training_data"]["sources"]) >= {"imdb", "sst2"}
            assert m["temperature"] == meta["temperature"]
    assert (
        by_name[json.loads((models_dir / "translate-en-de" / "metadata.json").read_text())["name"]]["pair"] == "en-de"
    )
    assert info["translation_pairs"] == ["en-de"]
    assert info["batching"] == {
        "max_batch_size": 16,
        "batch_timeout_s": 0.01,
        "enabled": True,
        "sentiment_token_budget": 1024,
    }
    assert info["runtime"]["device_requested"] == "cpu"
    assert info["runtime"]["workers_per_family"] == workers
    assert info["runtime"]["threads_per_session"] == threads_per_session(workers)
    assert info["runtime"]["spin_wait"] is True
    assert info["limits"]["max_texts"] == 64 and info["auth"] == {"api_key_required": False}


def test_docs_and_openapi_describe_requests_responses_and_errors(server):
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = httpx.get(f"{server.url}/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for path, req, resp in (
        ("/v1/sentiment", "SentimentRequest", "SentimentResponse"),
        ("/v1/translate", "TranslateRequest", "TranslateResponse"),
    ):
        op = spec["paths"][path]["post"]
        body = op["requestBody"]["content"]["application/json"]
        assert body["schema"]["$ref"] == f"#/components/schemas/{req}"
        assert body["examples"]  # named request examples for /docs
        ok = op["responses"]["200"]["content"]["application/json"]["schema"]
        assert ok["$ref"] == f"#/components/schemas/{resp}"
        for code in ("401", "413", "415", "422", "429", "504"):
            err = op["responses"][code]["content"]["application/json"]
            assert err["schema"]["$ref"] == "#/components/schemas/ErrorResponse" and "detail" in err["example"]
        assert "Retry-After" in op["responses"]["429"]["headers"]
        assert schemas[req]["examples"] and schemas[resp]["examples"]
    texts = schemas["SentimentRequest"]["properties"]["texts"]
    assert texts["maxItems"] == 64 and texts["items"]["maxLength"] == 20_000
    assert "en-de" in json.dumps(schemas["TranslateRequest"]["properties"]["target_lang"])
    assert {"/health", "/info", "/metrics"} <= set(spec["paths"])


def test_every_response_carries_a_request_id(server):
    mine = f"test-{uuid.uuid4().hex[:12]}"
    calls = [
        lambda h: httpx.post(f"{server.url}/v1/sentiment", json={"texts": ["fine"]}, headers=h),
        lambda h: httpx.post(f"{server.url}/v1/sentiment", json={"texts": [""]}, headers=h),  # 422
        lambda h: httpx.post(f"{server.url}/v1/sentiment", content=b"x", headers={**h, "content-type": "text/plain"}),
        lambda h: httpx.get(f"{server.url}/health", headers=h),
        lambda h: httpx.get(f"{server.url}/info", headers=h),
        lambda h: httpx.get(f"{server.url}/metrics", headers=h),
        lambda h: httpx.get(f"{server.url}/no/such/path", headers=h),
    ]
    for call in calls:
        echoed = call({"X-Request-ID": mine})
        assert echoed.headers["x-request-id"] == mine, echoed.request.url
        fresh = call({})
        assert len(fresh.headers["x-request-id"]) == 32 and fresh.headers["x-request-id"] != mine
        # An id that could forge log lines or headers is replaced, not echoed.
        for bad in ("bad id with spaces", "x" * 200):
            assert call({"X-Request-ID": bad}).headers["x-request-id"] != bad


def test_logs_are_json_lines_carrying_the_request_id(server):
    rid = f"logtest-{uuid.uuid4().hex[:12]}"
    post(server, "/v1/translate", {"texts": ["A dog runs."], "target_lang": "de"}, headers={"X-Request-ID": rid})
    post(server, "/v1/sentiment", {"texts": []}, headers={"X-Request-ID": rid + "-bad"})

    def mine() -> list[dict]:
        return [r for r in log_records(server) if r.get("request_id", "").startswith(rid)]

    recs = wait_for(lambda: len(mine()) >= 2 and mine(), timeout=10, what="request log lines")
    by_id = {r["request_id"]: r for r in recs}
    assert by_id[rid]["path"] == "/v1/translate" and by_id[rid]["status"] == 200 and by_id[rid]["duration_ms"] > 0
    assert by_id[rid + "-bad"]["status"] == 422
    for r in log_records(server):  # every line of the whole log: one JSON object with the basics
        assert {"ts", "level", "logger", "msg"} <= r.keys()


# --------------------------------------------------------------------------------------------- readiness


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the worker processes")
def test_health_is_503_until_every_model_is_ready(start_server):
    """The translation worker is frozen (SIGSTOP) as soon as it is spawned, long before its setup
    (imports, loading, golden check, warm-up) can finish: the sentiment worker gets ready, the HTTP
    server starts, and /health must say 503 until translation is ready too."""
    srv = start_server("--workers", "1", wait=False)  # one worker per family: the second is translation's
    workers = wait_for(
        lambda: len(w := inference_workers(srv.proc.pid)) >= 2 and w,
        timeout=120,
        every=0.002,
        what="two inference workers spawned",
    )
    translation = workers[1]
    os.kill(translation, signal.SIGSTOP)
    try:
        first = wait_for(lambda: _status(srv, "/health"), timeout=120, what="HTTP server up")
        assert first == 503
        info = httpx.get(f"{srv.url}/info").json()
        assert [m["task"] for m in info["models"]] == ["sentiment"]  # the frozen worker reported nothing
        for _ in range(5):
            time.sleep(0.2)
            assert _status(srv, "/health") == 503
        assert httpx.post(f"{srv.url}/v1/sentiment", json={"texts": ["fine"]}, timeout=30).status_code == 200
        # A translation request waits for its worker rather than fails.
        waiting: list[httpx.Response] = []
        t = threading.Thread(
            target=lambda: waiting.append(
                httpx.post(f"{srv.url}/v1/translate", json={"texts": ["A dog runs."], "target_lang": "de"}, timeout=60)
            )
        )
        t.start()
        time.sleep(0.3)
        assert not waiting
    finally:
        os.kill(translation, signal.SIGCONT)
    srv.wait_healthy()
    assert sorted(m["task"] for m in httpx.get(f"{srv.url}/info").json()["models"]) == ["sentiment", "translation"]
    t.join(60)
    assert waiting and waiting[0].status_code == 200, waiting
    srv.stop()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc to find the worker processes")
def test_workers_dying_during_start_up_make_the_server_exit(start_server):
    """Killed before they report (OOM killer, a crash while loading): exit 2 and say so, instead of
    waiting forever for a worker that will never be ready."""
    srv = start_server(wait=False)
    workers = wait_for(
        lambda: len(w := inference_workers(srv.proc.pid)) >= 2 and w,
        timeout=120,
        every=0.002,
        what="two inference workers spawned",
    )
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert srv.proc.wait(60) == 2
    failed = [r for r in log_records(srv) if r.get("event") == "startup_failed"]
    assert failed and "exited during start-up" in failed[-1]["msg"]


def _status(srv, path: str) -> int | None:
    try:
        return httpx.get(f"{srv.url}{path}", timeout=2).status_code
    except httpx.HTTPError:
        return None
