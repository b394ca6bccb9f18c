"""Where the datasets live, and how to fetch them when they are not there.

The training code reads a data directory: the `--data-dir` flag, defaulting to `../shared/data`
beside the project when it exists, else `./data`. Missing datasets are downloaded from their public originals with a progress bar.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from tqdm import tqdm

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    shared = PROJECT_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else PROJECT_ROOT / "data"


def download(url: str, dest: Path, *, desc: str | None = None) -> Path:
    """Stream `url` to `dest` (atomically, via a temporary file) with a progress bar."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=60) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or None
        fd, name = tempfile.mkstemp(dir=dest.parent, suffix=".part")
        tmp, got = Path(name), 0
        try:
            with os.fdopen(fd, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=desc or dest.name) as bar:
                while chunk := resp.read(1 << 16):
                    f.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            # http.client ends a body the server cut short without an error: check the length, or a
            # truncated archive would be installed in place and never fetched again.
            if total is not None and got != total:
                raise OSError(f"download of {url} incomplete: {got} of {total} bytes")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    shutil.move(tmp, dest)
    return dest


def safe_extract(archive: Path, dest: Path) -> None:
    """Unpack a tar archive, refusing members that would land outside `dest`."""
    dest = dest.resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            target = (dest / m.name).resolve()
            if dest not in target.parents and target != dest:
                raise ValueError(f"archive member escapes the destination: {m.name}")
            if m.issym() or m.islnk():
                raise ValueError(f"archive member is a link, refused: {m.name}")
        for m in tqdm(members, desc=f"unpack {archive.name}", unit="file"):
            tar.extract(m, dest)
