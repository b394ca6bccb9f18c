"""Dataset download and unpacking (training.data, the IMDB and Multi30k readers) against a local
HTTP server serving archives the tests build."""

from __future__ import annotations

import gzip
import io
import tarfile
import threading
import urllib.error
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.synthetic import write_imdb
from training.data import download, safe_extract
from training.sentiment.data import load_split
from training.translation.data import load_lines, load_pair

TRUNCATED = "/truncated/"  # served with a Content-Length twice the body, then the connection closes


@dataclass
class Site:
    root: Path
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    requests: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *a):
            pass

        def do_GET(self):
            requests.append(self.path)
            if self.path.startswith(TRUNCATED):
                body = (root / self.path[len(TRUNCATED) :]).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(2 * len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True
                return
            super().do_GET()

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Site(root, f"http://127.0.0.1:{srv.server_address[1]}", requests)
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def add_file(tar: tarfile.TarFile, name: str, data: bytes | str, **attrs) -> None:
    data = data.encode("utf-8") if isinstance(data, str) else data
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data))


REVIEWS = {  # (split, label dir, file) -> text; the official layout, file names "<id>_<rating>.txt"
    ("train", "pos", "0_9.txt"): "A wonderful film.<br /><br />I loved every minute.",
    ("train", "pos", "1_10.txt"): "Superb acting — the best of the year. Café scenes too!",
    ("train", "neg", "0_1.txt"): "Awful. Boring plot, dull characters.",
    ("train", "neg", "1_3.txt"): "I want my two hours back.",
    ("train", "neg", "2_2.txt"): "Terrible; just terrible.",
    ("test", "pos", "0_8.txt"): "Moving and beautiful.",
    ("test", "neg", "0_4.txt"): "Stupid and bad.",
}


def write_imdb_archive(path: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        add_file(tar, "aclImdb/README", "Large Movie Review Dataset v1.0")
        add_file(tar, "aclImdb/imdb.vocab", "the\nand\n")
        for (split, label, name), text in REVIEWS.items():
            add_file(tar, f"aclImdb/{split}/{label}/{name}", text)
        add_file(tar, "aclImdb/train/unsup/0_0.txt", "Unlabelled reviews are not read.")
        add_file(tar, "aclImdb/train/labeledBow.feat", "9 0:1\n")


def expected(split: str) -> set[tuple[str, int]]:
    return {(t, int(lab == "pos")) for (s, lab, _), t in REVIEWS.items() if s == split}


# --- IMDB --------------------------------------------------------------------------------------


def test_imdb_is_downloaded_unpacked_and_read(site, tmp_path):
    write_imdb_archive(site.root / "aclImdb_v1.tar.gz")
    data = tmp_path / "data"
    data.mkdir()
    url = f"{site.url}/aclImdb_v1.tar.gz"
    train = load_split(data, "train", url=url)
    assert {(r.text, r.label) for r in train} == expected("train")
    assert len(train) == 5  # unsup/ is not a labelled split
    assert site.requests == ["/aclImdb_v1.tar.gz"]
    assert (data / "aclImdb_v1.tar.gz").is_file() and (data / "aclImdb" / "train" / "pos" / "0_9.txt").is_file()
    assert not list(data.glob("*.part"))
    # Unpacked once: the test split and a second read need no network.
    test = load_split(data, "test", url=url)
    assert {(r.text, r.label) for r in test} == expected("test")
    assert load_split(data, "train", url=url) == train
    assert site.requests == ["/aclImdb_v1.tar.gz"]


def test_imdb_archive_already_downloaded_is_only_unpacked(site, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_imdb_archive(data / "aclImdb_v1.tar.gz")
    assert {(r.text, r.label) for r in load_split(data, "test", url=f"{site.url}/nothing-here")} == expected("test")
    assert site.requests == []


def test_imdb_shared_jsonl_copy_is_preferred(site, tmp_path):
    write_imdb(tmp_path, n_train=10, n_test=6)
    reviews = load_split(tmp_path, "test", url=f"{site.url}/aclImdb_v1.tar.gz")
    assert len(reviews) == 6 and {r.label for r in reviews} == {0, 1}
    assert site.requests == []


def test_imdb_unknown_split_refused(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_split(tmp_path, "validation")


def test_missing_archive_on_server_leaves_nothing_behind(site, tmp_path):
    data = tmp_path / "data"
    with pytest.raises(urllib.error.HTTPError):
        load_split(data, "train", url=f"{site.url}/aclImdb_v1.tar.gz")
    assert not data.exists() or not any(data.iterdir())


def test_truncated_download_is_refused_and_retried(site, tmp_path):
    # A server that closes the connection early: http.client returns the short body without an
    # error, so download() must compare against Content-Length, or the broken archive would be
    # installed for good (it is never fetched again once present).
    write_imdb_archive(site.root / "aclImdb_v1.tar.gz")
    data = tmp_path / "data"
    with pytest.raises(OSError, match="incomplete"):
        load_split(data, "train", url=f"{site.url}{TRUNCATED}aclImdb_v1.tar.gz")
    assert not any(data.iterdir())  # neither the archive nor a .part file
    train = load_split(data, "train", url=f"{site.url}/aclImdb_v1.tar.gz")
    assert {(r.text, r.label) for r in train} == expected("train")


def test_download_streams_to_destination(site, tmp_path):
    payload = bytes(range(256)) * 1000  # several read chunks
    (site.root / "blob.bin").write_bytes(payload)
    dest = tmp_path / "sub" / "dir" / "blob.bin"
    assert download(f"{site.url}/blob.bin", dest) == dest
    assert dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["blob.bin"]


# --- safe extraction ---------------------------------------------------------------------------


@pytest.mark.parametrize("evil", ["../evil.txt", "aclImdb/../../evil.txt", "{tmp}/evil.txt"])
def test_safe_extract_refuses_members_escaping_the_destination(tmp_path, evil):
    evil = evil.format(tmp=tmp_path)  # the last one is an absolute path
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_file(tar, "aclImdb/train/pos/0_9.txt", "fine")  # a harmless member first
        add_file(tar, evil, "pwned")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ValueError, match="escapes"):
        safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not any(dest.iterdir())  # checked before anything is written


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_safe_extract_refuses_links(tmp_path, kind):
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tar:
        add_file(tar, "aclImdb/link", b"", type=kind, linkname="/etc/passwd")
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ValueError, match="link"):
        safe_extract(archive, dest)
    assert not any(dest.iterdir())


def test_malicious_archive_from_the_server_is_refused(site, tmp_path):
    with tarfile.open(site.root / "aclImdb_v1.tar.gz", "w:gz") as tar:
        add_file(tar, "aclImdb/train/pos/0_9.txt", "fine")
        add_file(tar, "../../outside.txt", "pwned")
    data = tmp_path / "a" / "b" / "data"
    with pytest.raises(ValueError, match="escapes"):
        load_split(data, "train", url=f"{site.url}/aclImdb_v1.tar.gz")
    assert not (tmp_path / "a" / "outside.txt").exists()
    assert not (data / "aclImdb").exists()


# --- Multi30k ----------------------------------------------------------------------------------

M30K = {
    "train": {
        "en": ["A man runs.", "Two dogs play in the snow."],
        "de": ["Ein Mann rennt.", "Zwei Hunde spielen im Schnee."],
        "fr": ["Un homme court.", "Deux chiens jouent dans la neige."],
    },
    "test_2016_flickr": {
        "en": ["A café on a street."],
        "de": ["Ein Café an einer Straße."],
        "fr": ["Un café dans une rue."],
    },
}


@pytest.fixture
def m30k_site(site):
    raw = site.root / "data" / "task1" / "raw"
    raw.mkdir(parents=True)
    for split, langs in M30K.items():
        for lang, lines in langs.items():
            with gzip.open(raw / f"{split}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.writelines(line + "\n" for line in lines)
    site.base = f"{site.url}/data/task1/raw"
    return site


def test_multi30k_lines_are_downloaded_and_read(m30k_site, tmp_path):
    data = tmp_path / "data"
    assert load_lines(data, "train", "de", base_url=m30k_site.base) == M30K["train"]["de"]
    assert (data / "multi30k" / "train.de.gz").is_file()
    assert m30k_site.requests == ["/data/task1/raw/train.de.gz"]
    assert load_lines(data, "train", "de", base_url=m30k_site.base) == M30K["train"]["de"]
    assert len(m30k_site.requests) == 1  # cached on disk


def test_multi30k_pairs_and_split_names(m30k_site, tmp_path):
    data = tmp_path / "data"
    src, tgt = load_pair(data, "test", "en", "fr", base_url=m30k_site.base)  # "test" is test2016 flickr
    assert (src, tgt) == (M30K["test_2016_flickr"]["en"], M30K["test_2016_flickr"]["fr"])
    assert sorted(m30k_site.requests) == [
        "/data/task1/raw/test_2016_flickr.en.gz",
        "/data/task1/raw/test_2016_flickr.fr.gz",
    ]


def test_multi30k_misaligned_pair_refused(m30k_site, tmp_path):
    with gzip.open(m30k_site.root / "data" / "task1" / "raw" / "train.fr.gz", "wt", encoding="utf-8") as f:
        f.write("Une seule ligne.\n")
    with pytest.raises(ValueError, match="1 fr lines"):
        load_pair(tmp_path / "data", "train", "en", "fr", base_url=m30k_site.base)


def test_multi30k_missing_file_on_server(m30k_site, tmp_path):
    with pytest.raises(urllib.error.HTTPError):
        load_lines(tmp_path / "data", "val", "en", base_url=m30k_site.base)
    assert not (tmp_path / "data" / "multi30k" / "val.en.gz").exists()
