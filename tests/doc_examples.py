"""The examples in README.md and docs/*.md, read from the markdown, and how their shown output is
compared with what the real server answers (tests/test_docs.py runs them).

An example is a fenced `bash` block holding one `curl` command, or a `python` block, followed at
once (nothing but blank lines between) by the block showing its output:
- `json`: the response body of a 200;
- `http`: the status line, some headers and the body (for `curl -i`);
- `text`: a plain body (`/health`), or lines of `/metrics` (after `| grep PATTERN`), or what a
  python block prints.
After a model changes, `python -m tests.doc_examples URL` prints what a running server answers to
each example, to update the docs from.

Shown output is a pattern of the real one:
- JSON objects have exactly the keys shown, unless one of them is `"...": "..."` (others allowed);
  a list has the length shown, unless its last item is `"..."` (more allowed); the string `"..."`
  matches any value, and a string ending in `...` matches any string it begins;
- numbers match within 0.01 or 1%, whichever is larger (the docs show them rounded), or within
  the rounding of a number shown with one decimal or none, give or take that 0.01 (-3.8: from
  -3.86 to -3.74; int8 kernels differ by CPU in the second decimal); integers
  shown as integers match exactly; strings, booleans and null exactly;
- text lines must each be in the real output; in `/metrics` output a Prometheus sample line
  matches on its name and labels (its value counts the traffic so far); other lines, and every
  line a python example prints, compare their numbers as above.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
OUTPUT_LANGS = ("json", "http", "text")
# The server every example is written against; the test points it at its own.
DOC_HOSTS = re.compile(r"(?:https?://)?(?:localhost|127\.0\.0\.1):8000")
DOC_GRPC = re.compile(r"(?:localhost|127\.0\.0\.1):8001")  # the Open Inference Protocol over gRPC
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
PROM_SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*(?:\{.*\})?) \S+$")


@dataclass
class Block:
    lang: str
    code: str
    line: int  # 1-based line of the opening fence
    end: int  # offset just after the closing fence


@dataclass
class Example:
    page: str
    line: int
    kind: str  # "curl" or "python"
    code: str
    out_lang: str
    out: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def point_at(code: str, url: str, grpc: str | None = None) -> str:
    """A python example's code aimed at the server at `url` (http://host:port) and `grpc`
    (host:port): an address written with a scheme gets the scheme, one without (tritonclient's
    form) gets host:port."""
    if grpc:
        code = DOC_GRPC.sub(grpc, code)
    bare = url.split("://", 1)[-1]
    return DOC_HOSTS.sub(lambda m: url if "://" in m.group(0) else bare, code)


@dataclass
class Curl:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    include_headers: bool = False
    grep: str | None = None


def blocks(text: str) -> list[Block]:
    return [Block(m[1], m[2], text.count("\n", 0, m.start()) + 1, m.end()) for m in FENCE.finditer(text)]


def examples(path: Path, root: Path) -> tuple[list[Example], list[str]]:
    """The page's examples, and the problems found reading it (a curl with no output shown, ...)."""
    text = path.read_text(encoding="utf-8")
    page = str(path.relative_to(root))
    bs = blocks(text)
    found, problems = [], []
    for i, b in enumerate(bs):
        is_curl = b.lang in ("bash", "sh", "console") and re.search(r"^\s*curl\s", b.code, re.M)
        if not (is_curl or b.lang == "python"):
            continue
        nxt = bs[i + 1] if i + 1 < len(bs) else None
        between = text[b.end : text.find("```", b.end + 1)] if nxt else ""
        if nxt is None or nxt.lang not in OUTPUT_LANGS or between.strip():
            problems.append(
                f"{page}:{b.line}: a {'curl' if is_curl else 'python'} example with no output block after it"
            )
            continue
        if is_curl and len(re.findall(r"^\s*curl\s", b.code, re.M)) != 1:
            problems.append(f"{page}:{b.line}: one curl command per example block")
            continue
        found.append(Example(page, b.line, "curl" if is_curl else "python", b.code, nxt.lang, nxt.code))
    return found, problems


def parse_curl(code: str) -> Curl:
    """The curl command of an example block (comments and line continuations allowed)."""
    cmd = " ".join(line.split(" #")[0] for line in code.replace("\\\n", " ").splitlines() if line.strip())
    words = shlex.split(cmd)
    grep = None
    if "|" in words:
        cut = words.index("|")
        tail, words = words[cut + 1 :], words[:cut]
        if tail[:1] != ["grep"] or len(tail) != 2:
            raise ValueError(f"only `| grep PATTERN` may follow curl in an example: {tail}")
        grep = tail[1]
    assert words[0] == "curl", words
    c = Curl(method="GET", path="", grep=grep)
    it = iter(words[1:])
    for w in it:
        if w in ("-s", "-S", "-sS", "--silent"):
            continue
        if w in ("-i", "-si", "--include"):
            c.include_headers = True
        elif w in ("-H", "--header"):
            k, v = next(it).split(":", 1)
            c.headers[k.strip()] = v.strip()
        elif w in ("-d", "--data", "--data-raw"):
            c.body = next(it)
            c.method = "POST" if c.method == "GET" else c.method
        elif w in ("-X", "--request"):
            c.method = next(it)
        elif DOC_HOSTS.match(w):
            c.path = DOC_HOSTS.sub("", w, count=1) or "/"
        else:
            raise ValueError(f"curl option the docs test does not know: {w!r}")
    if not c.path:
        raise ValueError(f"no localhost:8000 URL in {cmd!r}")
    if c.body is not None and not any(k.lower() == "content-type" for k in c.headers):
        c.headers["Content-Type"] = "application/x-www-form-urlencoded"  # what curl -d sends
    return c


class Shown(float):
    """A number as a doc writes it: its value, and the decimals it is written with."""

    decimals: int

    def __new__(cls, text: str) -> Shown:
        value = super().__new__(cls, float(text))
        mantissa = text.lower().split("e")[0]
        value.decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return value


def shown_json(text: str) -> Any:
    """A shown JSON body, its numbers remembering how they were written."""
    return json.loads(text, parse_float=Shown)


def close(shown: float, actual: float) -> bool:
    """Within 0.01 or 1%; a number written with one decimal or none also stands for what rounds to
    it, give or take 0.01 (int8 kernels differ by CPU in the second decimal)."""
    tol = max(0.01, 0.01 * abs(shown))
    if isinstance(shown, Shown) and shown.decimals <= 1:
        tol = max(tol, 0.5 * 10**-shown.decimals + 0.01 + 1e-9)
    return abs(actual - shown) <= tol


def match(shown: Any, actual: Any, where: str = "$") -> list[str]:
    """Where `actual` does not fit the `shown` pattern (empty when it does)."""
    if shown == "...":
        return []
    if isinstance(shown, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r:.80}"]
        errs = []
        keys = [k for k in shown if k != "..."]
        missing = [k for k in keys if k not in actual]
        extra = [] if "..." in shown else [k for k in actual if k not in shown]
        if missing or extra:
            errs.append(f"{where}: keys missing {missing}, not shown {extra}")
        for k in keys:
            if k in actual:
                errs += match(shown[k], actual[k], f"{where}.{k}")
        return errs
    if isinstance(shown, list):
        if not isinstance(actual, list):
            return [f"{where}: expected a list, got {actual!r:.80}"]
        open_end = bool(shown) and shown[-1] == "..."
        items = shown[:-1] if open_end else shown
        if len(actual) < len(items) or (not open_end and len(actual) != len(items)):
            return [f"{where}: {len(actual)} items, shown {len(items)}{' or more' if open_end else ''}"]
        return [e for i, s in enumerate(items) for e in match(s, actual[i], f"{where}[{i}]")]
    if isinstance(shown, bool) or shown is None:
        return [] if actual is shown else [f"{where}: {actual!r} is not {shown!r}"]
    if isinstance(shown, int) and isinstance(actual, int) and not isinstance(actual, bool):
        return [] if actual == shown else [f"{where}: {actual} is not {shown}"]
    if isinstance(shown, (int, float)):
        ok = isinstance(actual, (int, float)) and not isinstance(actual, bool) and close(shown, actual)
        return [] if ok else [f"{where}: {actual!r} is not {shown} (within 0.01 or 1%)"]
    if isinstance(shown, str):
        if shown.endswith("...") and isinstance(actual, str) and actual.startswith(shown[:-3]):
            return []
        return [] if actual == shown else [f"{where}: {actual!r} is not {shown!r}"]
    raise TypeError(f"{where}: cannot compare a shown {type(shown).__name__}")


def line_matches(shown: str, actual: str, prometheus: bool = False) -> bool:
    """`prometheus`: the lines are /metrics samples, matched on name and labels alone."""
    if prometheus and (m := PROM_SAMPLE.match(shown)):
        a = PROM_SAMPLE.match(actual)
        return bool(a) and a[1] == m[1]
    s_parts, a_parts = NUMBER.split(shown), NUMBER.split(actual)
    if s_parts != a_parts:
        return False
    return all(close(float(s), float(a)) for s, a in zip(NUMBER.findall(shown), NUMBER.findall(actual), strict=True))


def match_text(shown: str, actual: str, prometheus: bool = False) -> list[str]:
    lines = actual.splitlines()
    return [
        f"line not in the output: {s!r}"
        for s in shown.splitlines()
        if s.strip() and not any(line_matches(s, a, prometheus) for a in lines)
    ]


def parse_http(out: str) -> tuple[int, dict[str, str], str]:
    """Status, headers (lower-case names) and body of a shown `http` block."""
    head, _, body = out.partition("\n\n")
    status_line, *header_lines = head.splitlines()
    status = int(status_line.split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return status, headers, body


# --- tables and figures ---------------------------------------------------------------------------

SHOWN_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")


def tables(text: str) -> list[list[list[str]]]:
    """Every markdown table outside code blocks: rows of cells, header first (separator dropped)."""
    for b in blocks(text):
        text = text.replace(b.code, "")
    out, cur = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                cur.append(cells)
        elif cur:
            out.append(cur)
            cur = []
    return out


def table(text: str, first_header: str) -> list[list[str]]:
    """The table whose first header cell is `first_header`, header row included."""
    found = [t for t in tables(text) if t[0][0] == first_header]
    assert len(found) == 1, f"{len(found)} tables headed {first_header!r}"
    return found[0]


def shown_numbers(cell: str) -> list[tuple[float, int]]:
    """The numbers written in a cell, each with its count of decimals ("1,425.0" -> (1425.0, 1))."""
    out = []
    for m in SHOWN_NUMBER.findall(cell.replace("−", "-")):
        digits = m.replace(",", "")
        out.append((float(digits), len(digits.split(".")[1]) if "." in digits else 0))
    return out


def figures_agree(cells: list[str], expected: list[float], where: str) -> list[str]:
    """The numbers in `cells`, in order, are `expected` rounded to the decimals shown."""
    shown = [n for c in cells for n in shown_numbers(c)]
    if len(shown) != len(expected):
        return [f"{where}: {len(shown)} numbers shown, {len(expected)} expected: {cells}"]
    return [
        f"{where}: shows {v:g}, the results say {e:g}"
        for (v, dec), e in zip(shown, expected, strict=True)
        if abs(v - e) > 0.5 * 10**-dec + 1e-9
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def main() -> None:
    """Print what a running server answers to every example, to update the docs after a model
    changes: python -m tests.doc_examples [URL [GRPC]] (default http://127.0.0.1:8000 127.0.0.1:8001)."""
    import subprocess
    import sys

    import httpx

    root = Path(__file__).resolve().parent.parent
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    grpc = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:8001"
    for page in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for ex in examples(page, root)[0]:
            print(f"--- {ex.id} ({ex.kind})")
            if ex.kind == "python":
                run = subprocess.run(
                    [sys.executable, "-c", point_at(ex.code, url, grpc)], cwd=root, capture_output=True, text=True
                )
                print(run.stdout + run.stderr)
                continue
            c = parse_curl(ex.code)
            r = httpx.request(c.method, url + c.path, headers=c.headers, content=c.body, timeout=60)
            text = r.text if not c.grep else "\n".join(x for x in r.text.splitlines() if c.grep in x)
            print(r.status_code, text[:4000])


if __name__ == "__main__":
    main()
