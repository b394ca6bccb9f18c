"""Print the server's runtime requirements from pyproject.toml, with one ONNX Runtime flavour.

pyproject.toml is the one list of runtime dependencies. It asks for onnxruntime-gpu on Linux
x86_64, which weighs ~340 MB more than the CPU build and is useless in a CPU image; an image
therefore names the flavour it wants and keeps pyproject's version bound:

    python deploy/requirements.py --onnxruntime onnxruntime      > requirements.txt   # CPU image
    python deploy/requirements.py --onnxruntime onnxruntime-gpu  > requirements.txt   # CUDA image

Standard library only (it runs in the image's build stage before anything is installed).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    sys.exit("deploy/requirements.py needs Python 3.11+ (tomllib)")

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
FLAVOURS = ("onnxruntime", "onnxruntime-gpu")


def runtime_requirements(pyproject: Path, onnxruntime: str) -> list[str]:
    if onnxruntime not in FLAVOURS:
        raise ValueError(f"--onnxruntime must be one of {FLAVOURS}, not {onnxruntime!r}")
    deps: list[str] = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    out, bound, found = [], "", False
    for dep in deps:
        m = _NAME.match(dep)
        if m is None:
            raise ValueError(f"unparsable dependency {dep!r} in {pyproject}")
        if m.group(1).lower() in FLAVOURS:
            # keep the version bound, drop the platform marker: the image decides the flavour
            bound, found = bound or dep[m.end():].split(";")[0].strip(), True
            continue
        out.append(dep)
    if not found:
        raise ValueError(f"{pyproject} lists no onnxruntime dependency")
    return [*out, f"{onnxruntime}{bound}"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parent.parent / "pyproject.toml")
    p.add_argument("--onnxruntime", default="onnxruntime", choices=FLAVOURS)
    args = p.parse_args(argv)
    print("\n".join(runtime_requirements(args.pyproject, args.onnxruntime)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
