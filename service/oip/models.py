"""The served models as the Open Inference Protocol sees them.

- `sentiment`: input TEXT (BYTES, [n]); outputs LABEL (BYTES, [n]) and PROBABILITIES (FP32, [n, 2]:
  negative, positive, calibrated as on /v1).
- `translate-<src>-<tgt>`, one per translation artifact: input TEXT (BYTES, [n]); request parameters
  beam_size, max_length, n_best (as on /v1); outputs TRANSLATION (BYTES, [n, k]) and SCORE (FP32,
  [n, k]), k = n_best (default 1), best hypothesis first.

A model's version is its artifact's version string. Each model turns its input tensors into the
/v1 request of its family (validated by the same schema, with the same limits and messages) and
the /v1 response into output tensors: a v2 request goes onto the same queue as a /v1 request and
can share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from service.oip.tensors import OipError, Tensor, bad, texts
from service.schemas import SentimentRequest, SentimentResponse, TranslateRequest, TranslateResponse

PLATFORM = "onnxruntime_onnx"  # the models' backend; tokenization and decoding run around it
# Request parameters every model accepts (Triton's, honoured or harmless here): binary_data_output
# asks for binary outputs; priority (1 first ... 9 last, 0 default) and timeout (microseconds, as
# Triton's) go to the fair scheduler as the /v1 fields priority and timeout_ms (docs/scheduling.md);
# so is any parameter named triton_* (Triton's clients add their
# own, e.g. perf_analyzer's triton_enable_empty_final_response). Any other unknown name is a 400:
# a misspelt beam_size must not be ignored silently.
COMMON_PARAMETERS = ("binary_data_output", "priority", "timeout")
CLIENT_PREFIX = "triton_"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def config(self) -> dict[str, Any]:
        """A Triton model configuration entry (data_type TYPE_STRING for BYTES)."""
        dt = "TYPE_STRING" if self.datatype == "BYTES" else f"TYPE_{self.datatype}"
        return {"name": self.name, "data_type": dt, "dims": list(self.shape)}


TEXT = TensorSpec("TEXT", "BYTES", (-1,))  # UTF-8 texts, one per element


def _explain(e: ValidationError, what: str) -> str:
    """The /v1 schema's first complaint, in the protocol's words (input TEXT rather than texts)."""
    err = e.errors()[0]
    msg = str(err.get("msg", "")).removeprefix("Value error, ")
    loc = [str(x) for x in err.get("loc", ()) if x != "texts"]
    field = ".".join(loc)
    if field in ("beam_size", "max_length", "n_best"):
        return f"parameter {field}: {msg}"
    return f"{what}: {msg.replace('texts[', 'TEXT[').replace('texts ', 'TEXT ')}"


def scheduling_fields(params: dict[str, Any]) -> dict[str, Any]:
    """Triton's priority and timeout (microseconds) as the /v1 fields; 0 means none for both."""
    out: dict[str, Any] = {}
    priority, timeout = params.get("priority"), params.get("timeout")
    if isinstance(priority, int) and not isinstance(priority, bool) and priority > 0:
        out["priority"] = min(priority, 9)
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0:
        out["timeout_ms"] = min(max(1, -(-timeout // 1000)), 3_600_000)
    return out


class OipModel:
    """One model over OIP: its name, version, tensors, and its mapping to the /v1 request/response."""

    family = ""  # "sentiment" or "translate": the /v1 endpoint and the queue
    inputs: tuple[TensorSpec, ...] = (TEXT,)
    outputs: tuple[TensorSpec, ...] = ()
    parameters: tuple[str, ...] = ()  # request parameters this model reads, beyond COMMON_PARAMETERS
    request_model: type[BaseModel]

    def __init__(self, name: str, version: str, meta: dict[str, Any]):
        self.name, self.version, self.meta = name, version, meta

    @property
    def api_path(self) -> str:
        return f"/v1/{self.family}"

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": PLATFORM,
            "inputs": [t.metadata() for t in self.inputs],
            "outputs": [t.metadata() for t in self.outputs],
        }

    def config(self, max_batch_size: int) -> dict[str, Any]:
        """Triton's model configuration, as Triton's clients and perf_analyzer read it. The batch is
        dimension 0 of every tensor (max_batch_size 0: the service batches requests dynamically
        itself, up to `max_batch_size` requests, whatever each request's own size)."""
        return {
            "name": self.name,
            "platform": PLATFORM,
            "backend": "onnxruntime",
            "max_batch_size": 0,
            "input": [t.config() for t in self.inputs],
            "output": [t.config() for t in self.outputs],
            "dynamic_batching": {},
            "parameters": {
                "artifact": {"string_value": self.meta.get("name", "")},
                "service_max_batch_size": {"string_value": str(max_batch_size)},
            },
        }

    # -- tensors <-> /v1 --------------------------------------------------------------------------

    def texts(self, inputs: list[Tensor]) -> list[str]:
        names = [t.name for t in inputs]
        if len(set(names)) != len(names):
            raise bad(f"input {next(n for n in names if names.count(n) > 1)} is given twice")
        unknown = [n for n in names if n != TEXT.name]
        if unknown:
            raise bad(f"unexpected input {unknown[0]}; model {self.name} takes one input, {TEXT.name} (BYTES, [n])")
        if not inputs:
            raise bad(f"missing input {TEXT.name}: model {self.name} takes one input, {TEXT.name} (BYTES, [n])")
        t = inputs[0]
        if t.datatype != TEXT.datatype:
            raise bad(f"input {TEXT.name} has datatype {t.datatype}; it must be BYTES (UTF-8 texts)")
        if len(t.shape) != 1:
            raise bad(f"input {TEXT.name} has shape {t.shape}; it must be [n]: one dimension, one text per element")
        return texts(t)

    def check_parameters(self, params: dict[str, Any]) -> None:
        allowed = (*COMMON_PARAMETERS, *self.parameters)
        for k in params:
            if k not in allowed and not k.startswith(CLIENT_PREFIX):
                raise bad(f"unknown request parameter {k!r}; model {self.name} accepts {', '.join(allowed)}")

    def to_request(self, inputs: list[Tensor], params: dict[str, Any]) -> BaseModel:
        """The /v1 request these tensors mean (validated by the /v1 schema: limits apply)."""
        self.check_parameters(params)
        body = {"texts": self.texts(inputs), **self._request_fields(params), **scheduling_fields(params)}
        try:
            return self.request_model.model_validate(body)
        except ValidationError as e:
            raise bad(_explain(e, f"input {TEXT.name}")) from None

    def _request_fields(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    def to_outputs(self, response: Any) -> list[Tensor]:
        raise NotImplementedError

    def owns(self, request: BaseModel) -> bool:
        """Whether a /v1 request of this family is for this model (statistics of /v1 traffic)."""
        return True


class SentimentOip(OipModel):
    family = "sentiment"
    outputs = (
        TensorSpec("LABEL", "BYTES", (-1,)),  # negative or positive
        TensorSpec("PROBABILITIES", "FP32", (-1, 2)),  # calibrated probabilities of negative and positive
    )
    request_model = SentimentRequest

    def to_outputs(self, response: SentimentResponse) -> list[Tensor]:
        n = len(response.results)
        labels = self.meta.get("labels") or ["negative", "positive"]
        probs = np.array([[r.probabilities[label] for label in labels] for r in response.results], dtype=np.float32)
        return [
            Tensor("LABEL", "BYTES", [n], [r.label.encode() for r in response.results]),
            Tensor("PROBABILITIES", "FP32", [n, len(labels)], probs.reshape(-1)),
        ]


class TranslateOip(OipModel):
    family = "translate"
    outputs = (
        TensorSpec("TRANSLATION", "BYTES", (-1, -1)),  # [text, hypothesis]: n_best translations, best first
        TensorSpec("SCORE", "FP32", (-1, -1)),  # [text, hypothesis]: length-normalized log-probabilities
    )
    parameters = ("beam_size", "max_length", "n_best")
    request_model = TranslateRequest

    def __init__(self, name: str, version: str, meta: dict[str, Any]):
        super().__init__(name, version, meta)
        self.src, self.tgt = meta["config"]["src_lang"], meta["config"]["tgt_lang"]

    def _request_fields(self, params: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {"source_lang": self.src, "target_lang": self.tgt}
        for k in self.parameters:
            if k in params:
                fields[k] = params[k]
        return fields

    def to_outputs(self, response: TranslateResponse) -> list[Tensor]:
        rows = [
            [(r.translation, r.score)] + [(a.translation, a.score) for a in r.alternatives or []]
            for r in response.results
        ]
        k = max(len(r) for r in rows)
        # Beam search returns n_best hypotheses per text; pad defensively so the tensor stays rectangular.
        rows = [r + [("", float(np.finfo(np.float32).min))] * (k - len(r)) for r in rows]
        shape = [len(rows), k]
        return [
            Tensor("TRANSLATION", "BYTES", shape, [t.encode() for r in rows for t, _ in r]),
            Tensor("SCORE", "FP32", shape, np.array([s for r in rows for _, s in r], dtype=np.float32)),
        ]

    def owns(self, request: BaseModel) -> bool:
        return (request.source_lang, request.target_lang) == (self.src, self.tgt)


class Registry:
    """The models the service serves, by OIP name: `sentiment`, `translate-<src>-<tgt>`."""

    def __init__(self, artifacts: dict[str, dict[str, Any]]):
        """`artifacts`: folder name -> verified metadata (as http.app.discover reads them)."""
        self.models: dict[str, OipModel] = {}
        for folder, meta in artifacts.items():
            if folder == "sentiment":
                self.models["sentiment"] = SentimentOip("sentiment", meta["version"], meta)
            elif meta.get("task") == "translation":
                m = TranslateOip(
                    f"translate-{meta['config']['src_lang']}-{meta['config']['tgt_lang']}", meta["version"], meta
                )
                self.models[m.name] = m

    def get(self, name: str, version: str | None = None) -> OipModel:
        m = self.models.get(name)
        if m is None:
            known = ", ".join(self.models) or "none"
            raise OipError(404, f"unknown model {name!r}; this server serves {known}")
        if version not in (None, "", m.version):
            raise OipError(404, f"model {name} has no version {version!r}; it has {m.version}")
        return m

    def for_request(self, family: str, request: BaseModel) -> OipModel | None:
        """The model a /v1 request is for (None if none is)."""
        for m in self.models.values():
            if m.family == family and m.owns(request):
                return m
        return None
