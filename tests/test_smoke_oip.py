"""deploy/smoke_oip.py, the Open Inference Protocol checks of deploy/smoke.sh: on plain data, that
each check passes what the server answers and refuses what it must not; and on the real server,
both halves as smoke.sh runs them (HTTP with the standard library, gRPC with tritonclient)."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest

from deploy import smoke_oip as S
from tests.conftest import ROOT

SCRIPT = ROOT / "deploy" / "smoke_oip.py"

V1_SENTIMENT = [
    {"label": "negative", "probabilities": {"negative": 0.97, "positive": 0.03}},
    {"label": "positive", "probabilities": {"negative": 0.03, "positive": 0.97}},
    {"label": "negative", "probabilities": {"negative": 0.888, "positive": 0.112}},
]
V1_TRANSLATE = [
    {
        "translation": "Ein Mann fährt Fahrrad.",
        "score": -0.3,
        "alternatives": [{"translation": "Ein Mann.", "score": -2}],
    },
    {
        "translation": "Zwei Hunde spielen im Schnee.",
        "score": -0.2,
        "alternatives": [{"translation": "Hunde.", "score": -4}],
    },
]


def sentiment_outputs() -> S.Outputs:
    return {
        "LABEL": ("BYTES", [3], ["negative", "positive", "negative"]),
        "PROBABILITIES": ("FP32", [3, 2], [0.97, 0.03, 0.03, 0.97, 0.888, 0.112]),
    }


def translate_outputs() -> S.Outputs:
    return {
        "TRANSLATION": (
            "BYTES",
            [2, 2],
            ["Ein Mann fährt Fahrrad.", "Ein Mann.", "Zwei Hunde spielen im Schnee.", "Hunde."],
        ),
        "SCORE": ("FP32", [2, 2], [-0.3, -2.0, -0.2, -4.0]),
    }


def test_sentiment_as_v1_passes():
    assert S.sentiment_problems(sentiment_outputs(), V1_SENTIMENT, S.SENTIMENT_TEXTS, shipped=True) == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda o: o.update(LABEL=("BYTES", [3], ["positive", "positive", "negative"])), "/v1 says"),
        (lambda o: o.update(LABEL=("BYTES", [1, 3], ["negative", "positive", "negative"])), "not BYTES [3]"),
        (lambda o: o.update(PROBABILITIES=("FP64", [3, 2], [0.97, 0.03, 0.03, 0.97, 0.888, 0.112])), "not FP32"),
        (lambda o: o.update(PROBABILITIES=("FP32", [3, 2], [0.97, 0.03, 0.03, 0.97, 0.888])), "5 elements"),
        (lambda o: o.update(PROBABILITIES=("FP32", [3, 2], [0.96, 0.04, 0.03, 0.97, 0.888, 0.112])), "differ"),
        (lambda o: o.pop("PROBABILITIES"), "outputs ['LABEL']"),
    ],
)
def test_sentiment_unlike_v1_fails(change, says):
    outputs = sentiment_outputs()
    change(outputs)
    found = S.sentiment_problems(outputs, V1_SENTIMENT, S.SENTIMENT_TEXTS, shipped=False)
    assert any(says in p for p in found), found


def test_shipped_labels_are_checked_only_on_the_shipped_models():
    v1 = copy.deepcopy(V1_SENTIMENT)
    v1[0]["label"] = "positive"  # the tiny test model may say anything, as long as both protocols agree
    outputs = sentiment_outputs()
    outputs["LABEL"] = ("BYTES", [3], ["positive", "positive", "negative"])
    assert S.sentiment_problems(outputs, v1, S.SENTIMENT_TEXTS, shipped=False) == []
    found = S.sentiment_problems(outputs, v1, S.SENTIMENT_TEXTS, shipped=True)
    assert found == ["sentiment: 'I hated it.' is positive, not negative"]


def test_translation_as_v1_passes():
    assert S.translation_problems("translate-en-de", translate_outputs(), V1_TRANSLATE, 2) == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda o: o["TRANSLATION"][2].reverse(), "/v1 says"),
        (lambda o: o.update(TRANSLATION=("BYTES", [2], ["a", "b"])), "not BYTES [2, 2]"),
        (lambda o: o.update(SCORE=("FP32", [2, 2], [-2.0, -0.3, -0.2, -4.0])), "SCORE[0, 0] is -2.0"),
        (lambda o: o.update(SCORE=("FP32", [2, 2], [-0.3, -2.0, -0.2, -0.1])), "not best first"),
        (lambda o: o["TRANSLATION"][2].__setitem__(2, " "), "TRANSLATION[1, 0] is empty"),
    ],
)
def test_translation_unlike_v1_fails(change, says):
    outputs = translate_outputs()
    change(outputs)
    found = S.translation_problems("translate-en-de", outputs, V1_TRANSLATE, 2)
    assert any(says in p for p in found), found


def metadata(name: str) -> dict:
    return {
        "name": name,
        "versions": ["2026-12-02+6d708f11"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}],
        "outputs": copy.deepcopy(S.OUTPUTS[S.family(name)]),
    }


def test_metadata_checks():
    versions = {"2026-12-02+6d708f11", "2026-11-22+cd81aa72"}
    assert S.metadata_problems(metadata("sentiment"), "sentiment", versions) == []
    assert S.metadata_problems(metadata("translate-en-fr"), "translate-en-fr", versions) == []
    assert "not [{'name': 'LABEL'" in S.metadata_problems(metadata("translate-en-de"), "sentiment", versions)[-1]
    bad = metadata("sentiment")
    bad["inputs"][0]["shape"] = [1]
    bad["versions"] = ["1"]
    found = S.metadata_problems(bad, "sentiment", versions)
    assert len(found) == 2 and "versions ['1']" in found[0] and "inputs" in found[1]


class FakeProtocol:
    """What a server speaking the protocol right would answer, changeable per test."""

    name = "fake"

    def __init__(self):
        self.meta = {"name": "rnn-serve", "version": "0.1.0", "extensions": ["binary_tensor_data"]}
        self.answers = {"sentiment": sentiment_outputs(), "translate-en-de": translate_outputs()}
        self.version = "2026-12-02+6d708f11"

    def ready(self):
        return True

    def model_ready(self, model):
        return model in self.answers

    def server_metadata(self):
        return self.meta

    def model_metadata(self, model):
        return metadata(model)

    def infer(self, model, texts, parameters):
        doc = {"model_name": model, "model_version": self.version, "id": "smoke"}
        return doc, self.answers[model]


def fake_v1(path, body):
    return {
        "/info": {"models": [{"name": "x", "version": "2026-12-02+6d708f11"}], "translation_pairs": ["en-de"]},
        "/v1/sentiment": {"results": V1_SENTIMENT},
        "/v1/translate": {"results": V1_TRANSLATE},
    }[path]


def test_a_run_says_what_it_checked():
    said, problems = S.run(FakeProtocol(), fake_v1, shipped=True)
    assert problems == []
    assert said[0] == "fake: ready; server rnn-serve 0.1.0, extensions binary_tensor_data"
    assert [s.split()[1] for s in said[1:]] == ["sentiment", "translate-en-de", "sentiment", "translate-en-de"]


def test_a_run_reports_what_is_wrong():
    p = FakeProtocol()
    p.meta = {"name": "triton"}
    assert S.run(p, fake_v1, shipped=False)[1] == ["fake: server metadata names 'triton', not rnn-serve"]
    p = FakeProtocol()
    p.answers.pop("translate-en-de")
    assert S.run(p, fake_v1, shipped=False)[1] == ["fake: model translate-en-de is not ready"]
    p = FakeProtocol()
    p.version = "other"
    found = S.run(p, fake_v1, shipped=False)[1]
    assert found[0].startswith("fake: sentiment answered as sentiment other") and len(found) == 2


def test_usage_and_an_unreachable_server_fail():
    assert S.main([]) == 2
    assert S.main(["http", "http://127.0.0.1:9"]) == 1  # discard port: refused


def test_both_halves_against_the_real_server(server):
    """As smoke.sh runs them: HTTP with the standard library only (-S -I: no site-packages, no
    project on the path), gRPC from stdin with the python that has tritonclient."""
    http = subprocess.run(
        [sys.executable, "-S", "-I", str(SCRIPT), "http", server.url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert http.returncode == 0, http.stderr
    grpc = subprocess.run(
        [sys.executable, "-", "grpc", server.grpc_url, server.url],
        stdin=SCRIPT.open(),
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
    )
    assert grpc.returncode == 0, grpc.stderr
    for out, p in ((http.stdout, "http"), (grpc.stdout, "grpc")):
        lines = out.splitlines()
        assert lines[0].startswith(f"{p}: ready; server rnn-serve")
        assert [ln.split()[1] for ln in lines[1:]] == ["sentiment", "translate-en-de", "sentiment", "translate-en-de"]
