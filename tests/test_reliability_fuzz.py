"""Schemathesis against the server's own /openapi.json: both /v1 endpoints, schema-valid requests
(every one must be answered 200) and schema-violating ones (every one must be refused with a
documented 4xx), each response checked against the documented status codes, content types,
headers and body schemas, and never a 5xx.

RNNSERVE_FUZZ_EXAMPLES sets the examples per endpoint and mode (default 150 here; `make fuzz`
runs thousands). A second test runs schemathesis' own command line over every operation with its
explicit examples and its boundary-value ("coverage") phase."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from tests.service_http import log_records

EXAMPLES = int(os.environ.get("RNNSERVE_FUZZ_EXAMPLES", "150"))
SEEN: Counter[tuple[str, str, int]] = Counter()  # (path, mode, status) -> responses, for the summary


@pytest.fixture(scope="module")
def api(server):
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


def fuzz(op, mode: GenerationMode, send: Callable[[Any], int], seen_as: str) -> Counter[int]:
    """Send EXAMPLES generated cases of `op` in `mode` through `send` (case -> status); the statuses."""
    statuses: Counter[int] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case):
        statuses[send(case)] += 1

    run()
    for status, n in statuses.items():
        SEEN[(seen_as, mode.value, status)] += n
    assert sum(statuses.values()) >= EXAMPLES * 0.9, statuses  # the examples really reached the server
    return statuses


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("path", ["/v1/sentiment", "/v1/translate"])
def test_fuzz(api, server, path, mode):
    def send(case) -> int:
        # All of schemathesis' checks: no 5xx, status code documented, content type, headers and
        # body conform to the schema; valid data accepted, invalid data rejected.
        return case.call_and_validate(base_url=server.url, timeout=60).status_code

    statuses = fuzz(api[path]["POST"], mode, send, path)
    total = sum(statuses.values())
    if mode == GenerationMode.POSITIVE:
        assert set(statuses) == {200}, statuses
    else:
        assert all(400 <= s < 500 for s in statuses), statuses
        assert statuses[422] >= total * 0.5, statuses  # mostly refused by validation, not by accident


OIP_INFER = "/v2/models/{model_name}/infer"


@pytest.mark.parametrize("model", ["sentiment", "translate-en-de"])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_fuzz_oip_inference(api, server, mode, model):
    """The Open Inference Protocol's inference route, from its OpenAPI description, on a real model:
    any tensors. Its schema is the protocol's (any name, datatype, shape), so a schema-valid request
    is mostly refused too (no such input, datatype or shape): every answer must be a documented
    status with a body that fits its schema, a 200 only with outputs, and never a 5xx."""
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    def send(case) -> int:
        case.path_parameters = {"model_name": model}
        r = case.call_and_validate(base_url=server.url, timeout=60, excluded_checks=[positive_data_acceptance])
        if r.status_code == 200:
            assert r.json()["outputs"]
        else:
            assert r.json()["error"]
        return r.status_code

    statuses = fuzz(api[OIP_INFER]["POST"], mode, send, OIP_INFER.replace("{model_name}", model))
    assert all(s == 200 or 400 <= s < 500 for s in statuses), statuses


def test_boundary_values_and_examples_of_every_operation(server, tmp_path):
    """`st run` with the documented examples and the coverage phase (boundaries: 0, 1, 63, 64 and
    65 texts, a text one character over the limit, beam 0, 1, 8 and 9, 3.0 for 3, missing and null
    fields, wrong types)."""
    st = Path(sys.executable).parent / "st"
    out = subprocess.run(
        [
            str(st),
            "run",
            f"{server.url}/openapi.json",
            "--phases",
            "examples,coverage",
            "--checks",
            "all",
            "--request-timeout",
            "60",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    m = re.search(r"(\d+) generated, (\d+) passed", out.stdout)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) >= 200, out.stdout[-3000:]
    print(f"schemathesis examples + coverage phases: {m.group(1)} test cases, all passed")


def test_fuzzing_left_no_server_error_in_the_log(server):
    bad = [r for r in log_records(server) if r.get("status", 0) >= 500 or r.get("level") == "error"]
    assert not bad, bad[:3]
    if SEEN:
        print("fuzzed responses by (path, mode, status):", dict(sorted(SEEN.items())))
