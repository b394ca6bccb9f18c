"""CI's own pieces: .ci/run installs from Debian every system tool a test skips without (where Debian has
it), tolerates a machine without apt, and the suite ends by listing what it skipped and why
(tests/conftest.py, pytest_terminal_summary)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from tests.conftest import ROOT, SYSTEM_TOOLS, tool_of

CI_RUN = ROOT / ".ci" / "run"


def ci_tools() -> dict[str, str]:
    """tool -> Debian package, as .ci/run's TOOLS lists them."""
    block = re.search(r"^TOOLS=\((.*?)^\)", CI_RUN.read_text(), re.M | re.S).group(1)
    pairs = [w for ln in block.splitlines() for w in ln.split("#")[0].split()]
    return dict(p.split(":", 1) for p in pairs)


def test_ci_installs_every_tool_debian_has_for_the_tests():
    subprocess.run(["bash", "-n", str(CI_RUN)], check=True)
    assert CI_RUN.stat().st_mode & 0o111
    tools = ci_tools()
    for tool, where in SYSTEM_TOOLS.items():
        if where.startswith("Debian: apt-get install "):
            assert tools.get(tool) == where.removeprefix("Debian: apt-get install "), tool
    assert set(tools) <= set(SYSTEM_TOOLS)  # every tool it installs is one the summary knows
    assert "kubectl" not in tools  # Debian 12's is too old for deploy/k8s: it would turn a skip into a failure


def test_ci_run_without_apt_skips_the_install_and_says_so(tmp_path):
    """On a machine without apt-get (and without the tools), the install step says what it did not
    install and lets the run go on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in ("bash", "dirname", "awk", "id"):
        (bin_dir / cmd).symlink_to(shutil.which(cmd))
    r = subprocess.run(
        [str(bin_dir / "bash"), str(CI_RUN), "--tools-only"],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    packages = " ".join(dict.fromkeys(ci_tools().values()))
    assert f"[ci] no apt-get here: not installing {packages};" in r.stdout


def test_skip_reasons_are_sorted_by_the_tool_they_name():
    assert tool_of("prometheus is not installed (apt-get install prometheus)") == "prometheus"
    assert tool_of("neither docker-compose nor the docker compose plugin is installed") == "docker-compose"
    assert tool_of("Chromium not found: /docs cannot be rendered") == "chromium"
    assert tool_of("needs onnxruntime-gpu (CUDA listed as available)") is None
    assert tool_of("a usable GPU is present: fp32 is served") is None
    assert tool_of("promtoolkit missing") is None  # a word, not a prefix


def test_the_run_ends_listing_what_it_skipped_and_why(tmp_path):
    (tmp_path / "test_inner.py").write_text(
        "import pytest\n\n"
        "def test_runs():\n    pass\n\n"
        "def test_needs_prometheus():\n    pytest.skip('prometheus is not installed')\n\n"
        "@pytest.mark.skipif(True, reason='no GPU here')\n"
        "def test_needs_a_gpu():\n    pass\n"
    )
    inner = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([*inner, "test_inner.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert r.returncode == 0, out + r.stderr
    assert "1 tests skipped for want of a system tool" in out
    assert "prometheus (Debian: apt-get install prometheus): 1 skipped" in out
    assert "  test_inner.py::test_needs_prometheus: prometheus is not installed" in out
    assert "1 tests skipped for other reasons" in out and "test_inner.py::test_needs_a_gpu: no GPU here" in out
    assert out.rstrip().splitlines()[-1].startswith("1 passed, 2 skipped")  # the closing line stays last

    r = subprocess.run([*inner, "test_inner.py::test_runs"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert "system tools: no test skipped for want of one" in r.stdout and "skipped" not in r.stdout.splitlines()[-1]
