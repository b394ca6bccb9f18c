"""The server under test: `python -m service` on a free port, with its log, CPU time and stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.proctree import tree_cpu_seconds
from loadgen.client import Client

ROOT = Path(__file__).resolve().parent.parent


def free_ports(n: int) -> list[int]:
    """`n` distinct free ports (each socket stays bound until all are picked, so that the HTTP and
    gRPC ports of one server never come out the same)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ServerProcess:
    def __init__(self, models_dir: Path, args: list[str], log_dir: Path, name: str):
        self.port, self.grpc_port = free_ports(2)  # HTTP; the Open Inference Protocol over gRPC
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.log_path = log_dir / f"server-{name}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
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
            "--grpc-port",
            str(self.grpc_port),
            "--log-level",
            "warning",
            *args,
        ]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.client = Client(self.url, timeout=5)

    def info(self) -> dict[str, Any]:
        return self.client.info()

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; log: {self.log_path}\n"
                    + self.log_path.read_text(errors="replace")[-2000:]
                )
            with contextlib.suppress(httpx.TransportError):
                if self.client.health():
                    return
            time.sleep(0.3)
        raise TimeoutError(f"server not healthy within {timeout} s; log: {self.log_path}")

    def cpu_seconds(self) -> float | None:
        """CPU time used so far by the server's processes (HTTP, inference workers; Linux /proc)."""
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(40)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its inference workers, if any are left
        self.proc.wait()
        self.log.close()
