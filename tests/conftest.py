"""Shared fixtures: synthetic data, tiny models trained and exported through the real training
and export code, and the real server started as a subprocess on a free port."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

from bench.server import free_ports
from tests.synthetic import write_imdb, write_multi30k, write_short_sets

ROOT = Path(__file__).resolve().parent.parent
# Tiny models train fastest on one thread; more only fight over the cores (and with the server).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_imdb(root)
    write_short_sets(root)
    write_multi30k(root)
    return root


@pytest.fixture(scope="session")
def sentiment_run(data_dir, tmp_path_factory) -> Path:
    from training.sentiment.model import SentimentConfig
    from training.sentiment.train import TrainConfig, train

    run = tmp_path_factory.mktemp("sentiment-run")
    cfg = SentimentConfig(vocab_size=500, min_freq=1, max_len=48, head_len=16, embed_dim=16, hidden_dim=16)
    train(run, data_dir, cfg, TrainConfig(epochs=2, token_budget=1024, max_batch=32, lr=5e-3))
    return run


@pytest.fixture(scope="session")
def translation_run(data_dir, tmp_path_factory) -> Path:
    from training.translation.model import TranslationConfig
    from training.translation.train import TrainConfig, train

    run = tmp_path_factory.mktemp("translation-run")
    cfg = TranslationConfig(
        src_vocab=120, tgt_vocab=120, embed_dim=16, enc_hidden=16, dec_hidden=32, attn_dim=16, dropout=0.1
    )
    train(run, data_dir, cfg, TrainConfig(epochs=2, batch_size=32, lr=5e-3))
    return run


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory, data_dir, sentiment_run, translation_run) -> Path:
    """A models/ folder holding tiny but real exported artifacts (sentiment, en-de)."""
    from training.sentiment.export import export_sentiment
    from training.translation.export import export_translation

    root = tmp_path_factory.mktemp("models")
    (root / "sentiment").mkdir()
    export_sentiment(sentiment_run, root / "sentiment", data_dir)
    (root / "translate-en-de").mkdir()
    export_translation(translation_run, root / "translate-en-de", data_dir)
    return root


def make_dry_run(*targets: str) -> list[list[str]]:
    """The commands `make -n` prints for the targets, each split into words."""
    if not shutil.which("make"):
        pytest.skip("no make")
    out = subprocess.run(
        ["make", "-n", "--no-print-directory", *targets], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [shlex.split(line) for line in out.replace("\\\n", " ").splitlines() if line.strip()]


def free_port() -> int:
    return free_ports(1)[0]


class Server:
    """`python -m service` as a subprocess on a free port; logs kept for assertions."""

    def __init__(self, models_dir: Path, *args: str, env: dict[str, str] | None = None, log_dir: Path):
        self.port, grpc_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.port}"
        # gRPC (the Open Inference Protocol) on a free port of its own, unless the test says otherwise
        self.grpc_port = int(args[args.index("--grpc-port") + 1]) if "--grpc-port" in args else grpc_port
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_dir / f"server-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "service",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--models-dir",
            str(models_dir),
            "--device",
            "cpu",
            *([] if "--grpc-port" in args else ["--grpc-port", str(self.grpc_port)]),
            *args,
        ]
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def wait_healthy(self, timeout: float = 120) -> Server:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not healthy in {timeout}s:\n{self.logs()[-3000:]}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        with contextlib.suppress(ProcessLookupError):  # leftover children (inference workers) of a killed server
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def start_server(models_dir, tmp_path_factory):
    """Factory: start_server(*flags, env=..., models=...) -> a healthy Server, stopped at session end."""
    started: list[Server] = []
    log_dir = tmp_path_factory.mktemp("server-logs")

    def start(*args: str, env: dict[str, str] | None = None, models: Path | None = None, wait: bool = True) -> Server:
        s = Server(models or models_dir, *args, env=env, log_dir=log_dir)
        started.append(s)
        return s.wait_healthy() if wait else s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def server(start_server) -> Server:
    """The default server, shared by the tests that only talk to it."""
    return start_server("--max-batch-size", "16", "--batch-timeout", "0.01")


@pytest.fixture
def copy_models(models_dir, tmp_path) -> Iterator[Path]:
    """A private, writable copy of the tiny models (for tests that corrupt artifacts)."""
    dst = tmp_path / "models"
    shutil.copytree(models_dir, dst)
    yield dst


@pytest.fixture(scope="session")
def sentiment_model(models_dir):
    """The tiny sentiment artifact loaded in-process (the runtime the server uses)."""
    from service.runtime.sentiment import SentimentModel

    return SentimentModel(models_dir / "sentiment")


@pytest.fixture(scope="session")
def translator(models_dir):
    """The tiny en-de artifact loaded in-process."""
    from service.runtime.translation import TranslationModel

    return TranslationModel(models_dir / "translate-en-de")


# ----------------------------------------------------------------------------- what the run skipped

# System tools some tests drive, and where they come from; .ci/run installs what Debian has. A test
# that needs one skips where it is missing, so the run ends by saying which ones it skipped and why.
SYSTEM_TOOLS = {
    "prometheus": "Debian: apt-get install prometheus",
    "promtool": "Debian: apt-get install prometheus",
    "docker-compose": "Debian: apt-get install docker-compose",
    "docker compose": "the Docker Compose plugin",
    "kubectl": "kubectl >= 1.21 with kustomize v4+ (Debian 12's kubernetes-client is 1.20: too old for deploy/k8s)",
    "chromium": "Debian: apt-get install chromium",
    "chromedriver": "Debian: apt-get install chromium-driver",
    "qemu-x86_64": "Debian: apt-get install qemu-user",
}


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def tool_of(reason: str) -> str | None:
    """The system tool a skip reason names, if any (the first of SYSTEM_TOOLS it mentions)."""
    return next((t for t in SYSTEM_TOOLS if re.search(rf"(?<![\w-]){re.escape(t)}(?![\w-])", reason, re.I)), None)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """After the run: every skipped test that wanted a system tool, by tool, then the other skips (no
    GPU, no dataset, ...), one line per test, so that a machine without the tool cannot pass for one
    that ran everything."""
    by_tool: dict[str, list[str]] = {}
    other: list[str] = []
    for report in terminalreporter.stats.get("skipped", []):
        reason = skip_reason(report)
        line = f"{report.nodeid}: {reason}"
        tool = tool_of(reason)
        if tool is None:
            other.append(line)
        else:
            by_tool.setdefault(tool, []).append(line)
    tr = terminalreporter
    n_tool = sum(map(len, by_tool.values()))
    if not n_tool:
        tr.write_line("system tools: no test skipped for want of one")
    else:
        tr.section(f"{n_tool} tests skipped for want of a system tool", sep="-")
        for tool, lines in by_tool.items():
            tr.write_line(f"{tool} ({SYSTEM_TOOLS[tool]}): {len(lines)} skipped")
            for line in lines:
                tr.write_line(f"  {line}")
    if other:
        tr.section(f"{len(other)} tests skipped for other reasons", sep="-")
        for line in other:
            tr.write_line(f"  {line}")
