"""``lmforge import --from olmo-core|olmo``: checkpoints written by OLMo-core's and OLMo's own trainers.

The peers are the real packages (``ai2-olmo-core==3.0.0``, ``ai2-olmo==0.6.0``), fetched as wheels from
PyPI without their dependencies (nothing is built) into a cache, and run in a subprocess: each trains
a tiny model two steps on the CPU and saves checkpoints its own way. lmforge imports step 1 and 2 and
must give (a) the same logits as the peer's final model, (b) after one lmforge training step from
the imported step 1, with the carried AdamW state, the same weights and loss as the peer's step 2;
with fresh moments instead the step lands elsewhere. Skipped where the wheels cannot be had.

Crafted checkpoints (always run) check the refusals: pickled code in metadata, ``model.pt`` or a
safetensors key; tensors of another architecture; a config that is not OLMo-1/OLMo-2.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from lmforge.checkpoint import CheckpointError, load_pretrained
from lmforge.checkpoint.imports import read_foreign
from lmforge.checkpoint.listing import read_metrics
from lmforge.checkpoint.olmo_trainer import olmo_layout
from lmforge.cli import main
from lmforge.models.olmo import ModelConfig
from lmforge.nn.loss import IGNORE_INDEX
from lmforge.optim import ScheduleConfig
from lmforge.train.module import LMTrainModule, MicroBatch
from lmforge.train.run import carry_optimizer_state

PEERS = Path(__file__).parent / "peers"
WHEELS = ["ai2-olmo-core==3.0.0", "dataclass-extensions==0.5.0", "bettermap==1.3.1", "importlib_resources==7.1.0", "dill==0.4.1",
          "ai2-olmo==0.6.0", "omegaconf==2.4.0"]
# The peers import cached_path (which pulls cloud SDKs) but never fetch in these runs: a stand-in.
STUB = '''def cached_path(p, *a, **k):
    return p


def get_download_progress(*a, **k):
    return None
'''
STUB_SCHEMES = '''class SchemeClient:
    recoverable_errors = ()

    def __init__(self, *a, **k):
        pass


class S3Client(SchemeClient):
    pass


def add_scheme_client(*a, **k):
    pass
'''


STUB_RETRY = '''class Retry:
    def __init__(self, *a, **k):
        pass


def if_transient_error(exc):
    return False
'''


def _peer_site() -> Path:
    """A directory with OLMo-core and OLMo (no dependencies), made once."""
    if os.environ.get("LMFORGE_PEER_SITE"):
        return Path(os.environ["LMFORGE_PEER_SITE"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lmforge" / "test-peers" / hashlib.sha256(" ".join(WHEELS).encode()).hexdigest()[:12]
    site = cache / "site"
    if (cache / "complete").is_file():
        return site
    import fcntl

    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:  # pytest-xdist workers: one fetches, the other waits
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (cache / "complete").is_file():
            return site
        wheels = cache / "wheels"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        got = subprocess.run(pip + ["download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *WHEELS],
                             capture_output=True, text=True, timeout=300)
        if got.returncode != 0:
            pytest.skip(f"OLMo-core / OLMo wheels not available here ({got.stderr.strip().splitlines()[-1][:160] if got.stderr.strip() else 'pip failed'})")
        subprocess.run(pip + ["install", "--no-index", "--no-deps", "--target", str(site), *map(str, sorted(wheels.glob("*.whl")))],
                       check=True, capture_output=True, timeout=300)
        (cache / "complete").write_text("\n".join(WHEELS) + "\n")
    return site


def _stubs(root: Path) -> Path:
    """Stand-ins for what the peers import but never use here: cached_path (cloud SDKs) and
    google.api_core's retry helpers (OLMo's GCS code); ``google`` stays a namespace package."""
    for rel, text in (("cached_path/__init__.py", STUB), ("cached_path/schemes.py", STUB_SCHEMES),
                      ("google/api_core/__init__.py", ""), ("google/api_core/retry.py", STUB_RETRY)):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_peer(script: str, out: Path, *args: str) -> Path:
    site = _peer_site()
    stubs = _stubs(out / "stubs")
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{stubs}", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "WORLD_SIZE": "1",
           "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(PEERS / script), str(out), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return out


@pytest.fixture(scope="module")
def olmo_core_run(tmp_path_factory):
    out = _run_peer("olmo_core_run.py", tmp_path_factory.mktemp("olmo_core"))
    return {"dir": out, "fmt": "olmo-core", "step1": out / "run" / "step1", "step2": out / "run" / "step2", "next": "step2"}


@pytest.fixture(scope="module", params=["olmo2", "olmo1"])
def olmo_run(tmp_path_factory, request):
    out = _run_peer("olmo_run.py", tmp_path_factory.mktemp(f"olmo_{request.param}"), request.param)
    return {"dir": out, "fmt": "olmo", "step1": out / "step1-unsharded", "step2": out / "step2-unsharded", "next": "step2", "arch": request.param}


def _labels(ids: torch.Tensor) -> torch.Tensor:
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, :-1] = ids[:, 1:]
    return labels


def _one_step(ckpt: Path, batch: torch.Tensor, *, carry: bool):
    """lmforge's training step (LMTrainModule, the optimizer the import recorded) from ``ckpt``."""
    fc_optim = read_foreign_optim(ckpt)
    model, _ = load_pretrained(ckpt, dtype=torch.float32)
    optimizer = fc_optim.build(model)
    if carry:
        carry_optimizer_state(str(ckpt), model, optimizer)  # what `lmforge train --init-from CKPT --keep-optimizer` does
    module = LMTrainModule(model, optimizer, ScheduleConfig(kind="constant", total_steps=10), peak_lr=fc_optim.lr, grad_clip=None)
    metrics = module.train_batch([MicroBatch(batch, _labels(batch))], step=0)
    return model.eval(), metrics


def read_foreign_optim(ckpt: Path):
    from lmforge.optim import OptimConfig

    return OptimConfig.from_dict(yaml.safe_load((ckpt / "config.yaml").read_text())["optim"])


def _check_peer(run: dict, tmp_path: Path, capsys) -> None:
    ours = {}
    for s in ("step1", "step2"):
        assert main(["import", "--from", run["fmt"], str(run[s]), "--out", str(tmp_path / s)]) == 0
        ours[s] = tmp_path / s
    said = capsys.readouterr().out
    assert "weights and AdamW state" in said and "--keep-optimizer" in said
    extra = json.loads((ours["step2"] / "extra.json").read_text())
    assert extra["step"] == 2 and extra["imported_from"]["format"] == run["fmt"] and extra["imported_from"]["optimizer_state"]

    probe = load_file(str(run["dir"] / "probe.safetensors"))
    batches = load_file(str(run["dir"] / "batches.safetensors"))
    ref_loss = json.loads((run["dir"] / "probe.json").read_text())["loss"]

    # (a) the peer's final model and the imported step 2 compute the same function
    final, _ = load_pretrained(ours["step2"], dtype=torch.float32)
    with torch.no_grad():
        logits = final.eval()(probe["input_ids"])
    torch.testing.assert_close(logits, probe["logits"], rtol=0, atol=1e-5)

    # (b) one lmforge step from step 1 with the carried AdamW state lands on the peer's step 2
    carried, metrics = _one_step(ours["step1"], batches[run["next"]].long(), carry=True)
    target = final.state_dict()
    diff = max((carried.state_dict()[k] - target[k]).abs().max().item() for k in target)
    with torch.no_grad():
        loss = carried(probe["input_ids"], labels=_labels(probe["input_ids"])).loss.item()
    assert diff < 1e-4, f"weights after the step differ from the peer's step 2 by {diff}"
    assert loss == pytest.approx(ref_loss, rel=1e-5, abs=1e-5)
    assert 4.0 < metrics["loss"] < 7.0
    # ... and it is the carried state that does it: fresh moments step elsewhere
    fresh, _ = _one_step(ours["step1"], batches[run["next"]].long(), carry=False)
    fresh_diff = max((fresh.state_dict()[k] - target[k]).abs().max().item() for k in target)
    assert fresh_diff > 20 * max(diff, 1e-6), (fresh_diff, diff)


def test_olmo_core_checkpoint_imports_with_optimizer_state(olmo_core_run, tmp_path, capsys):
    _check_peer(olmo_core_run, tmp_path, capsys)
    # the save folder itself means its latest step; a config.json elsewhere can be named
    fc = read_foreign("olmo-core", olmo_core_run["dir"] / "run")
    assert fc.step == 2 and fc.config.arch == "olmo2" and fc.config.n_heads == 8 and fc.config.vocab_size == 380
    assert fc.optim.decay_norms and fc.optim.decay_embeddings and fc.optim.lr == 1e-3 and fc.optim.betas == [0.9, 0.95]


def test_olmo_core_import_trains_on_with_lmforge_train(olmo_core_run, tmp_path):
    """The imported checkpoint as `lmforge train --init-from CKPT --keep-optimizer` uses it."""
    ckpt = tmp_path / "imported"
    assert main(["import", "--from", "olmo-core", str(olmo_core_run["dir"] / "run"), "--out", str(ckpt)]) == 0
    run = tmp_path / "continued"
    cfg = {"run": {"dir": str(run), "seed": 1, "device": "cpu"},
           "data": {"sources": [{"paths": [str(olmo_core_run["dir"] / "tokens.npy")], "name": "same-data"}], "dtype": "uint16", "eos_id": 0},
           "optim": {"lr": 1e-4, "decay_norms": True, "decay_embeddings": True},
           "schedule": {"kind": "linear", "warmup_steps": 0, "total_steps": 2, "final_lr_ratio": 0.0},
           "trainer": {"global_batch": 4, "micro_batch": 4, "seq_len": 64, "precision": "fp32", "parallel": "none"},
           "logging": {"progress": False, "plot": False, "every": 1}}
    path = tmp_path / "continue.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--init-from", str(ckpt), "--keep-optimizer"]) == 0
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert len(losses) == 2 and all(5.0 < x < 6.5 for x in losses)  # where OLMo-core left off (ln 380 = 5.94 at init)


def test_olmo_trainer_checkpoint_imports_with_optimizer_state(olmo_run, tmp_path, capsys):
    _check_peer(olmo_run, tmp_path, capsys)
    fc = read_foreign("olmo", olmo_run["dir"])  # the save folder: its latest stepN-unsharded
    assert fc.step == 2 and fc.config.arch == olmo_run["arch"] and fc.config.tie_embeddings == (olmo_run["arch"] == "olmo1")


# --- crafted checkpoints: what is refused, in one line --------------------------------------------
class _Boom:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _olmo_dir(tmp_path: Path, arch: str = "olmo2") -> tuple[Path, ModelConfig, dict]:
    """An OLMo-trainer-format checkpoint made from a random lmforge model through the name map."""
    cfg = ModelConfig(arch=arch, d_model=64, n_layers=2, n_heads=4, mlp_hidden=96, vocab_size=300, max_seq_len=64, tie_embeddings=arch == "olmo1")
    torch.manual_seed(0)
    ours = cfg.build().state_dict()
    theirs: dict[str, list] = {}
    for name, parts in olmo_layout(cfg).items():
        for src, rows in parts:
            theirs.setdefault(src, []).append((rows, ours[name]))
    model = {src: torch.cat([t for _, t in sorted(pieces, key=lambda p: (p[0] or (0, 0))[0])]) for src, pieces in theirs.items()}
    d = tmp_path / "step7-unsharded"
    d.mkdir()
    torch.save(model, d / "model.pt")
    olmo2 = arch == "olmo2"
    (d / "config.yaml").write_text(yaml.safe_dump({
        "model": {"d_model": 64, "n_heads": 4, "n_layers": 2, "mlp_hidden_size": 192, "rope": True, "rope_theta": 500000 if olmo2 else 10000,
                  "layer_norm_type": "rms" if olmo2 else "default", "layer_norm_with_affine": olmo2, "norm_after": olmo2,
                  "attention_layer_norm": olmo2, "include_bias": False, "weight_tying": not olmo2, "vocab_size": 300, "embedding_size": 384,
                  "max_sequence_length": 64, "layer_norm_eps": 1e-6 if olmo2 else 1e-5},
        "optimizer": {"name": "adamw", "learning_rate": 4e-4, "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8}}))
    return d, cfg, ours


@pytest.mark.parametrize("arch", ["olmo2", "olmo1"])
def test_olmo_layout_round_trip_without_optimizer_state(tmp_path, arch, capsys):
    d, cfg, ours = _olmo_dir(tmp_path, arch)
    assert main(["import", "--from", "olmo", str(d), "--out", str(tmp_path / "ckpt")]) == 0
    assert "weights only" in capsys.readouterr().out
    model, _ = load_pretrained(tmp_path / "ckpt")
    assert model.config.arch == arch and model.config.vocab_size == 300 and model.config.padded_vocab_size == 384
    for k, v in model.state_dict().items():
        assert torch.equal(v, ours[k]), k
    assert json.loads((tmp_path / "ckpt" / "extra.json").read_text())["step"] == 7


def test_pickled_code_in_model_pt_is_refused(tmp_path, capsys):
    d, _, _ = _olmo_dir(tmp_path)
    marker = tmp_path / "ran"
    state = torch.load(d / "model.pt", weights_only=True)
    torch.save({**state, "transformer.extra": _Boom(marker)}, d / "model.pt")
    assert main(["import", "--from", "olmo", str(d), "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.pt: not a plain tensor checkpoint" in err and "\n" not in err
    assert not marker.exists() and not (tmp_path / "ckpt").exists()


def test_pickled_code_in_a_safetensors_key_is_refused(tmp_path, capsys):
    d, _, _ = _olmo_dir(tmp_path)
    marker = tmp_path / "ran"
    state = torch.load(d / "model.pt", weights_only=True)
    (d / "model.pt").unlink()
    key = base64.urlsafe_b64encode(pickle.dumps((("transformer.wte.weight",), _Boom(marker)))).decode()
    save_file({key: state["transformer.wte.weight"]}, str(d / "model.safetensors"))
    assert main(["import", "--from", "olmo", str(d), "--out", str(tmp_path / "ckpt")]) == 2
    assert "refusing posix.system" in capsys.readouterr().err and not marker.exists()


def test_pickled_code_in_olmo_core_metadata_is_refused(tmp_path, capsys):
    d = tmp_path / "step3" / "model_and_optim"
    d.mkdir(parents=True)
    marker = tmp_path / "ran"
    (d / ".metadata").write_bytes(pickle.dumps(_Boom(marker)))
    assert main(["import", "--from", "olmo-core", str(tmp_path / "step3"), "--out", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert "refusing to load posix.system" in err and not marker.exists()


def test_other_architectures_and_configs_get_one_line(tmp_path, capsys):
    d, _, _ = _olmo_dir(tmp_path)
    state = torch.load(d / "model.pt", weights_only=True)
    torch.save({**state, "transformer.blocks.0.moe_router.weight": torch.zeros(4, 64)}, d / "model.pt")
    assert main(["import", "--from", "olmo", str(d), "--out", str(tmp_path / "a")]) == 2
    assert "'transformer.blocks.0.moe_router.weight' has no place in an lmforge olmo2 model" in capsys.readouterr().err
    torch.save(state, d / "model.pt")
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    cfg["model"]["alibi"] = True
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["import", "--from", "olmo", str(d), "--out", str(tmp_path / "b")]) == 2
    assert "alibi" in capsys.readouterr().err
    assert main(["import", "--from", "olmo", str(tmp_path / "nowhere"), "--out", str(tmp_path / "c")]) == 2
    assert "no such directory" in capsys.readouterr().err
    (tmp_path / "sharded").mkdir()
    (tmp_path / "sharded" / "rank0.pt").write_bytes(b"")
    assert main(["import", "--from", "olmo", str(tmp_path / "sharded"), "--out", str(tmp_path / "d")]) == 2
    assert "unshard it" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in "abcd")
