"""Sentiment and translation over typed HTTP: LitServe + ONNX Runtime serving the shipped models.

    __main__.py    `python -m service`: the command line (generated from settings.Settings)
    settings.py    every option, once; schemas.py the API's request and response models
    metrics.py     Prometheus metrics; logs.py JSON log lines
    http/          the HTTP process: app assembly and process life (app), gateway, errors,
                   OpenAPI and /docs (openapi), /health /info /metrics (operations)
    batching/      HTTP process <-> inference workers: queues, transport, fast path, batch loop,
                   the LitAPIs, the watchdog, and litserve_internals (LitServe's private code)
    runtime/       the models at run time: artifacts, providers, tokenizers (text, subword),
                   sentiment, translation, decoding; shared with training

A request passes through: http/gateway.py (id, auth, size, queue slot) -> schemas.py (validation)
-> batching/fast_path.py -> batching/queue.py -> batching/loop.py (in a worker) -> batching/apis.py
-> runtime/text.py or runtime/subword.py -> runtime/sentiment.py or runtime/translation.py (ONNX)
-> runtime/decoding.py -> batching/transport.py -> back to the gateway.
"""

__version__ = "0.1.0"
