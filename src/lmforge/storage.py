"""Durable files and owned directories: what every command that writes output relies on.

    atomic_write_text(path, text)            temp file beside it, fsync, rename, fsync the directory
    with durable_file(path) as (f, tmp): ... the same for a file written in pieces
    with atomic_directory(out) as tmp: ...   the same for a directory: filled, then renamed whole
    commit_file(tmp, path)                   fsync a finished temp file, rename it, fsync the directory
    with lock_output(out_dir, "lmforge data tokenize"): ...   one command at a time per output

The promise: after a crash or a power loss, a file with its final name holds its final content,
and a completion marker (written through these functions after the files it vouches for) never
vouches for data that is not on disk. Names without their content, or content without its name,
are temporaries (``.NAME.*.tmp``) that reruns delete.

A *lock* is an exclusive ``flock`` on ``DIR/.lmforge-lock``, taken before a command writes anything
into a directory it owns (a run dir, a fetch or tokenize OUT, a release repository). The kernel
drops it when the process dies, however it dies, so a killed command never leaves a stale lock;
a second command on the same directory is refused with one line naming the holder. Locks are
re-entrant within one process (a quickstart holding its output directory calls train, which locks
the run dir inside it). Inside ``with shared_outputs():`` the lock is shared instead: the tasks of one
plan (``lmforge data run-shard``, many processes at once) hold it together, and a command that wants
it alone is refused while they run (and they while it runs); there, leftover temporaries are not
deleted (they may be a live task's), the plan's ``reduce`` (exclusive) deletes them.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Iterator

from lmforge.objectstore import RemotePath, as_path, is_url, upload

__all__ = [
    "LOCK_NAME",
    "OutputLockedError",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "commit_file",
    "crash_point",
    "durable_file",
    "fsync_dir",
    "fsync_file",
    "fsync_tree",
    "lock_output",
    "remove_stale_temporaries",
    "shared_outputs",
    "temp_path_beside",
    "umask",
]

LOCK_NAME = ".lmforge-lock"


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- durable writes ---------------------------------------------------------------------------------
def fsync_dir(path: str | os.PathLike) -> None:
    """Make a directory's entries (a rename into it) durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError as e:  # pragma: no cover - some filesystems refuse fsync on directories
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a closed file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path_beside(path: str | os.PathLike) -> str:
    """A new temporary file next to ``path`` (``.NAME.XXXX.tmp``) with normal permissions (mkstemp
    makes it 0600). For an object-store ``path``: a local file, published by one upload."""
    path = as_path(path)
    if isinstance(path, RemotePath):
        where = Path(tempfile.gettempdir()) / "lmforge-uploads"
    else:
        where = path.parent
    where.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=where, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())
    return tmp


# --- crash points: where the fault tests kill a process -------------------------------------------
_crash_count = 0


def crash_point(label: str = "") -> None:
    """Inert unless ``LMFORGE_CRASH_AT=N`` is set: then the N-th call in this process kills it with
    SIGKILL (``LMFORGE_CRASH_LOG=FILE`` appends one line per call: the count and ``label``; with
    ``LMFORGE_CRASH_ONCE=FILE`` only the first process to get there dies: it creates FILE, and the
    processes after it, which find FILE, go on: one worker killed, its retry not). Called around every
    publishing step (before and after each rename), so the fault tests (tests/faults) can stop a
    command at each point where a crash could lose or corrupt data."""
    global _crash_count
    at, log = os.environ.get("LMFORGE_CRASH_AT"), os.environ.get("LMFORGE_CRASH_LOG")
    if not at and not log:
        return
    _crash_count += 1
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(f"{os.getpid()} {_crash_count} {label}\n")
    if at and _crash_count == int(at):
        import signal

        once = os.environ.get("LMFORGE_CRASH_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        os.kill(os.getpid(), signal.SIGKILL)


def commit_file(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Publish a finished, closed temporary file: fsync it, rename it to ``path``, fsync the directory
    (an object-store ``path``: upload it as one object, then delete the temporary file)."""
    path = as_path(path)
    if isinstance(path, RemotePath):
        crash_point(f"before publishing {path.name}")
        try:
            upload(tmp, path)
        finally:
            os.unlink(tmp)
        crash_point(f"after publishing {path.name}")
        return path  # type: ignore[return-value]
    fsync_file(tmp)
    crash_point(f"before publishing {path.name}")
    os.replace(tmp, path)
    fsync_dir(path.parent)
    crash_point(f"after publishing {path.name}")
    return path


@contextlib.contextmanager
def durable_file(path: str | os.PathLike, mode: str = "wb") -> Iterator[tuple[IO, str]]:
    """``(file, temp path)`` to write ``path`` in pieces; published by :func:`commit_file` when the
    block ends normally, deleted when it raises (or is interrupted)."""
    tmp = temp_path_beside(path)
    if is_url(path):
        try:
            with open(tmp, mode) as f:
                yield f, tmp
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        commit_file(tmp, path)
        return
    try:
        with open(tmp, mode) as f:
            yield f, tmp
            f.flush()
            os.fsync(f.fileno())
        crash_point(f"before publishing {Path(path).name}")
        os.replace(tmp, path)
        fsync_dir(Path(path).parent)
        crash_point(f"after publishing {Path(path).name}")
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_TEMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # temp_path_beside's names


def remove_stale_temporaries(directory: str | os.PathLike, *, recursive: bool = False) -> int:
    """Delete the temporary files (``.NAME.XXXXXXXX.tmp``) that killed runs left in ``directory``;
    call it only while holding the directory's lock (then no live run owns them). Returns how many."""
    if is_url(directory):  # object stores have no temporaries (an object appears whole)
        return 0
    d = Path(directory)
    if _SHARED.get() or not d.is_dir():  # shared: another live task's temporaries may be here
        return 0
    found = d.rglob(".*.tmp") if recursive else d.glob(".*.tmp")
    n = 0
    for p in found:
        if _TEMP_FILE.match(p.name) and p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


def atomic_write_bytes(path: str | os.PathLike, *chunks: bytes) -> Path:
    """Write ``chunks`` to ``path`` durably: a temporary file beside it, fsync, rename, fsync the directory."""
    with durable_file(path) as (f, _):
        for chunk in chunks:
            f.write(chunk)
    return as_path(path)  # type: ignore[return-value]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` durably and atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file under ``root``, then every directory (deepest first), then ``root``."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                fsync_file(p)
        fsync_dir(dirpath)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, *, replace: bool = False) -> Iterator[Path]:
    """A directory published whole at ``final``: yields a new hidden directory beside it
    (``.NAME.tmp-XXXXXXXX``, normal permissions) to fill. When the block ends normally its files
    are fsynced, it is renamed to ``final`` and the parent directory is fsynced; when the block
    raises (or is interrupted) it is deleted. An empty ``final`` is replaced; one with files only
    with ``replace`` (moved aside first, deleted once the new one is in place)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it 0700
        yield tmp
        fsync_tree(tmp)
        if replace and final.is_dir() and not final.is_symlink() and any(final.iterdir()):
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-old-"))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        if old is not None and not final.exists():  # the rename failed: put the old one back
            os.replace(old / final.name, final)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --- owned directories ------------------------------------------------------------------------------
class OutputLockedError(RuntimeError):
    """Another command holds the output directory (one line naming it and the holder)."""


_HELD: dict[str, list] = {}  # real path -> [fd, count]
_HELD_GUARD = threading.Lock()
_SHARED: contextvars.ContextVar[bool] = contextvars.ContextVar("lmforge_shared_outputs", default=False)


@contextlib.contextmanager
def shared_outputs() -> Iterator[None]:
    """Locks taken in this block are shared (see the module doc); stale temporaries are kept."""
    token = _SHARED.set(True)
    try:
        yield
    finally:
        _SHARED.reset(token)


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        return f"pid {info.get('pid')} on {info.get('host')}, `{info.get('command')}` since {info.get('started')}"
    except (OSError, ValueError, AttributeError):
        return "another process"


@contextlib.contextmanager
def lock_output(directory: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold ``directory`` (created if missing) for ``command`` until the block ends; raise
    :class:`OutputLockedError` at once if another process holds it."""
    import fcntl

    if is_url(directory):  # no flock on an object store (see lmforge.objectstore)
        yield as_path(directory)  # type: ignore[misc]
        return
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(d)
    lock_path = d / LOCK_NAME
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
        else:
            shared = _SHARED.get()
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _describe_holder(lock_path)
                if not shared and holder == "another process":
                    holder = "the tasks of a plan: lmforge data run-shard"
                raise OutputLockedError(
                    f"{d} is in use by another lmforge command ({holder}); wait for it to finish, "
                    "or write to another directory"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            os.ftruncate(fd, 0)  # shared: many holders, no one's details (a refusal then names the plan)
            if not shared:
                info = {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": command or " ".join(sys.argv),
                    "started": _dt.datetime.now().isoformat(timespec="seconds"),
                }
                os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
            _HELD[key] = [fd, 1]
    try:
        yield d
    finally:
        with _HELD_GUARD:
            held = _HELD[key]
            held[1] -= 1
            if held[1] == 0:
                del _HELD[key]
                os.close(held[0])  # closing the last descriptor releases the flock


def holds_lock(directory: str | os.PathLike) -> bool:
    """Whether this process holds ``directory``'s lock."""
    return os.path.realpath(directory) in _HELD
