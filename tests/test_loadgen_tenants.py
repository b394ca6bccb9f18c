"""`python -m loadgen.tenants` (the mixed-tenant scenario of issue 22) at tiny scale against the
test server: both phases run, every client has its figures, the plot is written."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

PNG = b"\x89PNG\r\n\x1a\n"


def test_mixed_tenants_against_the_server(server, data_dir, tmp_path):
    out = tmp_path / "tenants.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadgen.tenants",
            "--url",
            server.url,
            "--data-dir",
            str(data_dir),
            "--duration",
            "2",
            "--baseline",
            "--bulk-outstanding",
            "2",
            "--bulk-texts",
            "8",
            "--interactive",
            "2",
            "--interval",
            "0.25",
            "--p95-ms",
            "60000",
            "--p99-ms",
            "60000",
            "--min-ratio",
            "0.01",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    alone, mixed = report["phases"]
    assert set(alone["clients"]) == {"bulk"}
    assert set(mixed["clients"]) == {"bulk", "interactive-0", "interactive-1"}
    for name, c in mixed["clients"].items():
        assert c["statuses"] == {"200": c["requests"]} and c["latency_ms"]["p99"] > 0, name
    assert report["verdict"]["pass"] and report["verdict"]["bulk_ratio"] > 0
    assert report["server_scheduling"]["policy"] == "fair"
    assert "PASS bulk throughput" in proc.stdout
    png = tmp_path / report["plots"]["clients"]
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 5000
