"""Run untrusted generated programs (HumanEval, MBPP) so that they cannot hurt the host.

    result = run_python(program_text, timeout=10)
    result.passed, result.status, result.stdout

Each program runs in a child Python (``-I``: no user site, no environment-driven imports) in a new
empty directory, with an empty environment (no secrets), stdin closed, and:

* **no network**: a new network namespace (only a loopback that is down);
* **limits**: CPU seconds, address space, file size, open files, no core files; the wall clock
  ``timeout``;
* **as root** (containers, CI), also: a uid of its own (no access to files that are not
  world-readable, none to write outside its directory), a process limit on that uid, and a new
  mount namespace with empty ``/tmp``, ``/var/tmp``, ``/dev/shm``, ``/home`` and ``/root``;
* **nothing left behind**: its process group is killed at the end, and as root every process of its
  uid (a program that left its group with ``setsid`` too); the directory is deleted.

Where the host allows no network namespace, nothing runs: :class:`SandboxUnavailable` says why.
As a normal user (no root) the process and file limits are weaker (the user's own uid), so run
evaluations of untrusted code as root in a container, as CI does.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["SandboxResult", "SandboxUnavailable", "run_python"]

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x1, 0x2, 0x4, 0x20, 0x1000, 0x4000, 0x40000
PYTHON_MOUNT = b"/tmp/.python"  # where the interpreter's installation is seen inside the sandbox (as root)
BOX_MOUNT = b"/tmp/box"  # and the program's directory
UID_BASE = 1_500_000  # sandbox uids: UID_BASE + a number per run (no account has them)
OUTPUT_LIMIT = 1 << 16  # bytes of stdout/stderr kept


class SandboxUnavailable(RuntimeError):
    """This host cannot isolate a program (no network namespace): nothing was run."""


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    status: str  # "passed" (exit 0), "failed" (any other exit), "timeout"
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    uid: int | None = None  # the uid it ran as (root only): no process of it is left when this returns

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.unshare.argtypes = [ctypes.c_int]
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    return libc


def _confine(directory: str, uid: int | None, timeout: float, memory_mb: int, max_processes: int, file_mb: int):
    """The child's set-up between fork and exec (it must not allocate much or take locks)."""
    prefix = os.fsencode(sys.base_prefix)

    def setup() -> None:
        libc = _libc()
        os.chdir(directory)  # before /tmp is covered: the working directory stays reachable
        flags = CLONE_NEWNET | (CLONE_NEWNS if uid is not None else CLONE_NEWUSER)
        if libc.unshare(flags) != 0:
            os.write(2, b"lmforge-sandbox: no network namespace\n")
            os._exit(125)
        if uid is not None:
            # private mounts; empty /tmp etc.; the interpreter's installation (which may live under
            # /root) bound read-only at PYTHON_MOUNT before /root and /home are covered
            ok = libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) == 0
            held = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)  # the box, reachable once /tmp is covered
            ok = ok and libc.mount(b"tmpfs", b"/tmp", b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=755") == 0
            if ok:  # the box at BOX_MOUNT: the only writable place
                os.mkdir(BOX_MOUNT)
                ok = libc.mount(b"/proc/self/fd/%d" % held, BOX_MOUNT, None, MS_BIND, None) == 0
                os.chdir(BOX_MOUNT)
                os.close(held)
            if ok:
                os.mkdir(PYTHON_MOUNT)
                ok = libc.mount(prefix, PYTHON_MOUNT, None, MS_BIND | MS_REC, None) == 0
                ok = ok and libc.mount(None, PYTHON_MOUNT, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID, None) == 0
            for target in (b"/var/tmp", b"/dev/shm", b"/home", b"/root"):
                if ok and os.path.isdir(target):
                    ok = libc.mount(b"tmpfs", target, b"tmpfs", MS_NOSUID | MS_NODEV, b"size=1m,mode=755") == 0
            if not ok:
                os.write(2, b"lmforge-sandbox: no private mounts\n")
                os._exit(125)
        cpu = max(1, int(timeout) + 1)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_mb << 20, file_mb << 20))
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if uid is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (max_processes, max_processes))
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return setup


def _uid_processes(uid: int) -> list[int]:
    """Processes of ``uid`` still running (zombies, dead and holding nothing, are left to be reaped)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if line.startswith(("Uid:", "State:")))
        except (OSError, ValueError):
            continue
        if int(fields.get("Uid", "-1").split()[0]) == uid and not fields.get("State", "").strip().startswith("Z"):
            found.append(int(entry))
    return found


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` (a sandbox's own uid) until none is left running.

    A helper running as ``uid`` sends ``kill(-1, SIGKILL)``: the kernel signals every process of that
    uid in one pass under its task-list lock, so a fork bomb cannot outrun it the way it can outrun
    killing pids read from /proc one by one."""
    for _ in range(100):
        if not _uid_processes(uid):
            return
        helper = os.fork()
        if helper == 0:  # only system calls here, then out: no Python clean-up in a forked copy
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)  # every process this uid may signal, except the caller
            finally:
                os._exit(0)
        os.waitpid(helper, 0)
        time.sleep(0.01)
    raise RuntimeError(f"sandbox uid {uid}: processes {_uid_processes(uid)} survive SIGKILL")


def _read_limited(path: Path) -> str:
    with open(path, "rb") as f:
        return f.read(OUTPUT_LIMIT).decode("utf-8", "replace")


def run_python(program: str, *, timeout: float = 10.0, memory_mb: int = 1024, max_processes: int = 16, file_mb: int = 16) -> SandboxResult:
    """Run ``program`` (Python source) confined as described in the module doc."""
    root = os.geteuid() == 0
    uid = UID_BASE + (os.getpid() * 1000 + time.monotonic_ns() // 1000) % 1_000_000 if root else None
    work = Path(tempfile.mkdtemp(prefix="lmforge-sandbox-"))
    box, logs = work / "box", work / "logs"
    box.mkdir()
    logs.mkdir(mode=0o700)
    (box / "program.py").write_text(program, encoding="utf-8")
    if uid is not None:
        os.chown(box, uid, uid)
        os.chmod(work, 0o711)  # the sandbox uid may pass through to box/, nothing more
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": ".", "TMPDIR": ".", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    python = os.path.realpath(sys.executable)  # the base interpreter: no virtual environment's packages
    if uid is not None:  # seen through the read-only bind of its installation
        rel = os.path.relpath(python, sys.base_prefix)
        python = os.path.join(os.fsdecode(PYTHON_MOUNT), rel)
        env["LD_LIBRARY_PATH"] = os.path.join(os.fsdecode(PYTHON_MOUNT), "lib")
    t0 = time.perf_counter()
    try:
        with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
            proc = subprocess.Popen([python, "-I", "-B", "program.py"], cwd=box, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=err, start_new_session=True,
                                    preexec_fn=_confine(str(box), uid, timeout, memory_mb, max_processes, file_mb))
            try:
                code: int | None = proc.wait(timeout=timeout)
                status = "passed" if code == 0 else "failed"
            except subprocess.TimeoutExpired:
                code, status = None, "timeout"
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                if uid is not None:
                    _kill_uid(uid)
                proc.wait()
        seconds = time.perf_counter() - t0
        stdout, stderr = _read_limited(logs / "stdout"), _read_limited(logs / "stderr")
        if code == 125 and stderr.startswith("lmforge-sandbox: "):
            raise SandboxUnavailable(f"cannot isolate generated code here ({stderr.strip()[17:]}): run as root in a container, or where "
                                     "unprivileged user and network namespaces are allowed")
        return SandboxResult(status, code, stdout, stderr, round(seconds, 3), uid)
    finally:
        shutil.rmtree(work, ignore_errors=True)
