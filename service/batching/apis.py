"""The two LitAPIs: one per model family. Each loads and verifies its artifacts in `setup()`
(inside the inference worker process), warms up, and then serves dynamic batches.

Request flow: HTTP -> schema validation (HTTP process) -> request queue -> worker:
decode_request -> batch -> predict (tokenize, sort by length, ONNX, decode) -> unbatch ->
encode_response -> response queue -> HTTP.
"""

import json
import logging
import os
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from fastapi import HTTPException

from service import logs
from service import metrics as M
from service.batching.loop import DynamicBatchLoop
from service.runtime.providers import Device
from service.schemas import (
    ModelRef,
    SentimentRequest,
    SentimentResponse,
    SentimentResult,
    TranslateRequest,
    TranslateResponse,
    TranslateResult,
)
from service.verify import load_sentiment, load_translator, served_folders

log = logging.getLogger("service.worker")


def _queue_ns(request: Any, started: float) -> int:
    """How long a request waited between being parsed (HTTP process) and its batch starting."""
    return max(0, int((started - request._received_at) * 1e9))


class _Base(ls.LitAPI):
    endpoint = ""

    def __init__(
        self,
        *,
        models_dir: Path,
        device: Device,
        threads: int,
        workers: int,
        state_dir: Path,
        max_batch_size: int,
        batch_timeout: float,
        token_budget: int = 1024,
        precision: str = "auto",
        spin: bool = True,
        log_level: str = "info",
    ):
        with warnings.catch_warnings():  # "batch and unbatch implemented but max_batch_size not set": on purpose
            warnings.simplefilter("ignore", UserWarning)
            super().__init__(
                max_batch_size=max_batch_size,
                batch_timeout=batch_timeout,
                api_path=f"/v1/{self.endpoint}",
                loop=DynamicBatchLoop() if max_batch_size > 1 else "auto",
            )
        self.models_dir, self.device, self.state_dir = Path(models_dir), device, Path(state_dir)
        self.threads = threads  # chosen once, by http.app.build (settings.threads or cores / workers)
        # On CPU a BiLSTM gains little from rows beyond a few per step, and a batch padded to its
        # longest review wastes the rest. CPU time per IMDB review on one thread, batches of 16:
        # 1.41-1.48 ms with 1024 tokens, 1.50-1.55 with 2048, 1.69 with 4096, 2.06 with 16384 (one
        # review per call: 1.93). With two threads per session 2048 had been the best.
        self.token_budget = token_budget
        self.precision = precision  # sentiment's model, the translators' decoder step
        self.spin = spin  # ONNX Runtime threads spin-wait during a run (service.runtime.providers.session_options)
        self.log_level = log_level

    def setup(self, device: str) -> None:
        logs.configure(self.log_level)
        try:
            self._setup()
        except Exception as e:
            # LitServe logs the traceback; the main process reports this line (it names the file).
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.state_dir / f"failed-{self.endpoint}-{os.getpid()}.txt").write_text(f"{self.endpoint} worker: {e}")
            raise

    def _setup(self) -> None:
        raise NotImplementedError

    def _report(self, models: list[dict[str, Any]]) -> None:
        """Tell the HTTP process (for /info) what this worker loaded and on which provider."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        status = {"endpoint": self.endpoint, "pid": os.getpid(), "threads": self.threads, "models": models}
        tmp = self.state_dir / f".{self.endpoint}-{os.getpid()}.json"
        tmp.write_text(json.dumps(status))
        tmp.replace(self.state_dir / f"{self.endpoint}-{os.getpid()}.json")
        for m in models:
            M.MODEL_INFO.labels(m["name"], m["version"], m["provider"]).set(1)

    def batch(self, inputs: list) -> list:
        return inputs

    def unbatch(self, output: list) -> list:
        return output

    def predict(self, x: Any) -> Any:
        try:
            return self._predict(x)
        except HTTPException:
            raise
        except Exception:  # LitServe answers 500; the log line names the requests of the failed batch
            reqs = x if isinstance(x, list) else [x]
            log.exception(
                "inference failed",
                extra={"event": "inference_failed", "request_id": ",".join(r._request_id for r in reqs)},
            )
            raise

    def _predict(self, x: Any) -> Any:
        raise NotImplementedError

    def _observe(self, reqs: list, n_texts: int, started: float) -> None:
        for r in reqs:
            M.QUEUE_WAIT.labels(self.endpoint).observe(_queue_ns(r, started) / 1e9)
        M.BATCH_SIZE.labels(self.endpoint).observe(len(reqs))
        M.BATCH_TEXTS.labels(self.endpoint).observe(n_texts)


class SentimentAPI(_Base):
    endpoint = "sentiment"

    def _setup(self) -> None:
        self.model, _ = load_sentiment(
            self.models_dir / "sentiment",
            device=self.device,
            threads=self.threads,
            precision=self.precision,
            spin=self.spin,
        )
        self.model.predict(["warm-up " * 50, "ok"])  # first run allocates; do it before /health says ready
        self.ref = ModelRef(name=self.model.name, version=self.model.version)
        self._report(
            [
                {
                    "name": self.model.name,
                    "version": self.model.version,
                    "provider": self.model.provider,
                    "task": "sentiment",
                    "metrics": self.model.meta.get("metrics", {}),
                    "training_data": self.model.meta.get("data", {}),
                    "temperature": self.model.temperature,
                    "file": self.model.model_file,
                    "precision": self.model.precision,
                }
            ]
        )

    def decode_request(self, request: SentimentRequest) -> SentimentRequest:
        return request

    def _predict(self, x: SentimentRequest | list[SentimentRequest]) -> Any:
        reqs = x if isinstance(x, list) else [x]
        started = time.time()
        texts = [t for r in reqs for t in r.texts]
        enc = self.model.encode(texts)
        probs = self.model.probabilities(self.model.logits(enc, token_budget=self.token_budget))
        self._observe(reqs, len(texts), started)
        M.TOKENS.labels(self.endpoint, "input").inc(enc.tokens)
        M.INFERENCE_TIME.labels(self.endpoint).observe(time.time() - started)
        infer_ns = int((time.time() - started) * 1e9)
        out, k = [], 0
        labels = self.model.labels
        for i, r in enumerate(reqs):
            results = [
                {
                    "label": labels[int(p.argmax())],
                    "score": float(p.max()),
                    "probabilities": {labels[j]: float(p[j]) for j in range(len(labels))},
                }
                for p in probs[k : k + len(r.texts)]
            ]
            out.append({"results": results, "timing": (_queue_ns(r, started), infer_ns, i == 0)})
            k += len(r.texts)
        return out if isinstance(x, list) else out[0]

    def encode_response(self, output: dict) -> SentimentResponse:
        response = SentimentResponse(model=self.ref, results=[SentimentResult(**o) for o in output["results"]])
        return response.timed(*output["timing"])


class TranslateAPI(_Base):
    endpoint = "translate"

    def _setup(self) -> None:
        self.models = {}
        for name, folder in served_folders(self.models_dir).items():
            if name.startswith("translate-"):
                tm, _ = load_translator(
                    folder, device=self.device, threads=self.threads, precision=self.precision, spin=self.spin
                )
                tm.translate(["warm-up sentence for the decoder ."], beam_size=2)
                self.models[tm.pair] = tm
        self._report(
            [
                {
                    "name": m.name,
                    "version": m.version,
                    "provider": m.provider,
                    "task": "translation",
                    "pair": p,
                    "metrics": m.meta.get("metrics", {}),
                    "file": f"encoder.onnx + {m.decoder_file}",
                    "precision": m.precision,
                }
                for p, m in self.models.items()
            ]
        )

    def decode_request(self, request: TranslateRequest) -> TranslateRequest:
        return request

    def _predict(self, x: TranslateRequest | list[TranslateRequest]) -> Any:
        reqs = x if isinstance(x, list) else [x]
        started = time.time()
        # Requests that share a pair and search settings are decoded together, in one beam search.
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, r in enumerate(reqs):
            groups[(r.source_lang, r.target_lang, r.beam_size, r.n_best or 1, r.max_length)].append(i)
        out: list[Any] = [None] * len(reqs)
        n_texts = 0
        for (src, tgt, beam, n_best, max_len), idx in groups.items():
            pair = f"{src}-{tgt}"
            tm = self.models.get(pair)
            if tm is None:  # the HTTP process validated against the same folder; only a race gets here
                raise HTTPException(422, f"unsupported language pair {pair}; supported: {', '.join(self.models)}")
            texts = [t for i in idx for t in reqs[i].texts]
            n_texts += len(texts)
            steps0 = tm.stepper.steps
            done = tm.translate_texts(
                texts,
                beam_size=beam,
                n_best=n_best,
                max_length=max_len,
                attention=any(reqs[i].return_alignments for i in idx),  # collected only when asked for
            )
            M.DECODE_STEPS.labels(pair).inc(tm.stepper.steps - steps0)
            M.TOKENS.labels(self.endpoint, "input").inc(sum(len(s) for t in done for s in t.source_ids))
            M.TOKENS.labels(self.endpoint, "output").inc(sum(len(h.tokens) for t in done for h in t.best))
            k = 0
            for i in idx:
                res = []
                for _ in reqs[i].texts:
                    t = done[k]
                    item: dict[str, Any] = {"translation": t.text, "score": round(t.score, 5)}
                    if n_best > 1:
                        item["alternatives"] = [{"translation": a, "score": round(sc, 5)} for a, sc in t.alternatives]
                    if reqs[i].return_alignments:
                        item["alignments"] = a = tm.text_alignment(t)
                        # float32 weights rounded to 4 places print as 0.05009999871253967: round in float64
                        a["weights"] = np.round(np.asarray(a["weights"], dtype=np.float64), 4).tolist()
                    res.append(item)
                    k += 1
                out[i] = {"model": {"name": tm.name, "version": tm.version}, "results": res}
        self._observe(reqs, n_texts, started)
        infer_ns = int((time.time() - started) * 1e9)
        M.INFERENCE_TIME.labels(self.endpoint).observe(infer_ns / 1e9)
        firsts = {idx[0] for idx in groups.values()}  # each model's first request in this batch
        for i, (r, o) in enumerate(zip(reqs, out)):
            o["timing"] = (_queue_ns(r, started), infer_ns, i in firsts)
        return out if isinstance(x, list) else out[0]

    def encode_response(self, output: dict) -> TranslateResponse:
        response = TranslateResponse(
            model=ModelRef(**output["model"]), results=[TranslateResult(**r) for r in output["results"]]
        )
        return response.timed(*output["timing"])
