"""Reading package archives in Python, without running anything from them: a ``.deb`` (an ``ar``
archive whose ``data.tar.*`` holds the files), ``tar`` (plain, gz, xz, bz2, zst) and ``.zip``/``.whl``.

    listing = scan(archive, want, strip=1)            # the wanted regular files: (index, path, size)
    written, info = unpack(archive, dest, want, strip=1)   # write them under dest
    for path, file in PackageFiles(archives, dest, want, ...): ...   # in order, unpacked as they are read

The work is bounded whatever the input. Members are streamed to disk in 1 MiB pieces, so memory does
not grow with a member's size; a member larger than ``Limits.max_member_bytes`` is left out (listed
in ``info["too_big"]``); writing more than ``Limits.max_unpacked_bytes`` (counted by a :class:`Tally`
that a caller can share across archives and calls), or a compression ratio over
``Limits.max_ratio`` (bytes decompressed vs the compressed size, once past ``Limits.ratio_floor``:
a decompression bomb), raises :class:`FetchError`. Paths with ``..`` are refused and absolute ones
made relative; symlinks and hard links are counted and skipped (a linked tree is read once).
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import gzip
import io
import lzma
import os
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from lmforge.data.documents import DataError

__all__ = ["FetchError", "Limits", "PackageFiles", "Tally", "scan", "unpack"]

CHUNK = 1 << 20


class FetchError(DataError):
    """A source could not be fetched or read; the message is the reason recorded in the manifest."""


@dataclasses.dataclass(frozen=True)
class Limits:
    max_member_bytes: int = 256 << 20  # a bigger member is left out (and counted)
    max_unpacked_bytes: int = 4 << 30  # written per Tally (a source): more is an error
    max_ratio: float = 200.0  # decompressed / compressed bytes ...
    ratio_floor: int = 64 << 20  # ... once this much was decompressed


class Tally:
    """Bytes written, against ``limit`` (shared by the calls that unpack one source)."""

    def __init__(self, limit: int):
        self.limit, self.bytes = limit, 0

    def add(self, n: int, where: str) -> None:
        self.bytes += n
        if self.bytes > self.limit:
            raise FetchError(f"{where}: more than {self.limit:,} bytes unpacked (max_unpacked_bytes); raise it for a package this big")


class _Meter:
    """Counts the bytes a decompressor yields; raises when they outgrow the compressed size."""

    def __init__(self, where: str, compressed: int, limits: Limits):
        self.where, self.compressed, self.limits, self.bytes = where, max(compressed, 1), limits, 0

    def add(self, n: int) -> None:
        self.bytes += n
        if self.bytes > self.limits.ratio_floor and self.bytes > self.limits.max_ratio * self.compressed:
            raise FetchError(
                f"{self.where}: compression ratio over {self.limits.max_ratio:g}x ({self.bytes:,} bytes from {self.compressed:,}): "
                "a decompression bomb? Not read (raise max_compression_ratio if the archive is genuine)"
            )


# --- streams ----------------------------------------------------------------------------------------
_MAGIC = {
    b"!<arch>\n": "deb",
    b"PK\x03\x04": "zip",
    b"\x1f\x8b": "gz",
    b"\xfd7zXZ\x00": "xz",
    b"BZh": "bz2",
    b"\x28\xb5\x2f\xfd": "zst",
}


def _sniff(head: bytes) -> str | None:
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


def safe_relative_path(name: str, strip: int) -> str | None:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or len(parts) <= strip:
        return None
    return "/".join(parts[strip:])


class _Prepend(io.RawIOBase):
    """A raw stream that yields ``head`` and then the rest of ``f`` (to sniff without seeking)."""

    def __init__(self, head: bytes, f):
        self.head, self.f = head, f

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self.head:
            n = min(len(b), len(self.head))
            b[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.f.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Slice(io.RawIOBase):
    """``size`` bytes of the file ``f`` from ``offset`` (an ``ar`` member, read in place)."""

    def __init__(self, f, offset: int, size: int):
        self.f, self.pos, self.end = f, offset, offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.end - self.pos)
        if n <= 0:
            return 0
        self.f.seek(self.pos)
        data = self.f.read(n)
        b[: len(data)] = data
        self.pos += len(data)
        return len(data)


class _Metered(io.RawIOBase):
    """The decompressed stream ``f`` (whose ``read(n)`` returns at most ``n`` bytes), counted by ``meter``."""

    def __init__(self, f, meter: _Meter):
        self.f, self.meter = f, meter

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.f.read(len(b))
        b[: len(data)] = data
        self.meter.add(len(data))
        return len(data)


class _ZstdRaw(io.RawIOBase):
    """zstd frames decompressed from ``f``; EOFError when the input ends inside a frame.

    Input goes in small pieces: zstd makes at most 32 KiB per input byte (a 4-byte RLE block makes
    128 KiB), so one call yields at most 8 MiB; the output is handed out from an offset (no re-copying)."""

    IN_CHUNK = 256

    def __init__(self, f):
        import zstandard

        self.f, self.zstd = f, zstandard
        self.d = zstandard.ZstdDecompressor().decompressobj()
        self.buf, self.pos, self.pending = b"", 0, b""
        self.started = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while self.pos >= len(self.buf):
            if not self.pending:
                self.pending = self.f.read(self.IN_CHUNK)
                if not self.pending:
                    if self.started and not self.d.eof:
                        raise EOFError("zstd stream ended before the end of its frame")
                    return 0
            if self.d.eof:  # the next frame
                self.d = self.zstd.ZstdDecompressor().decompressobj()
            self.started = True
            chunk, self.pending = self.pending, b""
            self.buf, self.pos = self.d.decompress(chunk), 0
            if self.d.eof:
                self.pending = self.d.unused_data
        n = min(len(b), len(self.buf) - self.pos)
        b[:n] = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += n
        return n


def _tar_stream(fileobj, where: str, meter: _Meter | None = None) -> tarfile.TarFile:
    """A streaming tar reader over ``fileobj`` (plain or gz/xz/bz2/zst-compressed). Decompression
    happens here, not in tarfile, so that a truncated stream raises instead of ending quietly."""
    head = fileobj.read(512)
    rest = io.BufferedReader(_Prepend(head, fileobj))
    kind = _sniff(head)
    if kind == "gz":
        inner = gzip.GzipFile(fileobj=rest, mode="rb")
    elif kind == "xz":
        inner = lzma.LZMAFile(rest)
    elif kind == "bz2":
        inner = bz2.BZ2File(rest)
    elif kind == "zst":
        inner = io.BufferedReader(_ZstdRaw(rest))
    else:
        inner = rest
    return tarfile.open(fileobj=_Metered(inner, meter) if meter is not None else inner, mode="r|")


def _ar_members(fh, where: str) -> Iterator[tuple[str, int, int]]:
    """(name, offset, size) of the members of the Unix ``ar`` archive ``fh`` (a .deb), read in place."""
    fh.seek(0)
    if fh.read(8) != b"!<arch>\n":
        raise FetchError(f"{where}: not an ar archive")
    total = fh.seek(0, os.SEEK_END)
    pos = 8
    while pos + 60 <= total:
        fh.seek(pos)
        header = fh.read(60)
        if header[58:60] != b"`\n":
            raise FetchError(f"{where}: corrupt ar header at byte {pos}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise FetchError(f"{where}: corrupt ar header at byte {pos}") from None
        if pos + 60 + size > total:
            raise FetchError(f"{where}: truncated (ar member {name} wants {size} bytes, {total - pos - 60} left)")
        yield name, pos + 60, size
        pos += 60 + size + (size & 1)


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error, zipfile.BadZipFile, OSError, struct.error, ValueError)


def _deb_control(control: bytes, where: str, limits: Limits = Limits()) -> dict[str, str]:
    fields: dict[str, str] = {}
    with _tar_stream(io.BytesIO(control), where, _Meter(where, len(control), limits)) as tf:
        for m in tf:
            if m.isfile() and m.name.lstrip("./") == "control":
                f = tf.extractfile(m)
                for line in (f.read(1 << 20).decode("utf-8", "replace") if f else "").splitlines():
                    if ":" in line and not line.startswith((" ", "\t")):
                        k, v = line.split(":", 1)
                        fields[k.strip()] = v.strip()
    return fields


# --- members ----------------------------------------------------------------------------------------
Visit = Callable[[int, str, int, Callable[[], IO[bytes]]], bool]  # (index, path, size, open) -> go on?


def _each_tar(tf: tarfile.TarFile, strip: int, info: dict[str, Any], visit: Visit) -> None:
    for i, m in enumerate(tf):
        if i % 1000 == 999:
            tf.members.clear()  # a stream is read once: the TarInfo list would only grow with the member count
        if m.issym() or m.islnk():
            info["links"] += 1
        elif m.isfile():
            rel = safe_relative_path(m.name, strip)
            if rel is not None and not _seen(info, rel, visit, i, m.size, lambda m=m: tf.extractfile(m)):
                return


def _seen(info: dict[str, Any], rel: str, visit: Visit, i: int, size: int, open_) -> bool:
    info["members"] += 1
    if len(info["sample"]) < 5:
        info["sample"].append(rel)
    return visit(i, rel, size, open_)


def _each_member(archive: Path, strip: int, limits: Limits, info: dict[str, Any], visit: Visit) -> None:
    """Call ``visit`` on every regular file of ``archive`` in archive order, until it returns False."""
    where = archive.name
    with open(archive, "rb") as fh:
        kind = _sniff(fh.read(512))
        fh.seek(0)
        if kind == "deb":
            members = {name: (off, size) for name, off, size in _ar_members(fh, where)}
            control = next((v for k, v in members.items() if k.startswith("control.tar")), None)
            payload = next((v for k, v in members.items() if k.startswith("data.tar")), None)
            if payload is None:
                raise FetchError(f"{where}: a .deb without data.tar.* (members: {', '.join(members)})")
            if control is not None:
                if control[1] > 16 << 20:
                    raise FetchError(f"{where}: control.tar of {control[1]:,} bytes; not a package lmforge reads")
                fh.seek(control[0])
                info["control"] = _deb_control(fh.read(control[1]), where, limits)
            with _tar_stream(_Slice(fh, *payload), where, _Meter(where, payload[1], limits)) as tf:
                _each_tar(tf, 0, info, visit)
        elif kind == "zip":
            meter = _Meter(where, os.fstat(fh.fileno()).st_size, limits)
            with zipfile.ZipFile(fh) as zf:
                for i, zi in enumerate(zf.infolist()):
                    if zi.is_dir():
                        continue
                    if (zi.external_attr >> 16) & 0o170000 == 0o120000:
                        info["links"] += 1
                        continue
                    rel = safe_relative_path(zi.filename, strip)
                    opener = lambda zi=zi: io.BufferedReader(_Metered(zf.open(zi), meter), CHUNK)  # noqa: E731
                    if rel is not None and not _seen(info, rel, visit, i, zi.file_size, opener):
                        return
        elif kind in ("gz", "xz", "bz2", "zst", "tar"):
            with _tar_stream(fh, where, _Meter(where, os.fstat(fh.fileno()).st_size, limits)) as tf:
                _each_tar(tf, strip, info, visit)
        else:
            raise FetchError(f"{where}: not an archive lmforge reads (.deb, .tar[.gz|.xz|.bz2|.zst], .zip, .whl)")


def _guarded(archive: Path, strip: int, limits: Limits, visit: Visit) -> dict[str, Any]:
    info: dict[str, Any] = {"members": 0, "links": 0, "sample": [], "too_big": {}}
    where = archive.name
    try:
        _each_member(archive, strip, limits, info, visit)
    except FetchError:
        raise
    except OSError as e:
        if e.errno is not None:  # the machine (no space, I/O error), not the archive
            raise FetchError(f"{where}: cannot unpack ({type(e).__name__}: {e})") from None
        raise FetchError(f"{where}: corrupt or truncated archive ({type(e).__name__}: {str(e)[:120] or 'no details'})") from None
    except _ARCHIVE_ERRORS as e:
        raise FetchError(f"{where}: corrupt or truncated archive ({type(e).__name__}: {str(e)[:120] or 'no details'})") from None
    return info


def scan(archive: str | os.PathLike, want: Callable[[str], bool], *, strip: int = 0, limits: Limits | None = None) -> dict[str, Any]:
    """What ``archive`` holds, without writing anything: info (as :func:`unpack` returns it) with
    ``files``, the ``(index, path, size)`` of the regular files whose path satisfies ``want``, in
    archive order (a path may repeat: the last one is what unpacking everything leaves)."""
    files: list[tuple[int, str, int]] = []

    def visit(i: int, rel: str, size: int, open_) -> bool:
        if want(rel):
            files.append((i, rel, size))
        return True

    info = _guarded(Path(archive), strip, limits or Limits(), visit)
    info["files"] = files
    return info


def _copy(src: IO[bytes] | None, path: Path, size: int, tally: Tally, where: str) -> None:
    with open(path, "wb") as out:
        n = 0
        while src is not None:
            chunk = src.read(CHUNK)
            if not chunk:
                break
            n += len(chunk)
            if n > size:
                raise FetchError(f"{where}: member {path.name} holds more than the {size:,} bytes its header says")
            tally.add(len(chunk), where)
            out.write(chunk)


def unpack(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    want: Callable[[str], bool],
    *,
    strip: int = 0,
    limits: Limits | None = None,
    members: Iterable[int] | None = None,
    tally: Tally | None = None,
) -> tuple[list[str], dict[str, Any]]:
    """Write the regular files of ``archive`` (a .deb, tar[.gz|.xz|.bz2|.zst], .zip/.whl) whose path
    (after dropping ``strip`` leading directories) satisfies ``want`` under ``dest``; ``members``
    (indices from :func:`scan`) writes exactly those instead, and stops reading after the last.

    Returns (the paths written, info): info has ``members`` (regular files seen), ``links`` (symlinks
    and hard links skipped: a linked tree is read once), ``sample`` (a few member paths, for messages),
    ``too_big`` (path -> size of wanted members over ``limits.max_member_bytes``, not written),
    ``files`` (as :func:`scan` lists them) and, for a .deb, its ``control`` fields. Damage raises :class:`FetchError` naming the file.
    """
    archive, dest = Path(archive), Path(dest)
    limits = limits or Limits()
    tally = tally or Tally(limits.max_unpacked_bytes)
    only = set(members) if members is not None else None
    last = max(only) if only else -1
    written: dict[str, None] = {}
    too_big: dict[str, int] = {}
    files: list[tuple[int, str, int]] = []

    def visit(i: int, rel: str, size: int, open_) -> bool:
        if (i not in only) if only is not None else not want(rel):
            return only is None or i < last
        files.append((i, rel, size))
        out = dest / rel
        if size > limits.max_member_bytes:
            too_big[rel] = size
            if rel in written:  # an earlier member of the same path: the last one decides
                del written[rel]
                out.unlink()
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(open_()) as f:
                _copy(f, out, size, tally, archive.name)
            written[rel] = None
            too_big.pop(rel, None)
        return only is None or i < last

    if only is not None and not only:
        return [], {"members": 0, "links": 0, "sample": [], "too_big": {}, "files": []}
    info = _guarded(archive, strip, limits, visit)
    info["too_big"], info["files"] = too_big, files
    return list(written), info


class PackageFiles:
    """The files of a package's ``archives`` that ``want`` selects, in ``key`` order, unpacked under
    ``dest`` as a reader gets to them: iterating yields ``(path, file)``, or ``(path, reason)`` for a
    member left out (over ``limits.max_member_bytes``).

    ``round_bytes=None`` unpacks everything in one pass per archive. Otherwise the archives are listed
    first and the files unpacked in rounds of about ``round_bytes`` (doubling each round), each only
    when the reader asks for its first file, and deleted when the reader moves past the round: a
    reader that stops early (a text cap) never unpacks the rest. Files ``companion`` selects (read by
    an extractor beside its own file) are unpacked with the first round and kept.
    """

    def __init__(self, archives: list[Path], dest: Path, want: Callable[[str], bool], companion: Callable[[str], bool], *,
                 strip: int, key: Callable[[str], Any], limits: Limits, round_bytes: int | None):
        self.archives, self.dest, self.strip, self.limits, self.round_bytes = archives, dest, strip, limits, round_bytes
        self.tally = Tally(limits.max_unpacked_bytes)
        self.infos: list[dict[str, Any]] = []
        self.where: dict[str, tuple[int, int, int]] = {}  # path -> (archive, index, size) of its last member
        wanted = lambda r: want(r) or companion(r)  # noqa: E731
        for ai, a in enumerate(archives):
            if round_bytes is None:
                _, info = unpack(a, dest, wanted, strip=strip, limits=limits, tally=self.tally)
            else:
                info = scan(a, wanted, strip=strip, limits=limits)
            self.infos.append(info)
            self.where.update({rel: (ai, i, size) for i, rel, size in info.pop("files")})
        self.files = sorted((r for r in self.where if want(r)), key=key)
        self.companions = [r for r in self.where if companion(r)]
        self.unpacked: set[str] = set() if round_bytes is not None else set(self.where)

    def _too_big(self, rel: str) -> bool:
        return self.where[rel][2] > self.limits.max_member_bytes

    def _unpack(self, rels: list[str]) -> None:
        by_archive: dict[int, set[int]] = {}
        for r in rels:
            if r not in self.unpacked and not self._too_big(r):
                by_archive.setdefault(self.where[r][0], set()).add(self.where[r][1])
                self.unpacked.add(r)
        for ai, indices in sorted(by_archive.items()):
            unpack(self.archives[ai], self.dest, lambda r: True, strip=self.strip, limits=self.limits, members=indices, tally=self.tally)

    def __iter__(self) -> Iterator[tuple[str, Path | str]]:
        reason = f"larger than max_member_bytes ({self.limits.max_member_bytes:,} bytes)"
        if self.round_bytes is None:
            for r in self.files:
                yield r, reason if self._too_big(r) else self.dest / r
            return
        i, budget, keep = 0, self.round_bytes, set(self.companions)
        self._unpack(self.companions)
        while i < len(self.files):
            batch, size = [], 0
            while i < len(self.files) and (not batch or size + self.where[self.files[i]][2] <= budget):
                batch.append(self.files[i])
                size += 0 if self._too_big(self.files[i]) else self.where[self.files[i]][2]
                i += 1
            self._unpack(batch)
            for r in batch:
                yield r, reason if self._too_big(r) else self.dest / r
            for r in batch:
                if r not in keep:
                    (self.dest / r).unlink(missing_ok=True)
            budget *= 2
