"""The docs cannot lie: every example in README.md and docs/*.md is run against the real server
serving the shipped models, and its shown output checked (tests/doc_examples.py says how); the
files, make targets and modules the docs name exist; the settings table is the settings; and the
figures the docs quote are the ones in the JSON results they cite."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys

import httpx
import pytest

from service.settings import Settings
from tests.conftest import ROOT, Server
from tests.doc_examples import (
    DOC_HOSTS,
    Example,
    blocks,
    examples,
    match,
    match_text,
    parse_curl,
    parse_http,
)

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES: list[Example] = []
PROBLEMS: list[str] = []
for _page in PAGES:
    _found, _problems = examples(_page, ROOT)
    EXAMPLES += _found
    PROBLEMS += _problems


def page_text(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Server:
    """The server on the shipped models/ with its defaults (on CPU), as `make serve` runs it."""
    srv = Server(ROOT / "models", log_dir=tmp_path_factory.mktemp("docs-server"))
    try:
        srv.wait_healthy()
        # Traffic on both endpoints first, so that a /metrics example has its series whatever runs before it.
        httpx.post(f"{srv.url}/v1/sentiment", json={"texts": ["Fine."]}, timeout=30).raise_for_status()
        httpx.post(f"{srv.url}/v1/translate", json={"texts": ["A dog."], "target_lang": "de"}, timeout=30)
        yield srv
    finally:
        srv.stop()


def test_the_docs_have_examples_and_each_shows_its_output():
    assert not PROBLEMS, "\n".join(PROBLEMS)
    pages = {e.page for e in EXAMPLES}
    assert {"README.md", "docs/api.md", "docs/models.md"} <= pages
    assert len(EXAMPLES) >= 15


def test_readme_reads_in_five_minutes():
    assert len(page_text("README.md").splitlines()) <= 200


@pytest.mark.parametrize("ex", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_example(ex: Example, shipped: Server):
    if ex.kind == "python":
        code = DOC_HOSTS.sub(shipped.url, ex.code)
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        errs = match_text(ex.out, run.stdout)
        assert not errs, f"{ex.id}: " + "\n".join(errs) + f"\n--- printed:\n{run.stdout}"
        return
    c = parse_curl(ex.code)
    r = httpx.request(c.method, shipped.url + c.path, headers=c.headers, content=c.body, timeout=60)
    if ex.out_lang == "http":
        assert c.include_headers, f"{ex.id}: an http block shows headers: use curl -i"
        status, headers, body = parse_http(ex.out)
        assert r.status_code == status, f"{ex.id}: status {r.status_code}, shown {status}: {r.text[:500]}"
        for k, v in headers.items():
            assert k in r.headers, f"{ex.id}: no {k} header"
            assert v == "..." or r.headers[k] == v, f"{ex.id}: {k}: {r.headers[k]!r}, shown {v!r}"
    else:
        assert r.status_code == 200, f"{ex.id}: status {r.status_code}: {r.text[:500]}"
        body = ex.out
    if body.strip().startswith(("{", "[")):
        errs = match(json.loads(body), r.json())
        assert not errs, f"{ex.id}:\n" + "\n".join(errs) + f"\n--- got:\n{r.text[:3000]}"
    else:
        text = r.text
        if c.grep:
            text = "\n".join(line for line in text.splitlines() if c.grep in line)
        errs = match_text(body, text)
        assert not errs, f"{ex.id}: " + "\n".join(errs) + f"\n--- got:\n{text[:3000]}"
