"""The Open Inference Protocol against the real server, spoken by the ecosystem's own clients:
Triton's `tritonclient.http` (binary tensors, its default, and JSON) and `tritonclient.grpc`. No
client code of ours on that side: results are compared with /v1 for the same texts."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from tests.service_http import frozen, in_flight, inference_workers, metrics, sample, wait_for

REVIEWS = ["A wonderful, moving film.", "Two hours I will never get back.", "naïve ☕ but fine"]
SENTENCES = ["A dog runs in the park.", "Two men sit on a bench."]
MODELS = ("sentiment", "translate-en-de")


@pytest.fixture(scope="module")
def clients(server):
    """(name, client, module) for HTTP with binary tensors, HTTP with JSON tensors, and gRPC."""
    h = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
    g = tgrpc.InferenceServerClient(server.grpc_url)
    yield [("http-binary", h, thttp, True), ("http-json", h, thttp, False), ("grpc", g, tgrpc, True)]
    h.close()
    g.close()


def text_input(mod, texts: list[str], binary: bool = True, name: str = "TEXT", datatype: str = "BYTES"):
    x = mod.InferInput(name, [len(texts)], datatype)
    data = np.array([t.encode() for t in texts], dtype=object)
    if mod is thttp:
        x.set_data_from_numpy(data, binary_data=binary)
    else:
        x.set_data_from_numpy(data)
    return x


def outputs(mod, names: list[str], binary: bool):
    if mod is thttp:
        return [mod.InferRequestedOutput(n, binary_data=binary) for n in names]
    return [mod.InferRequestedOutput(n) for n in names]


def s(b) -> str:
    """A BYTES element as tritonclient gives it: bytes (binary tensors, gRPC) or str (JSON tensors)."""
    return b.decode() if isinstance(b, bytes) else b


def v1(server, path: str, body: dict) -> dict:
    r = httpx.post(f"{server.url}/v1/{path}", json=body, timeout=60)
    r.raise_for_status()
    return r.json()


def test_health_and_metadata_on_both_protocols(server, clients):
    versions = {m["name"]: m["version"] for m in httpx.get(f"{server.url}/info").json()["models"]}
    for _, c, mod, _ in clients[1:]:
        assert c.is_server_live() and c.is_server_ready()
        meta = c.get_server_metadata()
        meta = meta if isinstance(meta, dict) else {"name": meta.name, "extensions": list(meta.extensions)}
        assert meta["name"] == "rnn-serve" and "binary_tensor_data" in meta["extensions"]
        for name in MODELS:
            assert c.is_model_ready(name)
            md = c.get_model_metadata(name, as_json=True) if mod is tgrpc else c.get_model_metadata(name)
            assert md["name"] == name and md["versions"][0] in versions.values()
            assert md["inputs"] == [{"name": "TEXT", "datatype": "BYTES", "shape": ["-1"] if mod is tgrpc else [-1]}]
            assert c.is_model_ready(name, md["versions"][0])
            cfg = c.get_model_config(name, as_json=True) if mod is tgrpc else c.get_model_config(name)
            cfg = cfg.get("config", cfg)
            assert cfg["name"] == name and cfg["input"][0]["data_type"] == "TYPE_STRING"
        assert not c.is_model_ready("sentiment", "no-such-version") and not c.is_model_ready("nope")


def test_sentiment_over_every_protocol_equals_v1(server, clients):
    expected = v1(server, "sentiment", {"texts": REVIEWS})["results"]
    for kind, c, mod, binary in clients:
        r = c.infer(
            "sentiment",
            [text_input(mod, REVIEWS, binary)],
            outputs=outputs(mod, ["LABEL", "PROBABILITIES"], binary),
            request_id="req-7",
        )
        labels = [s(b) for b in r.as_numpy("LABEL")]
        probs = r.as_numpy("PROBABILITIES")
        assert labels == [e["label"] for e in expected], kind
        assert probs.shape == (3, 2) and probs.dtype == np.float32, kind
        want = np.array([[e["probabilities"]["negative"], e["probabilities"]["positive"]] for e in expected])
        np.testing.assert_allclose(probs, want, rtol=1e-6, err_msg=kind)
        resp = r.get_response(as_json=True) if mod is tgrpc else r.get_response()
        assert resp["id"] == "req-7" and resp["model_name"] == "sentiment", kind


def test_translation_with_parameters_equals_v1(server, clients):
    expected = v1(server, "translate", {"texts": SENTENCES, "target_lang": "de", "beam_size": 3, "n_best": 2})
    for kind, c, mod, binary in clients:
        r = c.infer(
            "translate-en-de",
            [text_input(mod, SENTENCES, binary)],
            outputs=outputs(mod, ["TRANSLATION", "SCORE"], binary),
            parameters={"beam_size": 3, "n_best": 2},
        )
        got = r.as_numpy("TRANSLATION")
        assert got.shape == (2, 2), kind
        for row, e in zip(got, expected["results"]):
            assert [s(b) for b in row] == [e["translation"], e["alternatives"][0]["translation"]], kind
        np.testing.assert_allclose(r.as_numpy("SCORE")[:, 0], [e["score"] for e in expected["results"]], atol=1e-4)
    # defaults: greedy-or-beam as /v1's defaults, one hypothesis per text
    default = v1(server, "translate", {"texts": SENTENCES[:1], "target_lang": "de"})["results"][0]["translation"]
    for _, c, mod, binary in clients:
        r = c.infer("translate-en-de", [text_input(mod, SENTENCES[:1], binary)])
        assert r.as_numpy("TRANSLATION").shape == (1, 1)
        assert s(r.as_numpy("TRANSLATION")[0, 0]) == default


def test_only_the_requested_outputs_come_back(clients):
    for kind, c, mod, binary in clients:
        r = c.infer("sentiment", [text_input(mod, REVIEWS[:1], binary)], outputs=outputs(mod, ["LABEL"], binary))
        assert r.as_numpy("PROBABILITIES") is None and r.as_numpy("LABEL").shape == (1,), kind


@pytest.mark.parametrize(
    ("case", "status", "code", "says"),
    [
        ("unknown model", "404", "StatusCode.NOT_FOUND", "unknown model 'nope'"),
        ("wrong datatype", "400", "StatusCode.INVALID_ARGUMENT", "it must be BYTES"),
        ("wrong shape", "400", "StatusCode.INVALID_ARGUMENT", "it must be [n]"),
        ("missing input", "400", "StatusCode.INVALID_ARGUMENT", "unexpected input WORDS"),
        ("empty text", "400", "StatusCode.INVALID_ARGUMENT", "TEXT[0] is empty or whitespace only"),
        ("unknown parameter", "400", "StatusCode.INVALID_ARGUMENT", "unknown request parameter 'beam'"),
        ("bad parameter", "400", "StatusCode.INVALID_ARGUMENT", "parameter beam_size"),
        ("unknown output", "400", "StatusCode.INVALID_ARGUMENT", "unknown output 'LOGITS'"),
    ],
)
def test_errors_say_what_to_fix_with_the_protocols_status(clients, case, status, code, says):
    for kind, c, mod, binary in clients:
        model, params, outs = "sentiment", None, None
        if case == "unknown model":
            model, inputs = "nope", [text_input(mod, ["x"], binary)]
        elif case == "wrong datatype":
            inputs = [mod.InferInput("TEXT", [1], "FP32")]
            inputs[0].set_data_from_numpy(
                np.array([1.0], dtype=np.float32), **({"binary_data": binary} if mod is thttp else {})
            )
        elif case == "wrong shape":
            inputs = [mod.InferInput("TEXT", [1, 2], "BYTES")]
            data = np.array([[b"a", b"b"]], dtype=object)
            inputs[0].set_data_from_numpy(data, **({"binary_data": binary} if mod is thttp else {}))
        elif case == "missing input":
            inputs = [text_input(mod, ["x"], binary, name="WORDS")]
        elif case == "empty text":
            inputs = [text_input(mod, ["  "], binary)]
        elif case == "unknown parameter":
            model, inputs, params = "translate-en-de", [text_input(mod, ["x"], binary)], {"beam": 2}
        elif case == "bad parameter":
            model, inputs, params = "translate-en-de", [text_input(mod, ["x"], binary)], {"beam_size": 99}
        else:
            inputs, outs = [text_input(mod, ["x"], binary)], outputs(mod, ["LOGITS"], binary)
        with pytest.raises(InferenceServerException) as e:
            c.infer(model, inputs, parameters=params, outputs=outs)
        assert says in e.value.message(), (kind, e.value.message())
        assert e.value.status() == (code if mod is tgrpc else status), kind


def test_statistics_count_every_protocols_requests(server, clients):
    h, g = clients[0][1], clients[2][1]
    before = h.get_inference_statistics("sentiment")["model_stats"][0]
    for _, c, mod, binary in clients:
        c.infer("sentiment", [text_input(mod, REVIEWS[:2], binary)])
    v1(server, "sentiment", {"texts": REVIEWS[:1]})
    with pytest.raises(InferenceServerException):
        h.infer("sentiment", [text_input(thttp, [" "])])
    after = g.get_inference_statistics("sentiment", as_json=True)["model_stats"][0]
    stats = after["inference_stats"]
    old = before["inference_stats"]
    assert int(stats["success"]["count"]) - old["success"]["count"] == 4
    assert int(stats["fail"]["count"]) - old["fail"].get("count", 0) == 1
    assert int(after["inference_count"]) - before["inference_count"] == 3 * 2 + 1
    for kind in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert int(stats[kind]["count"]) - old[kind]["count"] == 4
    assert int(stats["compute_infer"]["ns"]) > old["compute_infer"]["ns"]
    assert 1 <= int(after["execution_count"]) - before["execution_count"] <= 4


def test_requests_are_counted_by_protocol(server, clients):
    before = metrics(server.url)
    for _, c, mod, binary in clients:
        c.infer("sentiment", [text_input(mod, ["fine"], binary)])
    after = metrics(server.url)

    def delta(protocol: str) -> float:
        return sample(after, "rnnserve_requests_total", endpoint="sentiment", status="200", protocol=protocol) - sample(
            before, "rnnserve_requests_total", endpoint="sentiment", status="200", protocol=protocol
        )

    assert (delta("v2"), delta("grpc"), delta("v1")) == (2, 1, 0)
    assert sample(after, "rnnserve_request_duration_seconds_count", endpoint="sentiment", protocol="grpc") >= 1


def test_v1_and_v2_requests_share_a_batch(start_server):
    srv = start_server("--max-batch-size", "8", "--batch-timeout", "0.3", "--workers", "1")
    h = thttp.InferenceServerClient(f"127.0.0.1:{srv.port}")
    g = tgrpc.InferenceServerClient(srv.grpc_url)
    before = metrics(srv.url)
    calls = [
        lambda: v1(srv, "sentiment", {"texts": ["one"]}),
        lambda: h.infer("sentiment", [text_input(thttp, ["two"])]),
        lambda: g.infer("sentiment", [text_input(tgrpc, ["three"])]),
    ]
    threads = [threading.Thread(target=f) for f in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    after = metrics(srv.url)
    batches = sample(after, "rnnserve_batch_size_requests_count", endpoint="sentiment") - sample(
        before, "rnnserve_batch_size_requests_count", endpoint="sentiment"
    )
    assert (
        sample(after, "rnnserve_batch_size_requests_sum", endpoint="sentiment")
        - sample(before, "rnnserve_batch_size_requests_sum", endpoint="sentiment")
        == 3
    )
    assert batches < 3  # at least two of the three protocols' requests ran in one batch
    h.close()
    g.close()


def test_api_key_guards_v2_and_grpc_like_v1(start_server):
    srv = start_server(env={"RNNSERVE_API_KEY": "s3cret"})
    h = thttp.InferenceServerClient(f"127.0.0.1:{srv.port}")
    g = tgrpc.InferenceServerClient(srv.grpc_url)
    assert h.is_server_ready() and g.is_server_ready()  # health stays open for orchestrators
    for c, mod, status in ((h, thttp, "401"), (g, tgrpc, "StatusCode.UNAUTHENTICATED")):
        with pytest.raises(InferenceServerException) as e:
            c.infer("sentiment", [text_input(mod, ["x"])])
        assert e.value.status() == status and "API key" in e.value.message()
        r = c.infer("sentiment", [text_input(mod, ["x"])], headers={"x-api-key": "s3cret"})
        assert r.as_numpy("LABEL").shape == (1,)
    h.close()
    g.close()


def test_a_full_queue_refuses_v2_and_grpc_with_retry_after(start_server):
    srv = start_server("--max-queue", "1", "--workers", "1", "--request-timeout", "20")
    g = tgrpc.InferenceServerClient(srv.grpc_url)
    held: list = []
    with _frozen_workers(srv):
        first = threading.Thread(target=lambda: held.append(v1(srv, "sentiment", {"texts": ["hold the slot"]})))
        first.start()
        _wait_in_flight(srv)
        r = httpx.post(
            f"{srv.url}/v2/models/sentiment/infer",
            json={"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["x"]}]},
        )
        assert r.status_code == 429 and r.headers["retry-after"] == "1" and "server busy" in r.json()["error"]
        with pytest.raises(InferenceServerException) as e:
            g.infer("sentiment", [text_input(tgrpc, ["x"])])
        assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED" and "server busy" in e.value.message()
    first.join(60)
    assert held and held[0]["results"]  # the admitted request was answered once the workers resumed
    g.close()


def _frozen_workers(srv):
    return frozen(inference_workers(srv.proc.pid))


def _wait_in_flight(srv):
    wait_for(lambda: in_flight(srv.url, "sentiment") >= 1, what="the first request to be in flight")


def test_raw_http_errors_are_oip_error_bodies(server):
    """What no well-behaved client sends, over plain HTTP: each a 4xx {"error": ...} saying what to fix."""
    url = f"{server.url}/v2/models/sentiment/infer"
    ok_input = {"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["fine"]}
    cases = [
        (httpx.post(url, content=b"{not json"), 400, "not valid JSON"),
        (httpx.post(url, json={"inputs": [ok_input], "extra": 1}), 400, "unknown field extra"),
        (httpx.post(url, json={"inputs": []}), 400, "inputs"),
        (httpx.post(url, json={"inputs": [{**ok_input, "data": ["a", "b"]}]}), 400, "holds 1 elements; data has 2"),
        (
            httpx.post(url, content=b'{"inputs": []}', headers={"Inference-Header-Content-Length": "999"}),
            400,
            "Inference-Header-Content-Length",
        ),
        (
            httpx.post(
                url,
                content=b'{"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", '
                b'"parameters": {"binary_data_size": 9}}]}\x05\x00\x00\x00ab',
                headers={"Inference-Header-Content-Length": "104"},
            ),
            400,
            "runs past the end",
        ),
        (httpx.post(url, content=b"x" * 2_000_001), 413, "limit"),
        (httpx.get(f"{server.url}/v2/models/nope"), 404, "unknown model 'nope'"),
        (httpx.get(f"{server.url}/v2/models/sentiment/versions/0"), 404, "has no version '0'"),
        (httpx.get(f"{server.url}/v2/nowhere"), 404, "Not Found"),
        (httpx.delete(f"{server.url}/v2/models/sentiment/infer"), 405, "Method Not Allowed"),
    ]
    for r, status, says in cases:
        assert r.status_code == status, (r.request.url, r.text)
        assert says in r.json()["error"], (r.request.url, r.text)
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_compressed_requests_as_tritonclient_sends_them(server):
    import gzip
    import zlib

    h = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
    want = [e["label"] for e in v1(server, "sentiment", {"texts": REVIEWS})["results"]]
    for algorithm in ("gzip", "deflate"):
        r = h.infer("sentiment", [text_input(thttp, REVIEWS)], request_compression_algorithm=algorithm)
        assert [s(b) for b in r.as_numpy("LABEL")] == want, algorithm
    h.close()
    url = f"{server.url}/v2/models/sentiment/infer"
    bomb = gzip.compress(b'{"inputs": [' + b" " * 3_000_000 + b"]}")  # 3 MB once inflated, 3 KB sent
    cases = [
        (httpx.post(url, content=bomb, headers={"Content-Encoding": "gzip"}), 413, "once inflated"),
        (httpx.post(url, content=b"\x1f\x8b junk", headers={"Content-Encoding": "gzip"}), 400, "not valid gzip"),
        (
            httpx.post(url, content=zlib.compress(b"{}")[:-3], headers={"Content-Encoding": "deflate"}),
            400,
            "ends inside",
        ),
        (httpx.post(url, content=b"{}", headers={"Content-Encoding": "br"}), 415, "not supported"),
    ]
    for r, status, says in cases:
        assert r.status_code == status and says in r.json()["error"], r.text
