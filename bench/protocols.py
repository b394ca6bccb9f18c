"""The same load in each protocol the server speaks: its /v1 JSON API, the Open Inference Protocol
over HTTP with JSON tensors and with Triton's binary tensors (what tritonclient and perf_analyzer
send by default), and the Open Inference Protocol over gRPC. Every body is made once, before the
run: the client's CPU is then the transport's alone.
"""

from __future__ import annotations

import json

from loadgen.engine import Request

PROTOCOLS = ("v1", "v2-json", "v2-binary", "grpc")
INFER = "/inference.GRPCInferenceService/ModelInfer"
OUTPUT = {"sentiment": "LABEL", "translate": "TRANSLATION"}


def model_name(endpoint: str, pair: str | None) -> str:
    return "sentiment" if endpoint == "sentiment" else f"translate-{pair}"


def requests(protocol: str, endpoint: str, texts: list[str], pair: str | None, beam: int) -> list[Request]:
    """One request per text, in `protocol`."""
    src, tgt = pair.split("-") if pair else ("", "")
    params = {"beam_size": beam} if endpoint == "translate" else {}
    path = f"/v2/models/{model_name(endpoint, pair)}/infer"
    expect = OUTPUT[endpoint].encode()
    out = []
    for t in texts:
        if protocol == "v1":
            body = {"texts": [t], **({"source_lang": src, "target_lang": tgt, **params} if params else {})}
            out.append(Request(f"/v1/{endpoint}", json.dumps(body).encode()))
        elif protocol == "v2-json":
            doc = {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": [t]}]}
            if params:
                doc["parameters"] = params
            out.append(Request(path, json.dumps(doc).encode(), expect=expect))
        elif protocol == "v2-binary":
            raw = _raw_bytes(t)
            doc = {
                "inputs": [
                    {"name": "TEXT", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
                ],
                "parameters": {"binary_data_output": True, **params},
            }
            head = json.dumps(doc).encode()
            headers = (
                ("content-type", "application/octet-stream"),
                ("inference-header-content-length", str(len(head))),
            )
            out.append(Request(path, head + raw, headers=headers, expect=expect))
        elif protocol == "grpc":
            out.append(Request(INFER, _grpc_body(model_name(endpoint, pair), t, params), expect=expect))
        else:
            raise ValueError(f"unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")
    return out


def _raw_bytes(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(4, "little") + data


def _grpc_body(model: str, text: str, params: dict[str, int]) -> bytes:
    from tritonclient.grpc import service_pb2 as pb

    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="TEXT", datatype="BYTES", shape=[1])
    req.raw_input_contents.append(_raw_bytes(text))
    for k, v in params.items():
        req.parameters[k].int64_param = v
    return req.SerializeToString()
