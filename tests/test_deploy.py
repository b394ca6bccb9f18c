"""Deployment files, checked offline: the Dockerfile (lint level; deploy/smoke.sh builds and runs
it), docker-compose.yml (docker-compose config and the compose-spec schema), the Prometheus and
Grafana configs (every metric they query is one the real server exports), and the kustomize
manifests (rendered by kubectl, validated against the Kubernetes JSON schemas)."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from importlib import metadata, resources
from pathlib import Path

import httpx
import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from prometheus_client.parser import text_string_to_metric_families

from service.settings import Settings
from tests.conftest import ROOT, make_dry_run
from tests.service_http import wait_for

DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.30.0"  # oldest Kubernetes the manifests are checked against (autoscaling/v2, policy/v1)


# ----------------------------------------------------------------------------- Dockerfile


def dockerfile(path: Path = DEPLOY / "Dockerfile") -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    text = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    )
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(instructions: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for ins, arg in instructions:
        if ins == "FROM":
            name = arg.split(" AS ")[-1].strip() if " AS " in arg else str(len(out))
            out[name] = []
        elif out:
            out[list(out)[-1]].append((ins, arg))
    return out


def test_dockerfile_is_multistage_nonroot_with_healthcheck_and_entrypoint():
    ins = dockerfile()
    assert ins[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    froms = [a for i, a in ins if i == "FROM"]
    assert froms == ["${BASE_IMAGE} AS build", "${BASE_IMAGE} AS runtime"]
    run = stages(ins)["runtime"]
    kinds = [i for i, _ in run]

    users = [a for i, a in run if i == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so Kubernetes runAsNonRoot can verify it
    assert kinds.index("USER") < kinds.index("ENTRYPOINT")

    (health,) = [a for i, a in run if i == "HEALTHCHECK"]
    assert "CMD" in health and "/health" in health and "curl" not in health  # no curl in the image
    (entry,) = [a for i, a in run if i == "ENTRYPOINT"]
    assert json.loads(entry) == ["python", "-m", "service"]
    assert any(i == "COPY" and a == "${MODELS_DIR} /app/models" for i, a in run)
    assert any(i == "COPY" and a.startswith("--from=build /opt/venv") for i, a in run)
    env = " ".join(a for i, a in run if i == "ENV")
    assert "RNNSERVE_MODELS_DIR=/app/models" in env and "RNNSERVE_DEVICE=${DEVICE}" in env
    # HTTP (/v1, /v2, /health, /metrics) and the Open Inference Protocol's gRPC service, at the settings' defaults
    assert "RNNSERVE_PORT=8000" in env and "RNNSERVE_GRPC_PORT=8001" in env
    assert (Settings.model_fields["port"].default, Settings.model_fields["grpc_port"].default) == (8000, 8001)
    exposed = {p for i, a in run if i == "EXPOSE" for p in a.split()}
    assert exposed == {"8000", "8001"}

    build = " ".join(f"{i} {a}" for i, a in stages(ins)["build"])
    assert 'pip install --no-deps -r "deploy/requirements/$ONNXRUNTIME.txt"' in build and "pip check" in build
    assert "pip install --no-deps ." in build
    assert "training" not in build and "tests" not in build and "[train" not in build and "[dev" not in build


# ----------------------------------------------------------------------------- the locks (make lock)

LOCKS = DEPLOY / "requirements"
# Where the locks must hold: the platforms images and developers use, on every Python the images run.
PLATFORMS = {
    "linux-x86_64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"},
    "linux-aarch64": {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "aarch64"},
    "macos-arm64": {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64"},
    "windows-amd64": {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64"},
}
ENVIRONMENTS = {
    f"{name}-py{py}": {
        **default_environment(),
        **platform,
        "os_name": "nt" if platform["sys_platform"] == "win32" else "posix",
        "python_version": py,
        "python_full_version": f"{py}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    for name, platform in PLATFORMS.items()
    for py in ("3.11", "3.12", "3.13")
}


def pyproject_runtime() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ (the images use 3.11+)")
    return [Requirement(d) for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def lock(name: str) -> tuple[list[Requirement], set[str]]:
    """The pins of deploy/requirements/NAME.txt, and the names uv marks as asked for by pyproject."""
    pins: list[Requirement] = []
    direct: set[str] = set()
    for line in (LOCKS / f"{name}.txt").read_text().splitlines():
        if line[:1].isalnum():
            pins.append(Requirement(line))
        elif "rnn-serve (pyproject.toml)" in line:  # a "# via" line under the last pin
            direct.add(canonicalize_name(pins[-1].name))
    return pins, direct


def active(reqs: list[Requirement], env: dict[str, str]) -> list[Requirement]:
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def pinned(pins: list[Requirement], env: dict[str, str]) -> dict[str, str]:
    """name -> the one version the lock installs in `env` (a name pinned twice there is an error)."""
    out: dict[str, str] = {}
    for r in active(pins, env):
        (spec,) = r.specifier
        assert spec.operator == "==", r
        name = canonicalize_name(r.name)
        assert name not in out, f"{name} pinned twice for {env['sys_platform']} {env['python_full_version']}"
        out[name] = spec.version
    return out


# onnxruntime.txt is the CPU image's: pyproject's set with the GPU flavour swapped for the CPU build
FLAVOUR = {"onnxruntime-gpu": {}, "onnxruntime": {"onnxruntime-gpu": "onnxruntime"}}


@pytest.mark.parametrize("flavour", list(FLAVOUR))
def test_lock_pins_exactly_pyprojects_runtime_dependencies_everywhere(flavour):
    """Every runtime dependency of pyproject.toml, under its marker, is pinned by the lock within its
    range, on every platform and Python; nothing else is pinned as asked for by pyproject; no torch.
    Fails when pyproject changes without `make lock`."""
    pins, direct = lock(flavour)
    swap = FLAVOUR[flavour]
    assert "make lock" in (LOCKS / f"{flavour}.txt").read_text().splitlines()[1]
    assert not {canonicalize_name(p.name) for p in pins} & {"torch", "onnx", "onnxscript"}
    if flavour == "onnxruntime":
        assert "onnxruntime-gpu" not in {canonicalize_name(p.name) for p in pins}
    for env_name, env in ENVIRONMENTS.items():
        versions = pinned(pins, env)
        wanted = {}
        for dep in active(pyproject_runtime(), env):
            name = canonicalize_name(dep.name)
            wanted[swap.get(name, name)] = dep
        assert set(wanted) <= set(versions), (env_name, sorted(set(wanted) - set(versions)))
        assert {n for n in direct if n in versions} == set(wanted), env_name
        for name, dep in wanted.items():
            assert dep.specifier.contains(versions[name], prereleases=True), (env_name, name, versions[name], dep)


def test_the_cpu_image_pins_the_onnxruntime_release_the_suite_runs():
    """The CPU build in onnxruntime.txt is the release onnxruntime-gpu.txt pins for Linux x86_64 (the
    flavour `make install` puts in the venv); apart from that flavour the two locks are the same."""
    linux = ENVIRONMENTS["linux-x86_64-py3.11"]
    gpu, cpu = pinned(lock("onnxruntime-gpu")[0], linux), pinned(lock("onnxruntime")[0], linux)
    assert cpu.pop("onnxruntime") == gpu.pop("onnxruntime-gpu")
    assert cpu == gpu
    for env_name, env in ENVIRONMENTS.items():  # elsewhere both locks pin the CPU build, the same release
        if env["platform_machine"] != "x86_64" or env["sys_platform"] != "linux":
            g, c = pinned(lock("onnxruntime-gpu")[0], env), pinned(lock("onnxruntime")[0], env)
            assert set(g) == set(c), env_name


def test_the_suite_runs_the_locked_releases():
    """`make install` installs under onnxruntime-gpu.txt as constraints: every package the lock pins for
    this machine is installed at that release, so what the suite tests is what the images ship."""
    pins, _ = lock("onnxruntime-gpu")
    here = pinned(pins, default_environment())
    assert len(here) >= 20
    wrong = {}
    for name, version in here.items():
        try:
            got = metadata.version(name)
        except metadata.PackageNotFoundError:
            got = None
        if got != version:
            wrong[name] = (version, got)
    assert not wrong, f"(locked, installed): {wrong}; run make install (or make lock after changing pyproject.toml)"


def test_lock_check_can_fail(monkeypatch):
    """The drift the tests above catch: a pyproject dependency the lock does not pin, or pins out of range."""
    env = ENVIRONMENTS["linux-x86_64-py3.11"]
    versions = pinned(lock("onnxruntime")[0], env)
    assert "requests" not in versions  # a dependency added to pyproject without make lock
    assert not Requirement("numpy>=99").specifier.contains(versions["numpy"])  # a range the pin is outside of
    with pytest.raises(AssertionError, match="pinned twice"):
        pinned([Requirement("numpy==1.0"), Requirement("numpy==2.0")], env)


def test_dockerignore_keeps_the_context_small_but_complete():
    patterns = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    for must in (".git", ".venv", "runs", "data", "**/__pycache__", ".pytest_cache"):
        assert must in patterns

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path.split("/")[0], p) for p in patterns)

    for needed in (
        "pyproject.toml",
        "README.md",
        "service/server.py",
        "deploy/requirements/onnxruntime.txt",
        "deploy/requirements/onnxruntime-gpu.txt",
        "deploy/Dockerfile",
        "models/sentiment/model.onnx",
    ):
        assert not ignored(needed), needed


def test_smoke_script_parses():
    smoke = DEPLOY / "smoke.sh"
    assert smoke.stat().st_mode & 0o111, "deploy/smoke.sh must be executable"
    subprocess.run(["bash", "-n", str(smoke)], check=True)


def test_smoke_script_greps_the_request_counts_the_server_exports(server):
    """smoke.sh's /metrics grep, taken from the script, finds the real server's line for each
    protocol once it has answered over it (its labels come sorted: endpoint, protocol, status)."""
    script = (DEPLOY / "smoke.sh").read_text()
    (pattern,) = re.findall(r'grep "\^(rnnserve_requests_total\{.*\} )"', script)
    pattern = pattern.replace('\\"', '"')
    assert httpx.post(f"{server.url}/v1/sentiment", json={"texts": ["fine"]}).status_code == 200
    v2 = {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "data": ["fine"]}]}
    assert httpx.post(f"{server.url}/v2/models/sentiment/infer", json=v2).status_code == 200
    text = tgrpc.InferInput("TEXT", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"fine"], dtype=object))
    tgrpc.InferenceServerClient(server.grpc_url).infer("sentiment", [text])
    lines = httpx.get(f"{server.url}/metrics").text.splitlines()
    for protocol in ("v1", "v2", "grpc"):
        prefix = pattern.replace("$protocol", protocol)
        assert any(ln.startswith(prefix) for ln in lines), (prefix, [ln for ln in lines if "requests_total" in ln])


# ----------------------------------------------------------------------------- arm64 and amd64 images

ARCHES = ("amd64", "arm64")
ELF_MACHINE = {"amd64": 62, "arm64": 183}  # e_machine: EM_X86_64, EM_AARCH64


@pytest.mark.parametrize("script", ["base-image.sh", "qemu-binfmt.sh", "multiarch.sh"])
def test_architecture_scripts_are_executable_and_parse(script):
    path = DEPLOY / script
    assert path.stat().st_mode & 0o111, f"deploy/{script} must be executable"
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_the_dockerfile_builds_any_platform_from_its_base():
    """One Dockerfile for linux/amd64 and linux/arm64: no instruction names an architecture and no
    FROM pins a platform, so `docker build --platform` and the base image decide."""
    ins = dockerfile()
    text = " ".join(f"{i} {a}" for i, a in ins).lower()
    for word in ("amd64", "x86_64", "x86-64", "arm64", "aarch64", "uname -m", "print-architecture"):
        assert word not in text, word
    assert not [a for i, a in ins if i == "FROM" and "--platform" in a]


@pytest.mark.parametrize("arch", ARCHES)
def test_make_builds_verifies_and_smokes_each_architecture_on_a_base_of_it(arch):
    """make image-ARCH, verify-ARCH and smoke-ARCH: the base made by deploy/base-image.sh (under the
    tag the script itself defaults to), built with --platform linux/ARCH from deploy/Dockerfile on
    that base, service.verify run in that image, and smoke.sh given the same platform and base."""
    base_cmd, build, verify, smoke = make_dry_run(f"image-{arch}", f"verify-{arch}", f"smoke-{arch}")
    platform = f"linux/{arch}"

    assert base_cmd[0] == "deploy/base-image.sh" and base_cmd[1] == arch
    base = base_cmd[2]
    (default_tag,) = re.findall(r"^TAG=\$\{2:-(.+)\}$", (DEPLOY / "base-image.sh").read_text(), re.M)
    assert base == default_tag.replace("$ARCH", arch)

    assert build[:2] == ["docker", "build"]
    assert build[build.index("--platform") + 1] == platform
    assert build[build.index("-f") + 1] == "deploy/Dockerfile"
    assert build[build.index("--build-arg") + 1] == f"BASE_IMAGE={base}"
    image = build[build.index("-t") + 1]

    assert verify[:2] == ["docker", "run"] and verify[verify.index("--platform") + 1] == platform
    assert verify[-3:] == [image, "-m", "service.verify"]

    env = dict(w.split("=", 1) for w in smoke if "=" in w and not w.startswith("-"))
    assert smoke[-1] == "deploy/smoke.sh"
    assert (env["PLATFORM"], env["BASE_IMAGE"], env["IMAGE"]) == (platform, base, image)


def test_make_joins_the_images_it_builds_under_one_multiarch_tag():
    commands = make_dry_run("image-multiarch", "MULTIARCH_REF=registry.example/rnn-serve:1")
    images = {build[build.index("-t") + 1] for build in commands if build[:2] == ["docker", "build"]}
    platforms = {build[build.index("--platform") + 1] for build in commands if build[:2] == ["docker", "build"]}
    assert platforms == {f"linux/{arch}" for arch in ARCHES}
    env, script, ref = commands[-1]
    assert (script, ref) == ("deploy/multiarch.sh", "registry.example/rnn-serve:1")
    assert env.startswith("IMAGES=") and set(env.removeprefix("IMAGES=").split()) == images


def test_smoke_script_builds_and_runs_the_platform_it_is_given_and_waits_longer_under_emulation():
    script = (DEPLOY / "smoke.sh").read_text()
    commands = script.replace("\\\n", " ").splitlines()
    for docker in ('"$DOCKER" build ', '"$DOCKER" run -d ', "-m service.verify"):
        (command,) = [c for c in commands if docker in c and not c.lstrip().startswith("#")]
        assert '"${platform_flag[@]}"' in command, command
    # every wait is scaled by SLOW but the 2 s probe of /health (repeated until the scaled deadline)
    assert set(re.findall(r"curl [^|]*?-m (\$\(\([^)]+\)\)|\d+)", script)) == {
        "2",
        "$((30 * SLOW))",
        "$((60 * SLOW))",
        "$((5 * SLOW))",
    }
    assert re.findall(r"seq 1 (\$\(\([^)]+\)\)|\d+)\)", script) == ["$((600 * SLOW))", "$((90 * SLOW))"]
    assert '"$DOCKER" stop -t $((30 * SLOW))' in script


def binfmt_patterns() -> dict[str, tuple[bytes, bytes]]:
    """deploy/qemu-binfmt.sh's ELF magic and mask per architecture, as bytes."""
    script = (DEPLOY / "qemu-binfmt.sh").read_text()
    found = re.findall(r"^  (\w+) \| \w+\)\n\s+machine=\w+\n\s+magic='([^']+)'\n\s+mask='([^']+)'", script, re.M)

    def raw(s: str) -> bytes:
        return bytes.fromhex(s.replace("\\x", "").replace("ELF", b"ELF".hex()))

    return {arch: (raw(magic), raw(mask)) for arch, magic, mask in found}


def test_qemu_binfmt_patterns_match_elf_binaries_of_their_architecture_only():
    patterns = binfmt_patterns()
    assert set(patterns) == set(ARCHES)
    for arch, (magic, mask) in patterns.items():
        assert len(magic) == len(mask) == 20 and magic[:6] == b"\x7fELF\x02\x01"  # 64-bit, little-endian
        assert int.from_bytes(magic[18:20], "little") == ELF_MACHINE[arch]
        assert mask[18:20] == b"\xff\xff"

    def matches(header: bytes) -> set[str]:
        return {
            arch
            for arch, (magic, mask) in patterns.items()
            if bytes(h & m for h, m in zip(header, mask)) == bytes(g & m for g, m in zip(magic, mask))
        }

    # a real executable (this Python) matches its own architecture's pattern and not the other's
    with open(Path(sys.executable).resolve(), "rb") as f:
        header = f.read(20)
    host = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine)
    if host is None:
        pytest.skip(f"no pattern for {os.uname().machine}")
    assert matches(header) == {host}
    # the same header with the other e_machine (what an arm64 or amd64 binary carries) matches only that one
    other = next(a for a in ARCHES if a != host)
    assert matches(header[:18] + ELF_MACHINE[other].to_bytes(2, "little")) == {other}
    assert matches(b"#!/bin/sh\n" + bytes(10)) == set()


# ----------------------------------------------------------------------------- compose

COMPOSE_FILES = [
    ["docker-compose.yml", "docker-compose.override.yml"],
    ["docker-compose.yml", "deploy/compose.host.yml"],
]


def compose_config(files: list[str]) -> dict:
    """The merged compose model (later files override earlier ones, as compose does for maps)."""

    def merge(a: dict, b: dict) -> dict:
        return {
            **a,
            **{k: merge(a[k], v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v for k, v in b.items()},
        }

    out: dict = {}
    for f in files:
        out = merge(out, yaml.safe_load((ROOT / f).read_text()))
    return out


def compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.parametrize("files", COMPOSE_FILES, ids=["bridge", "host"])
def test_compose_config_validates(files):
    cli = compose_cli()
    if cli is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed (the schema test still runs)")
    args = [a for f in files for a in ("-f", f)]
    for profile in ([], ["--profile", "gpu"]):
        r = subprocess.run([*cli, *args, *profile, "config", "-q"], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("files", COMPOSE_FILES, ids=["bridge", "host"])
def test_compose_matches_the_compose_spec_schema(files):
    schema = json.loads(
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    for f in files:
        jsonschema.validate(yaml.safe_load((ROOT / f).read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):  # the check can fail
        jsonschema.validate({"services": {"x": {"depends_on": {"y": {"condition": "healthy-ish"}}}}}, schema)


def test_compose_stack_is_wired_by_health():
    c = compose_config(["docker-compose.yml"])
    svc = c["services"]
    assert set(svc) == {"rnn-serve", "rnn-serve-gpu", "prometheus", "grafana"}
    for name, s in svc.items():
        assert s["healthcheck"]["test"][0] == "CMD", name
    assert "/health" in " ".join(svc["rnn-serve"]["healthcheck"]["test"])
    assert svc["prometheus"]["depends_on"] == {"rnn-serve": {"condition": "service_healthy"}}
    assert svc["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert svc["rnn-serve"]["build"]["dockerfile"] == "deploy/Dockerfile"

    gpu = svc["rnn-serve-gpu"]
    assert gpu["profiles"] == ["gpu"] and "profiles" not in svc["rnn-serve"]
    (dev,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["ONNXRUNTIME"] == "onnxruntime-gpu" and gpu["environment"]["RNNSERVE_DEVICE"] == "cuda"

    for s in svc.values():  # every mounted config exists in the repository
        for vol in s.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), src

    env = svc["rnn-serve"]["environment"]
    assert (env["RNNSERVE_PORT"], env["RNNSERVE_GRPC_PORT"]) == ("8000", "8001")
    bridge = compose_config(COMPOSE_FILES[0])["services"]
    assert bridge["rnn-serve"]["ports"] == ["8000:8000", "8001:8001"]  # HTTP, gRPC
    assert bridge["rnn-serve-gpu"]["ports"] == ["8002:8000", "8003:8001"] and bridge["grafana"]["ports"] == [
        "3000:3000"
    ]
    published = [p.split(":")[0] for s in bridge.values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), published  # no host port published twice
    host = compose_config(COMPOSE_FILES[1])["services"]
    assert {host[n]["network_mode"] for n in ("rnn-serve", "prometheus", "grafana")} == {"host"}
    assert not any("ports" in s for s in host.values())  # docker-compose refuses ports with host networking
    assert "rnn-serve:127.0.0.1" in host["prometheus"]["extra_hosts"]


# ----------------------------------------------------------------------------- Prometheus and Grafana


def dashboard() -> dict:
    return json.loads((DEPLOY / "grafana" / "dashboards" / "rnn-serve.json").read_text())


def queried_metrics() -> set[str]:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [r["expr"] for g in alerts["groups"] for r in g["rules"]]
    return {m for e in exprs for m in re.findall(r"\brnnserve_[a-z_]+\b", e)}


def test_prometheus_scrapes_the_compose_service():
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    port = compose_config(["docker-compose.yml"])["services"]["rnn-serve"]["environment"]["RNNSERVE_PORT"]
    assert jobs["rnn-serve"]["metrics_path"] == "/metrics"
    assert jobs["rnn-serve"]["static_configs"][0]["targets"] == [f"rnn-serve:{port}"]
    assert jobs["rnn-serve-gpu"]["static_configs"][0]["targets"] == [f"rnn-serve-gpu:{port}"]
    assert prom["rule_files"] == ["alerts.yml"]  # beside prometheus.yml, as compose mounts both
    if shutil.which("promtool"):  # Debian's prometheus package has it; checks the config and its rules
        r = subprocess.run(
            ["promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stdout + r.stderr


def test_grafana_provisioning_and_dashboard_shape():
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    prov = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "rnn-serve.yml").read_text())
    mounts = compose_config(["docker-compose.yml"])["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{prov['providers'][0]['options']['path']}:ro" in mounts

    d = dashboard()
    assert d["uid"] == "rnn-serve" and len({p["id"] for p in d["panels"]}) == len(d["panels"])
    titles = " | ".join(p["title"].lower() for p in d["panels"])
    for topic in (
        "request rate",
        "p50 / p95 / p99",
        "errors by status",
        "queue wait",
        "batch size",
        "tokens/s",
        "in-flight",
        "requests by protocol",
    ):
        assert topic in titles, topic
    (by_protocol,) = [p for p in d["panels"] if p["title"] == "Requests by protocol"]
    (target,) = by_protocol["targets"]  # v1 / v2 / grpc: the label every request metric carries (issue 13)
    assert target["expr"].startswith("sum by (protocol) (rate(rnnserve_requests_total{")
    for p in d["panels"]:
        assert p["datasource"]["uid"] == source["uid"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"])
        assert {"x", "y", "w", "h"} <= set(p["gridPos"])


def test_dashboard_and_alerts_query_metrics_the_server_exports(server):
    """Every rnnserve_* series in the dashboard and the alerts exists in the real /metrics."""
    url = server.url
    assert httpx.post(f"{url}/v1/sentiment", json={"texts": ["A fine film."]}).status_code == 200
    assert httpx.post(f"{url}/v1/translate", json={"texts": ["A dog runs."], "target_lang": "de"}).status_code == 200
    big = httpx.post(
        f"{url}/v1/sentiment",
        content=b'{"texts": ["' + b"a" * 2_100_000 + b'"]}',
        headers={"content-type": "application/json"},
    )
    assert big.status_code == 413  # so that the rejected-requests counter has a series
    exported = {s.name for fam in text_string_to_metric_families(httpx.get(f"{url}/metrics").text) for s in fam.samples}
    wanted = queried_metrics()
    assert len(wanted) >= 10
    assert wanted <= exported, sorted(wanted - exported)


def _promql(port: int, expr: str) -> list:
    r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert r["status"] == "success", (expr, r)
    return r["data"]["result"]


def test_a_real_prometheus_scrapes_the_server_and_every_dashboard_and_alert_query_evaluates(server, tmp_path):
    """deploy/prometheus's scrape job and rules, run by a real Prometheus (Debian's package) against
    the real server: every Grafana panel query returns series once traffic (successes, a 413 and a
    422) has flowed, and every alert expression evaluates (none firing: the server is up and well)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "prometheus is not installed (apt-get install prometheus); the config and metric names are still checked"
        )
    from tests.conftest import free_port

    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    prom["global"] = {**prom["global"], "scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "rnn-serve"]
    job["static_configs"][0]["targets"] = [f"127.0.0.1:{server.port}"]
    prom["scrape_configs"] = [job]
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom))
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "rules", str(tmp_path / "alerts.yml")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    port = free_port()
    cmd = [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}"]
    cmd.append(f"--web.listen-address=127.0.0.1:{port}")
    with open(tmp_path / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(
            lambda: _ready(port),
            timeout=30,
            every=0.2,
            what=f"Prometheus ready (log: {tmp_path / 'prometheus.log'})",
        )
        big = b'{"texts": ["' + b"a" * 2_100_000 + b'"]}'
        deadline = time.monotonic() + 4  # several scrapes with traffic in between: rate() needs two samples
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while time.monotonic() < deadline:
                assert c.post("/v1/sentiment", json={"texts": ["A fine film."]}).status_code == 200
                assert c.post("/v1/translate", json={"texts": ["A dog runs."], "target_lang": "de"}).status_code == 200
                assert c.post("/v1/sentiment", json={"texts": []}).status_code == 422
                assert (
                    c.post("/v1/sentiment", content=big, headers={"content-type": "application/json"}).status_code
                    == 413
                )
                time.sleep(0.3)
        wait_for(
            lambda: _promql(port, 'count_over_time(up{job="rnn-serve"}[1m]) >= 8'),
            timeout=30,
            every=0.5,
            what="eight scrapes",
        )
        assert [s["value"][1] for s in _promql(port, 'up{job="rnn-serve"}')] == ["1"]
        for panel in dashboard()["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "1m")  # as Grafana fills it in, for 1 s scrapes
                assert _promql(port, expr), (panel["title"], expr)  # series, not just no error
        alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
        for rule in (r for g in alerts["groups"] for r in g["rules"]):
            assert _promql(port, rule["expr"]) == [], rule["alert"]  # evaluates, and does not fire
        loaded = httpx.get(f"http://127.0.0.1:{port}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert {r["name"] for g in loaded for r in g["rules"]} == {
            r["alert"] for g in alerts["groups"] for r in g["rules"]
        }
    finally:
        proc.terminate()
        proc.wait(30)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


# ----------------------------------------------------------------------------- Kubernetes


def kustomize(path: Path) -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.skip(
            "kubectl is not installed: cannot render kustomize (needs kubectl 1.21+; Debian 12's kubernetes-client is 1.20, too old)"
        )
    r = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    kinds = [d["kind"] for d in docs]
    assert len(kinds) == len(set(kinds)), kinds
    return {d["kind"]: d for d in docs}


@pytest.mark.parametrize("overlay", ["", "overlays/gpu"], ids=["cpu", "gpu"])
def test_kustomize_renders_schema_valid_manifests(overlay):
    docs = kustomize(DEPLOY / "k8s" / overlay)
    assert {d["kind"] for d in docs} == {
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
        kubernetes_validate.validate(d, kubernetes_validate.latest_version(), strict=True)


def test_schema_validation_can_fail():
    deploy = next(d for d in kustomize(DEPLOY / "k8s") if d["kind"] == "Deployment")
    deploy["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = ["http"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, K8S_VERSION, strict=True)
    deploy["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = "http"
    deploy["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of "resources": strict rejects it
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deploy, K8S_VERSION, strict=True)


def test_k8s_deployment_probes_resources_and_wiring(monkeypatch):
    k = by_kind(kustomize(DEPLOY / "k8s"))
    dep, svc, hpa, pdb, cm = (
        k[n] for n in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap")
    )
    pod = dep["spec"]["template"]
    (c,) = pod["spec"]["containers"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    ports = {p["name"]: p for p in c["ports"]}
    assert set(ports) == {"http", "grpc"}
    assert ports["http"]["containerPort"] == int(cm["data"]["RNNSERVE_PORT"]) == 8000
    assert ports["grpc"]["containerPort"] == int(cm["data"]["RNNSERVE_GRPC_PORT"]) == 8001

    ctx = pod["spec"]["securityContext"]
    user = [a for i, a in stages(dockerfile())["runtime"] if i == "USER"][-1]
    assert ctx["runAsNonRoot"] and f"{ctx['runAsUser']}:{ctx['runAsGroup']}" == user
    assert c["securityContext"]["readOnlyRootFilesystem"] and "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(cm["data"]["RNNSERVE_SHUTDOWN_GRACE"])

    assert "replicas" not in dep["spec"]  # the HPA owns it
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["minAvailable"]
    labels = pod["metadata"]["labels"]
    for sel in (
        svc["spec"]["selector"],
        pdb["spec"]["selector"]["matchLabels"],
        dep["spec"]["selector"]["matchLabels"],
    ):
        assert sel.items() <= labels.items()
    assert {p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {"http": "http", "grpc": "grpc"}
    (grpc,) = [p for p in svc["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc["appProtocol"] == "kubernetes.io/h2c"  # gRPC is cleartext HTTP/2
    assert c["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]

    # every ConfigMap key is a real setting, and the values pass the service's own validation
    for key, value in cm["data"].items():
        assert key.startswith("RNNSERVE_") and key[9:].lower() in Settings.model_fields, key
        monkeypatch.setenv(key, value)
    s = Settings()
    assert (s.port, s.grpc_port, s.device, s.max_batch_size) == (8000, 8001, "cpu", 32)


def test_k8s_gpu_overlay_requests_a_gpu_and_cuda():
    k = by_kind(kustomize(DEPLOY / "k8s" / "overlays" / "gpu"))
    (c,) = k["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["image"].endswith(":gpu")
    assert k["ConfigMap"]["data"]["RNNSERVE_DEVICE"] == "cuda"
    assert c["envFrom"][0]["configMapRef"]["name"] == k["ConfigMap"]["metadata"]["name"]
    tolerations = k["Deployment"]["spec"]["template"]["spec"]["tolerations"]
    assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)


def test_makefile_targets_exist():
    make = (ROOT / "Makefile").read_text()
    for target in ("smoke", "loadtest"):
        assert re.search(rf"^{target}:", make, re.M), target
    assert "deploy/smoke.sh" in make and "python -m loadgen" in make
