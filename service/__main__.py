"""`python -m service`: serve the models in --models-dir over HTTP.

Every option also comes from the environment with the prefix RNNSERVE_ (for example
RNNSERVE_PORT=9000); the command line wins. See `python -m service --help`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from service.settings import Settings

FLAGS = {  # flag -> help; each maps to the Settings field of the same name
    "host": "interface to bind: 0.0.0.0, 127.0.0.1 or ::",
    "port": "port (default 8000)",
    "models_dir": "folder with model artifacts (default: the shipped models/)",
    "device": "auto (CUDA if it works, else CPU), cpu, or cuda (fail if CUDA cannot be used)",
    "precision": "sentiment model and translators' decoder step: auto (int8 on CPU when shipped, else fp32), fp32, or int8",
    "workers": "inference worker processes per model family (0 = auto: one per core on CPU, one on CUDA)",
    "threads": "ONNX Runtime threads per session (0 = cores / workers)",
    "spin": "on (ONNX Runtime threads spin-wait while a run lasts, then stop) or off (they sleep when idle)",
    "max_batch_size": "requests per dynamic batch; 1 turns dynamic batching off",
    "batch_timeout": "seconds a batch waits to fill (0: a free worker takes what is queued)",
    "token_budget": "padded tokens per sentiment sub-batch (batches are sorted by length and cut to this budget)",
    "max_texts": "texts per request",
    "max_text_chars": "characters per sentiment text",
    "max_translate_chars": "characters per text to translate",
    "max_payload_bytes": "request body limit",
    "max_queue": "requests in flight before 429",
    "request_timeout": "seconds before 504",
    "api_key": "require this key in X-API-Key on /v1/* (prefer the RNNSERVE_API_KEY variable)",
    "log_level": "debug, info, warning or error",
    "shutdown_grace": "seconds to drain on SIGTERM",
}


def parse(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(
        prog="python -m service", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    for name, help_ in FLAGS.items():
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=help_)
    given = {k: v for k, v in vars(p.parse_args(argv)).items() if v is not None}
    try:
        return Settings(**given)
    except Exception as e:  # pydantic ValidationError: show it as a usage error
        p.error(str(e))
        raise


def prepare_process() -> Path:
    """A per-run state folder, and prometheus multiprocess mode for this process and every child
    (it must be set before prometheus_client is first imported)."""
    state = Path(tempfile.mkdtemp(prefix="rnnserve-"))
    (state / "prometheus").mkdir()
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(state / "prometheus")
    return state / "workers"


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    state = prepare_process()
    from service.server import run

    try:
        return run(settings, state)
    finally:
        shutil.rmtree(Path(state).parent, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
