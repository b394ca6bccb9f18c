"""The real server, over HTTP: the happy path of both endpoints and the operations endpoints."""

import httpx
from prometheus_client.parser import text_string_to_metric_families


def test_sentiment_and_translate_roundtrip(server):
    r = httpx.post(f"{server.url}/v1/sentiment", json={"texts": ["A wonderful, superb film.", "Awful and boring."]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 2
    for res in body["results"]:
        assert res["label"] in ("positive", "negative")
        assert abs(sum(res["probabilities"].values()) - 1) < 1e-5
        assert res["score"] == max(res["probabilities"].values())
    r = httpx.post(f"{server.url}/v1/translate", json={"texts": ["A dog runs in the park."], "target_lang": "de"})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["results"][0]["translation"], str)
    assert r.headers["x-request-id"]


def test_metrics_parse(server):
    httpx.post(f"{server.url}/v1/sentiment", json={"texts": ["fine"]})
    text = httpx.get(f"{server.url}/metrics").text
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"rnnserve_requests", "rnnserve_batch_size_requests", "rnnserve_model_info"} <= names
