"""A checkpoint is untrusted input: crafted DCP ``.metadata`` files give one line and run nothing.

Each payload below would run ``touch MARKER`` through a different door of pickle: a dotted name that
protocol 4 resolves attribute by attribute (``torch.distributed.checkpoint.filesystem`` +
``os.system``), plain ``os.system`` / ``builtins.eval`` globals, an object's ``__reduce__``, and
DCP's own bytes entries (which DCP reads with ``torch.load(weights_only=False)``).
"""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmforge.checkpoint import CheckpointError
from lmforge.checkpoint.sharded import load_checkpoint, save_checkpoint
from lmforge.models import OLMo
from lmforge.optim import OptimConfig
from tests.conftest import tiny_config


def _u(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def _stack_global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol 4: module, name, STACK_GLOBAL, (arg,), REDUCE, STOP."""
    return b"\x80\x04" + _u(module) + _u(name) + b"\x93" + _u(arg) + b"\x85" + b"R" + b"."


def _stack_global_popen(module: str, name: str, argv: list[str]) -> bytes:
    """Protocol 4: module, dotted name, STACK_GLOBAL, ([argv...],), REDUCE: a class reached through
    attribute traversal, called with an argument list."""
    items = b"".join(_u(a) for a in argv)
    return b"\x80\x04" + _u(module) + _u(name) + b"\x93" + b"](" + items + b"e" + b"\x85" + b"R" + b"."


def _global_call(module: str, name: str, arg: str) -> bytes:
    """Protocol 0/2 GLOBAL opcode: c<module>\\n<name>\\n, (arg,), REDUCE."""
    return b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n" + _u(arg) + b"\x85R."


class _Popen:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (subprocess.Popen, (["sh", "-c", self.cmd],))


def _payloads(marker: Path) -> dict[str, bytes]:
    cmd = f"touch {marker}"
    return {
        "dotted name through an allowed module": _stack_global_call("torch.distributed.checkpoint.filesystem", "os.system", cmd),
        "deeper dotted name": _stack_global_call("torch.distributed.checkpoint", "filesystem.os.system", cmd),
        # the reported one: a class (so not refused as "not a type") through DCP's module, run as a shell command
        "dotted name to subprocess.Popen": _stack_global_popen(
            "torch.distributed.checkpoint.filesystem", "torch.utils.collect_env.subprocess.Popen", ["sh", "-c", cmd]
        ),
        "os.system": _global_call("os", "system", cmd),
        "posix.system": _stack_global_call("posix", "system", cmd),
        "builtins.eval": _global_call("builtins", "eval", f"__import__('os').system({cmd!r})"),
        "__reduce__ gadget": pickle.dumps(_Popen(cmd), protocol=4),
    }


def _checkpoint(tmp_path: Path):
    torch.manual_seed(0)
    model = OLMo(tiny_config())
    opt = OptimConfig(lr=1e-2, fused=False).build(model)
    path = save_checkpoint(tmp_path / "run", 1, model=model, optimizer=opt, extra={})
    return path, model, opt


@pytest.mark.parametrize("kind", list(_payloads(Path("x"))))
def test_crafted_metadata_is_refused_and_runs_nothing(tmp_path, kind):
    path, model, opt = _checkpoint(tmp_path)
    marker = tmp_path / "MARKER"
    payload = _payloads(marker)[kind]
    # the payload is live: unpickled without restrictions, it runs the command
    import torch.utils.collect_env  # noqa: F401 - imported by torch's own tooling in many processes; here for sure

    probe = tmp_path / "PROBE"
    obj = pickle.loads(_payloads(probe)[kind])
    if hasattr(obj, "wait"):
        obj.wait()
    assert probe.exists(), f"{kind}: the payload itself is broken"
    (path / ".metadata").write_bytes(payload)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, model=model, optimizer=opt)
    msg = str(e.value)
    assert "\n" not in msg and ".metadata" in msg
    assert "refusing" in msg or "not DCP metadata" in msg
    assert not marker.exists()


def test_bytes_entry_in_real_metadata_is_refused(tmp_path):
    """Valid DCP metadata in every respect, except that one tensor's entry says 'bytes': DCP would
    read its shard data with torch.load(weights_only=False). The shard data here is a pickle that
    runs a command."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

    path, model, opt = _checkpoint(tmp_path)
    marker = tmp_path / "MARKER"
    md = pickle.loads((path / ".metadata").read_bytes())
    key = next(k for k in md.state_dict_metadata if k.startswith("model."))
    evil = io.BytesIO()
    torch.save(_Popen(f"touch {marker}"), evil)
    (path / "__9_0.distcp").write_bytes(evil.getvalue())
    md.state_dict_metadata[key] = BytesStorageMetadata()
    md.storage_data = {k: v for k, v in md.storage_data.items() if k.fqn != key}
    md.storage_data[MetadataIndex(key)] = _StorageInfo("__9_0.distcp", 0, len(evil.getvalue()))
    (path / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, model=model, optimizer=opt)
    assert "\n" not in str(e.value) and "BytesStorageMetadata" in str(e.value)
    assert not marker.exists()


def test_shard_path_outside_the_checkpoint_is_refused(tmp_path):
    path, model, opt = _checkpoint(tmp_path)
    md = pickle.loads((path / ".metadata").read_bytes())
    for info in md.storage_data.values():
        info.relative_path = "../../../etc/passwd"
    (path / ".metadata").write_bytes(pickle.dumps(md))
    with pytest.raises(CheckpointError, match="not a shard file"):
        load_checkpoint(path, model=model, optimizer=opt)


def test_real_metadata_still_loads(tmp_path):
    path, model, opt = _checkpoint(tmp_path)
    torch.manual_seed(1)
    other = OLMo(tiny_config())
    other_opt = OptimConfig(lr=1e-2, fused=False).build(other)
    load_checkpoint(path, model=other, optimizer=other_opt)
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), k


def test_train_resume_from_a_crafted_checkpoint_is_one_line(tmp_path, token_dirs):
    """Through the command line, as a user resuming a downloaded run would."""
    from tests.train.conftest import write_run_config

    marker = tmp_path / "MARKER"
    run = tmp_path / "run"
    cfg = write_run_config(token_dirs, run)
    r = subprocess.run([sys.executable, "-m", "lmforge", "train", str(cfg), "--trainer.max_steps=2", "--checkpoint.every=1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    ckpt = sorted((run / "checkpoints").iterdir())[-1]
    (ckpt / ".metadata").write_bytes(_payloads(marker)["dotted name through an allowed module"])
    r = subprocess.run([sys.executable, "-m", "lmforge", "train", str(cfg), "--trainer.max_steps=3", "--resume"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("lmforge: error:")]
    assert len(errors) == 1 and "refusing" in errors[0] and "Traceback" not in r.stderr
    assert not marker.exists()
