"""Hostile archives: small inputs that would take unbounded memory, disk or time (a member far
bigger than its archive, a decompression bomb, a size cap with a huge member behind it) are
streamed, capped or refused with one line; a capped source unpacks only what its cap can use."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lmforge.corpus.archives import FetchError, Limits, unpack
from lmforge.corpus.fetch import fetch_corpus
from tests.corpus.test_fetch import docs_of, make_tar


# --- bounded work -----------------------------------------------------------------------------------
class _Fill(io.RawIOBase):
    def __init__(self, n: int, byte: bytes = b"\0"):
        self.left, self.byte = n, byte

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = self.byte * n
        self.left -= n
        return n


def big_tar(path: Path, kind: str, small: dict[str, bytes], big: dict[str, int]) -> Path:
    """A tar.gz / tar.zst with ``small`` members and ``big`` members of that many zero bytes, streamed."""
    import zstandard

    with open(path, "wb") as raw:
        f = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) if kind == "gz" else zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False)
        with f, tarfile.open(fileobj=f, mode="w|") as tf:
            for name, data in small.items():
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            for name, size in big.items():
                ti = tarfile.TarInfo(name)
                ti.size = size
                tf.addfile(ti, io.BufferedReader(_Fill(size), 1 << 20))
    return path


MEASURE = """
import sys, time
from lmforge.corpus.archives import Limits, unpack
import zstandard  # its import is not the member's memory
# this process's own peak (ru_maxrss would start at the parent's: Linux carries it across exec)
peak = lambda: int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
before = peak()
t = time.perf_counter()
written, info = unpack(sys.argv[1], sys.argv[2], lambda r: True, limits=Limits(max_ratio=1e9))
print(sorted(written), round(time.perf_counter() - t, 2), (peak() - before) // 1024)
"""


@pytest.mark.parametrize("kind", ["zst", "gz"])
def test_a_big_member_streams_in_bounded_memory_and_time(tmp_path, kind):
    size = 96 << 20  # a legitimate member, just big (its zeros compress past the bomb ratio: not checked here)
    a = big_tar(tmp_path / f"p.tar.{kind}", kind, {"pkg/small.txt": b"hello"}, {"pkg/big.bin": size})
    assert a.stat().st_size < 100_000
    r = subprocess.run([sys.executable, "-c", MEASURE, str(a), str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    written, seconds, grew_mb = r.stdout.rsplit(" ", 2)
    assert written == "['pkg/big.bin', 'pkg/small.txt']" and (tmp_path / "out/pkg/big.bin").stat().st_size == size
    # reading the member whole took its size (zst: quadratic copies, minutes); streamed, the peak is a
    # few buffers whatever the size (zst: up to 8 MiB out of one decompress call, twice while it is replaced)
    assert float(seconds) < 30 and int(grew_mb) < 32, grew_mb


@pytest.mark.parametrize("kind", ["zst", "gz"])
def test_a_decompression_bomb_is_refused(tmp_path, kind):
    a = big_tar(tmp_path / f"bomb.tar.{kind}", kind, {"pkg/a.txt": b"text"}, {"pkg/zeros.txt": 100 << 20})
    with pytest.raises(FetchError, match=rf"^bomb.tar.{kind}: compression ratio over 200x \(.* bytes from .*\): a decompression bomb\?"):
        unpack(a, tmp_path / "u", lambda r: r == "pkg/a.txt")
    r = {"sources": [{"name": "bomb", "kind": "local", "local": str(a), "files": ["pkg/*.txt"], "domain": "d"}]}
    with pytest.warns(UserWarning, match="decompression bomb"):
        m = fetch_corpus(r, tmp_path / "out", progress=False)
    assert "compression ratio" in m["skipped"]["bomb"] and "\n" not in m["skipped"]["bomb"]
    assert not list((tmp_path / "out").rglob("*.jsonl.gz"))
    # a genuine, highly compressible archive can be let through
    assert unpack(a, tmp_path / "u2", lambda r: r == "pkg/a.txt", limits=Limits(max_ratio=1e9))[0] == ["pkg/a.txt"]


def test_member_and_total_limits(tmp_path):
    a = tmp_path / "p.tgz"
    a.write_bytes(make_tar({"package/a.txt": b"a" * 500, "package/big.txt": b"b" * 5000, "package/c.txt": b"c" * 900}, "w:gz"))
    src = {"name": "s", "kind": "npm", "package": "p", "local": str(a), "files": ["*.txt"], "domain": "d", "max_member_bytes": 1000}
    (e,) = fetch_corpus({"sources": [src]}, tmp_path / "out", progress=False)["sources"]
    assert e["status"] == "ok" and e["documents"] == 2 and e["files_matched"] == 3
    assert e["skipped"] == {"larger than max_member_bytes (1,000 bytes)": 1}
    with pytest.warns(UserWarning):
        (e,) = fetch_corpus({"sources": [dict(src, max_member_bytes=10_000, max_unpacked_bytes=5_000)]}, tmp_path / "out", progress=False)["sources"]
    assert e["status"] == "skipped" and e["reason"] == "p.tgz: more than 5,000 bytes unpacked (max_unpacked_bytes); raise it for a package this big"


CAPPED = """
import json, resource, signal, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (20 << 20, 20 << 20))  # no file over 20 MB can be written
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
from lmforge.corpus.fetch import fetch_corpus
src = {"name": "s", "kind": "local", "local": sys.argv[1], "files": ["pkg/*.txt"], "domain": "d", "max_bytes": 1000,
       "max_compression_ratio": 1e9}
(e,) = fetch_corpus({"sources": [src]}, sys.argv[2], progress=False)["sources"]
print(json.dumps(e))
"""


def test_max_bytes_unpacks_no_more_than_the_cap_can_use(tmp_path):
    small = {f"pkg/{c}.txt": (f"{c} " * 200).encode() for c in "abcdefgh"}
    a = big_tar(tmp_path / "p.tar.zst", "zst", small, {"pkg/z-big.txt": 200 << 20})
    r = subprocess.run([sys.executable, "-c", CAPPED, str(a), str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    e = json.loads(r.stdout.strip().splitlines()[-1])
    assert e["status"] == "ok" and e["truncated"] and e["files_matched"] == 9 and e["unpacked_bytes"] < 10_000
    assert [d["metadata"]["path"] for d in docs_of(tmp_path / "out/documents/d/s.jsonl.gz")] == ["pkg/a.txt", "pkg/b.txt"]


@pytest.mark.parametrize("order", ["path", "hash"])
def test_a_capped_source_is_the_prefix_of_the_uncapped_one(tmp_path, monkeypatch, order):
    import lmforge.corpus.fetch_source as fs

    monkeypatch.setattr(fs, "ROUND_MIN_BYTES", 1)  # rounds of 4 x the cap: many of them
    files = {f"package/t{i:02d}.txt": f"Text number {i}. ".encode() * (i % 7 + 1) for i in range(40)}
    a = tmp_path / "p.tgz"
    a.write_bytes(make_tar(files, "w:gz"))
    src = {"name": "s", "kind": "npm", "package": "p", "local": str(a), "files": ["*.txt"], "domain": "d", "order": order}
    (full,) = fetch_corpus({"sources": [src]}, tmp_path / "full", progress=False)["sources"]
    want = docs_of(tmp_path / "full/documents/d/s.jsonl.gz")
    assert len(want) == 40
    for cap in (30, 200, 400):
        (e,) = fetch_corpus({"sources": [dict(src, max_bytes=cap)]}, tmp_path / f"cap{cap}", progress=False)["sources"]
        got = docs_of(tmp_path / f"cap{cap}/documents/d/s.jsonl.gz")
        assert got == want[: len(got)] and e["truncated"] and e["bytes"] <= cap < e["bytes"] + len(want[len(got)]["text"].encode())
        assert e["unpacked_bytes"] < full["unpacked_bytes"]
