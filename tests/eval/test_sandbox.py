"""Generated programs run confined: hostile ones (an endless loop, a fork bomb, writes outside their
directory, reading secrets, a socket, a memory hog) are contained and scored as failed, and leave
nothing behind; an honest one passes its unit test."""

from __future__ import annotations

import os
import socket
import textwrap
import time
from pathlib import Path

import pytest

from lmforge.eval.sandbox import UID_BASE, SandboxUnavailable, run_python

pytestmark = pytest.mark.required_in_ci


def _run(program: str, **kw):
    try:
        return run_python(textwrap.dedent(program), **kw)
    except SandboxUnavailable as e:  # a host without namespaces: nothing ran, which is the safe answer
        pytest.skip(str(e))


def _left_running(r) -> list[int]:
    """Processes of the run's own sandbox uid still running (others may run beside it)."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if line.startswith(("Uid:", "State:")))
            uid = int(fields["Uid"].split()[0])
        except (OSError, KeyError, ValueError):
            continue
        if uid == r.uid and not fields["State"].strip().startswith("Z"):  # zombies hold nothing
            found.append(int(entry))
    return found


def test_an_honest_program_passes_and_a_wrong_one_fails():
    solution = "def add(a, b):\n    return a + b\n"
    assert _run(solution + "assert add(2, 3) == 5\nprint('ok')").passed
    r = _run(solution.replace("a + b", "a - b") + "assert add(2, 3) == 5\n")
    assert r.status == "failed" and "AssertionError" in r.stderr


def test_an_endless_loop_times_out():
    t0 = time.perf_counter()
    r = _run("while True:\n    pass\n", timeout=1.0)
    assert r.status == "timeout" and not r.passed and time.perf_counter() - t0 < 5


def test_a_fork_bomb_is_contained_and_nothing_survives():
    r = _run("""
        import os
        while True:
            try:
                if os.fork() == 0:
                    os.setsid()  # try to leave the process group, too
            except OSError:
                pass
        """, timeout=2.0)
    assert not r.passed
    if os.geteuid() == 0:
        assert UID_BASE <= r.uid < UID_BASE + 1_000_000
        assert _left_running(r) == []


def test_writes_outside_its_directory_and_secrets_are_out_of_reach(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_SANDBOX_TEST_SECRET", "hunter2")
    outside = [tmp_path / "escaped.txt", Path(__file__).resolve().parent / "escaped.txt", Path.home() / "escaped.txt"]
    secret = Path.home() / ".lmforge-sandbox-secret"
    secret.write_text("hunter2")
    secret.chmod(0o600)
    try:
        r = _run(f"""
            import os
            leaked = []
            for path in {[str(p) for p in outside]!r}:
                try:
                    with open(path, "w") as f:
                        f.write("x")
                    leaked.append("wrote " + path)
                except OSError:
                    pass
            text = repr(dict(os.environ))
            for path in ["/proc/1/environ", f"/proc/{{os.getppid()}}/environ", {str(secret)!r}]:
                try:
                    text += open(path, "rb").read().decode("latin-1")
                except OSError:
                    pass
            if "hunter2" in text:
                leaked.append("read the secret")
            open("inside.txt", "w").write("fine")  # its own directory is writable
            print(leaked)
            raise SystemExit(1 if leaked else 0)
            """)
        assert r.passed, r.stdout + r.stderr
        assert not any(p.exists() for p in outside)
    finally:
        secret.unlink()


def test_no_network_even_to_this_host():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        r = _run(f"""
            import socket
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", {port}))
                print("connected")
            except OSError as e:
                print("refused", e)
            """)
        assert "connected" not in r.stdout and "refused" in r.stdout
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()


def test_a_memory_hog_fails_within_its_limit():
    r = _run("x = bytearray(8 << 30)\nprint(len(x))\n", memory_mb=512)
    assert r.status == "failed" and "MemoryError" in r.stderr
