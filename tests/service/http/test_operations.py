"""/info's pieces without a server (service.http.operations): what the inference workers
reported is merged per model, and the document says the settings it was built from. The HTTP
tests (test_app.py, test_metrics.py) read the same document from a real server."""

from __future__ import annotations

import json
import time

from service.http.operations import describe, models
from service.settings import Settings


def _report(folder, endpoint: str, pid: int, provider: str, name: str = "m") -> None:
    status = {
        "endpoint": endpoint,
        "pid": pid,
        "threads": 1,
        "models": [{"name": name, "version": "1", "provider": provider}],
    }
    (folder / f"{endpoint}-{pid}.json").write_text(json.dumps(status))


def test_models_merge_every_workers_report(tmp_path):
    _report(tmp_path, "sentiment", 1, "CPUExecutionProvider")
    _report(tmp_path, "sentiment", 2, "CUDAExecutionProvider")
    _report(tmp_path, "translate", 3, "CPUExecutionProvider", name="t")
    (tmp_path / "translate-4.json").write_text("{half a file")  # a report being written: skipped
    (tmp_path / "failed-translate-5.txt").write_text("not a report")
    got = {m["name"]: m for m in models(tmp_path)}
    assert got["m"]["workers"] == 2 and got["m"]["providers"] == ["CPUExecutionProvider", "CUDAExecutionProvider"]
    assert got["t"]["workers"] == 1 and "provider" not in got["t"]


def test_describe_says_the_settings_it_was_built_from():
    s = Settings(max_batch_size=1, max_texts=5, api_key="k", spin="off")
    info = describe(s, [], started=time.time() - 3, pairs=["en-de"], threads=2, workers=3)
    assert info["service"]["name"] == "rnn-serve" and info["service"]["uptime_seconds"] >= 3
    assert info["translation_pairs"] == ["en-de"]
    assert info["runtime"]["threads_per_session"] == 2 and info["runtime"]["workers_per_family"] == 3
    assert info["runtime"]["spin_wait"] is False
    assert info["batching"]["enabled"] is False and info["limits"]["max_texts"] == 5
    assert info["auth"] == {"api_key_required": True}
