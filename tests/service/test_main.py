"""`python -m service`'s command line, generated from Settings (service.__main__.parse): every
field is a kebab-case flag, the environment (RNNSERVE_*) fills what the command line leaves out,
and a bad value is a usage error (exit 2) that names the field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from service.__main__ import parse
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_settings_field_is_a_flag_with_its_description():
    help_text = subprocess.run(
        [sys.executable, "-m", "service", "--help"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    flat = " ".join(help_text.split())
    for name, field in Settings.model_fields.items():
        assert f"--{name.replace('_', '-')}" in help_text, name
        assert field.description, f"Settings.{name} has no description: it is the flag's help"
        assert " ".join(field.description.split())[:40] in flat, name


def test_flags_the_makefile_deploy_and_tests_pass(tmp_path):
    flags = "--host 127.0.0.1 --port 9001 --device cpu --max-batch-size 16 --batch-timeout 0.01 --workers 2"
    flags += " --api-key k --log-level debug --request-timeout 3 --max-queue 4 --shutdown-grace 1 --precision fp32"
    s = parse([*flags.split(), "--models-dir", str(tmp_path)])
    assert (s.host, s.port, s.models_dir, s.device) == ("127.0.0.1", 9001, tmp_path, "cpu")
    assert (s.max_batch_size, s.batch_timeout, s.workers, s.api_key.get_secret_value()) == (16, 0.01, 2, "k")
    assert (s.log_level, s.request_timeout, s.max_queue, s.shutdown_grace, s.precision) == ("debug", 3, 4, 1, "fp32")
    assert parse([]) == Settings()


def test_the_environment_fills_in_and_the_command_line_wins(monkeypatch):
    monkeypatch.setenv("RNNSERVE_PORT", "9100")
    monkeypatch.setenv("RNNSERVE_MAX_TEXTS", "7")
    s = parse([])
    assert (s.port, s.max_texts) == (9100, 7)
    s = parse(["--port", "9200"])
    assert (s.port, s.max_texts) == (9200, 7)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--port", "80"], "port"),
        (["--device", "gpu"], "device"),
        (["--host", "localhost"], "host must be 0.0.0.0, 127.0.0.1 or ::"),
        (["--max-batch-size", "many"], "max_batch_size"),
        (["--no-such-flag", "1"], "unrecognized arguments"),
        (["--port", "9000", "--grpc-port", "9000"], "grpc_port must differ from port (9000)"),
    ],
)
def test_a_bad_value_is_a_usage_error(argv, says):
    r = subprocess.run([sys.executable, "-m", "service", *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "usage: python -m service" in r.stderr and says in r.stderr, r.stderr
