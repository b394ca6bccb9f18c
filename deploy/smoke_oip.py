"""The Open Inference Protocol (KServe v2) checks of deploy/smoke.sh: over HTTP (/v2, JSON tensors)
or over gRPC (inference.GRPCInferenceService), every answer compared with what /v1 answers for the
same texts.

    python3 deploy/smoke_oip.py http http://127.0.0.1:18080 [--shipped]     # standard library only
    docker exec -i CONTAINER python - grpc 127.0.0.1:18081 http://127.0.0.1:18080 [--shipped] \\
        < deploy/smoke_oip.py        # inside the container, with the image's tritonclient.grpc

On either protocol: the server is live and ready and names itself rnn-serve; every model (sentiment,
and translate-xx-yy for each pair /info lists) is ready, and its metadata has input TEXT BYTES [-1],
the outputs the protocol defines and a version /info lists. Sentiment: LABEL BYTES [n] and
PROBABILITIES FP32 [n, 2] for three texts, the labels those of /v1 and the probabilities within 1e-4
of /v1's; with --shipped (the models of this repository), "I hated it." is negative and "Not bad at
all." positive. Translation, with beam_size 3 and n_best 2: TRANSLATION BYTES [n, 2] and SCORE FP32
[n, 2], the hypotheses those of /v1 (translation, then the alternative) and best first.

Prints one line per check; exits 1 with the problems on stderr. The checks themselves are functions
of plain data (tests/test_smoke_oip.py). Only the standard library at import: the host runs the
HTTP half with its own python3; tritonclient and numpy are imported by the gRPC half, in the image.
"""

from __future__ import annotations

import json
import math
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

SERVER_NAME = "rnn-serve"
SENTIMENT_TEXTS = ["I hated it.", "Not bad at all.", "Two hours I will never get back."]
SHIPPED_LABELS = {"I hated it.": "negative", "Not bad at all.": "positive"}  # as docs/oip.md and README show
TRANSLATE_TEXTS = ["A man is riding a bicycle down the street.", "Two dogs play in the snow."]
TRANSLATE_PARAMETERS = {"beam_size": 3, "n_best": 2}
TOLERANCE = 1e-4  # same model, same inputs: /v1 and v2 agree to float32 precision

TEXT_INPUT = [{"name": "TEXT", "datatype": "BYTES", "shape": [-1]}]
OUTPUTS = {
    "sentiment": [
        {"name": "LABEL", "datatype": "BYTES", "shape": [-1]},
        {"name": "PROBABILITIES", "datatype": "FP32", "shape": [-1, 2]},
    ],
    "translate": [
        {"name": "TRANSLATION", "datatype": "BYTES", "shape": [-1, -1]},
        {"name": "SCORE", "datatype": "FP32", "shape": [-1, -1]},
    ],
}

# One output of an inference: (datatype, shape, elements flattened in row-major order).
Outputs = dict[str, tuple[str, list[int], list[Any]]]


def family(model: str) -> str:
    return "sentiment" if model == "sentiment" else "translate"


# ----------------------------------------------------------------------------- checks of plain data


def metadata_problems(md: dict[str, Any], name: str, versions: set[str]) -> list[str]:
    """What is wrong with model `name`'s metadata `md` (shapes as integers)."""
    out = []
    if md.get("name") != name:
        out.append(f"{name}: metadata names {md.get('name')!r}")
    if not set(md.get("versions") or []) & versions:
        out.append(f"{name}: versions {md.get('versions')} are none of /info's {sorted(versions)}")
    if md.get("inputs") != TEXT_INPUT:
        out.append(f"{name}: inputs {md.get('inputs')}, not {TEXT_INPUT}")
    want = OUTPUTS[family(name)]
    if md.get("outputs") != want:
        out.append(f"{name}: outputs {md.get('outputs')}, not {want}")
    return out


def tensor_problems(name: str, outputs: Outputs, want: dict[str, tuple[str, list[int]]]) -> list[str]:
    """Each wanted output is there with its datatype and shape, and as many elements as the shape says."""
    out = []
    if sorted(outputs) != sorted(want):
        out.append(f"{name}: outputs {sorted(outputs)}, not {sorted(want)}")
    for tensor, (datatype, shape) in want.items():
        if tensor not in outputs:
            continue
        got_type, got_shape, data = outputs[tensor]
        if (got_type, list(got_shape)) != (datatype, shape):
            out.append(f"{name}: {tensor} is {got_type} {list(got_shape)}, not {datatype} {shape}")
        elif len(data) != math.prod(shape):
            out.append(f"{name}: {tensor} has {len(data)} elements for shape {shape}")
    return out


def sentiment_problems(outputs: Outputs, v1: list[dict[str, Any]], texts: list[str], shipped: bool) -> list[str]:
    """`outputs` of model sentiment for `texts` against /v1's `results` for the same texts."""
    n = len(texts)
    out = tensor_problems("sentiment", outputs, {"LABEL": ("BYTES", [n]), "PROBABILITIES": ("FP32", [n, 2])})
    if out:
        return out
    labels = outputs["LABEL"][2]
    if labels != [r["label"] for r in v1]:
        out.append(f"sentiment: labels {labels}, /v1 says {[r['label'] for r in v1]}")
    probs = outputs["PROBABILITIES"][2]
    want = [p for r in v1 for p in (r["probabilities"]["negative"], r["probabilities"]["positive"])]
    worst = max(abs(a - b) for a, b in zip(probs, want, strict=True))
    if worst > TOLERANCE:
        out.append(f"sentiment: probabilities {probs} differ from /v1's {want} by {worst:.2g}")
    if shipped:
        for text, label in zip(texts, labels, strict=True):
            if text in SHIPPED_LABELS and label != SHIPPED_LABELS[text]:
                out.append(f"sentiment: {text!r} is {label}, not {SHIPPED_LABELS[text]}")
    return out


def translation_problems(model: str, outputs: Outputs, v1: list[dict[str, Any]], n_best: int) -> list[str]:
    """`outputs` of a translator asked for `n_best` hypotheses against /v1's `results` (same texts, same
    parameters): row i is /v1's translation then its alternatives, with scores best first."""
    n = len(v1)
    out = tensor_problems(model, outputs, {"TRANSLATION": ("BYTES", [n, n_best]), "SCORE": ("FP32", [n, n_best])})
    if out:
        return out
    words, scores = outputs["TRANSLATION"][2], outputs["SCORE"][2]
    for i, r in enumerate(v1):
        row, row_scores = words[i * n_best : (i + 1) * n_best], scores[i * n_best : (i + 1) * n_best]
        want = [r["translation"]] + [a["translation"] for a in r.get("alternatives") or []]
        if not row[0].strip():
            out.append(f"{model}: TRANSLATION[{i}, 0] is empty")
        if row[: len(want)] != want[:n_best]:
            out.append(f"{model}: TRANSLATION[{i}] is {row}, /v1 says {want}")
        if abs(row_scores[0] - r["score"]) > TOLERANCE:
            out.append(f"{model}: SCORE[{i}, 0] is {row_scores[0]}, /v1 says {r['score']}")
        if row_scores != sorted(row_scores, reverse=True):
            out.append(f"{model}: SCORE[{i}] {row_scores} is not best first")
    return out


# ----------------------------------------------------------------------------- the two protocols


def _shape(dims: list[Any]) -> list[int]:
    return [int(d) for d in dims]  # gRPC's JSON writes int64 as strings


def _flat(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for d in data for x in _flat(d)]
    return [data]


def _text(x: Any) -> Any:
    return x.decode() if isinstance(x, bytes) else x


class Http:
    """The protocol over HTTP, JSON tensors, with urllib."""

    name = "http"

    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def _call(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as e:
            raise RuntimeError(
                f"{'POST' if body else 'GET'} {path}: {e.code} {e.read().decode(errors='replace')}"
            ) from None

    def ready(self) -> bool:
        return self._call("/v2/health/live")[0] == 200 and self._call("/v2/health/ready")[0] == 200

    def model_ready(self, model: str) -> bool:
        return self._call(f"/v2/models/{model}/ready")[0] == 200

    def server_metadata(self) -> dict[str, Any]:
        return self._call("/v2")[1]

    def model_metadata(self, model: str) -> dict[str, Any]:
        md = self._call(f"/v2/models/{model}")[1]
        for t in md.get("inputs", []) + md.get("outputs", []):
            t["shape"] = _shape(t["shape"])
        return md

    def infer(self, model: str, texts: list[str], parameters: dict[str, Any] | None) -> tuple[dict[str, Any], Outputs]:
        body: dict[str, Any] = {
            "id": "smoke",
            "inputs": [{"name": "TEXT", "shape": [len(texts)], "datatype": "BYTES", "data": texts}],
        }
        if parameters:
            body["parameters"] = parameters
        doc = self._call(f"/v2/models/{model}/infer", body)[1]
        outputs = {o["name"]: (o["datatype"], _shape(o["shape"]), _flat(o["data"])) for o in doc["outputs"]}
        return doc, outputs


class Grpc:
    """The protocol over gRPC, with Triton's client (a runtime dependency of the image)."""

    name = "grpc"

    def __init__(self, address: str):
        import tritonclient.grpc as tgrpc

        self.mod = tgrpc
        self.client = tgrpc.InferenceServerClient(address)

    def ready(self) -> bool:
        return self.client.is_server_live() and self.client.is_server_ready()

    def model_ready(self, model: str) -> bool:
        return self.client.is_model_ready(model)

    def server_metadata(self) -> dict[str, Any]:
        return self.client.get_server_metadata(as_json=True)

    def model_metadata(self, model: str) -> dict[str, Any]:
        md = self.client.get_model_metadata(model, as_json=True)
        for t in md.get("inputs", []) + md.get("outputs", []):
            t["shape"] = _shape(t["shape"])
        return md

    def infer(self, model: str, texts: list[str], parameters: dict[str, Any] | None) -> tuple[dict[str, Any], Outputs]:
        import numpy as np

        x = self.mod.InferInput("TEXT", [len(texts)], "BYTES")
        x.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
        result = self.client.infer(model, [x], parameters=parameters, request_id="smoke")
        doc = result.get_response(as_json=True)
        outputs = {}
        for o in doc["outputs"]:
            data = result.as_numpy(o["name"]).reshape(-1).tolist()
            outputs[o["name"]] = (o["datatype"], _shape(o["shape"]), [_text(x) for x in data])
        return doc, outputs


# ----------------------------------------------------------------------------- the run


def v1_client(url: str) -> Callable[[str, dict[str, Any] | None], dict[str, Any]]:
    """GET (body None) or POST url+path -> the JSON answer (/info, /v1/...)."""

    def call(path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        req = urllib.request.Request(
            url.rstrip("/") + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    return call


def run(
    proto: Any, v1: Callable[[str, dict[str, Any] | None], dict[str, Any]], shipped: bool
) -> tuple[list[str], list[str]]:
    """(what was checked, problems) for one protocol, `proto`, on the server /v1 answers for."""
    said: list[str] = []
    info = v1("/info", None)
    versions = {m["version"] for m in info["models"]}
    models = ["sentiment"] + [f"translate-{p}" for p in info["translation_pairs"]]
    p = proto.name

    if not proto.ready():
        return said, [f"{p}: the server is not live and ready"]
    meta = proto.server_metadata()
    if meta.get("name") != SERVER_NAME:
        return said, [f"{p}: server metadata names {meta.get('name')!r}, not {SERVER_NAME}"]
    said.append(
        f"{p}: ready; server {meta['name']} {meta.get('version')}, extensions {' '.join(meta.get('extensions', []))}"
    )

    problems: list[str] = []
    version = {}
    for m in models:
        if not proto.model_ready(m):
            problems.append(f"{p}: model {m} is not ready")
            continue
        md = proto.model_metadata(m)
        found = metadata_problems(md, m, versions)
        problems += [f"{p}: {x}" for x in found]
        version[m] = (md.get("versions") or [""])[0]
        if not found:
            outs = ", ".join(f"{t['name']} {t['datatype']} {t['shape']}" for t in md["outputs"])
            said.append(f"{p}: {m} {version[m]} ready; TEXT BYTES [-1] -> {outs}")

    def answered_by(doc: dict[str, Any], m: str) -> list[str]:
        if (doc.get("model_name"), doc.get("model_version"), doc.get("id")) != (m, version.get(m), "smoke"):
            return [f"{m} answered as {doc.get('model_name')} {doc.get('model_version')} (id {doc.get('id')!r})"]
        return []

    if "sentiment" in version:  # those that said they were ready
        doc, outputs = proto.infer("sentiment", SENTIMENT_TEXTS, None)
        expected = v1("/v1/sentiment", {"texts": SENTIMENT_TEXTS})["results"]
        found = answered_by(doc, "sentiment") + sentiment_problems(outputs, expected, SENTIMENT_TEXTS, shipped)
        problems += [f"{p}: {x}" for x in found]
        if not found:
            said.append(f"{p}: sentiment {list(zip(SENTIMENT_TEXTS, outputs['LABEL'][2], strict=True))}, as /v1")

    for m in [m for m in models[1:] if m in version]:
        src, tgt = m.split("-")[1:]
        doc, outputs = proto.infer(m, TRANSLATE_TEXTS, TRANSLATE_PARAMETERS)
        body = {"texts": TRANSLATE_TEXTS, "source_lang": src, "target_lang": tgt, **TRANSLATE_PARAMETERS}
        expected = v1("/v1/translate", body)["results"]
        found = answered_by(doc, m) + translation_problems(m, outputs, expected, TRANSLATE_PARAMETERS["n_best"])
        problems += [f"{p}: {x}" for x in found]
        if not found:
            best, score = outputs["TRANSLATION"][2][0], outputs["SCORE"][2][0]
            said.append(f"{p}: {m} {best!r} ({score:.2f}), n_best 2 for 2 texts as /v1")
    return said, problems


def main(argv: list[str]) -> int:
    shipped = "--shipped" in argv
    argv = [a for a in argv if a != "--shipped"]
    if len(argv) == 2 and argv[0] == "http":
        proto, url = Http(argv[1]), argv[1]
    elif len(argv) == 3 and argv[0] == "grpc":
        proto, url = Grpc(argv[1]), argv[2]
    else:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        said, problems = run(proto, v1_client(url), shipped)
    except Exception as e:  # a refused request, an unreachable server: the check fails, saying why
        said, problems = [], [f"{argv[0]}: {type(e).__name__}: {e}"]
    for line in said:
        print(line)
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
