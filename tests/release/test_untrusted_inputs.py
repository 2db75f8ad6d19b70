"""Model directories are untrusted input: what is in them never makes lmforge read files elsewhere,
crash with a traceback, or allocate what the files do not hold.

Every case starts from a real export (``export_hf`` of a tiny model, single-file and sharded), edits
one file the way a broken or hostile directory would, and runs the real command line
(``lmforge import`` / ``export`` / ``generate``) on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from lmforge.cli import main
from lmforge.models.hf import expected_shapes, to_hf_state_dict
from lmforge.release import export_hf
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

INDEX = "model.safetensors.index.json"


@pytest.fixture(scope="module")
def exports(tmp_path_factory, bpe_tokenizer):
    """A tiny OLMo-2 model exported as one file, sharded, and as an lmforge checkpoint."""
    from lmforge.checkpoint import save_model

    root = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    model = tiny_config(vocab_size=bpe_tokenizer.vocab_size).build().eval()
    export_hf(model, bpe_tokenizer, root / "single")
    export_hf(model, bpe_tokenizer, root / "sharded", max_shard_size="100KB")
    save_model(root / "ckpt", model, tokenizer=bpe_tokenizer)
    return root


def _copy(exports: Path, kind: str, dest: Path) -> Path:
    out = dest / kind
    shutil.copytree(exports / kind, out)
    return out


def _cli(argv, capsys) -> tuple[int, list[str]]:
    rc = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


def _refused(argv, capsys, *needles: str) -> str:
    """Run the CLI; it must exit 2 with exactly one stderr line, ``lmforge: error: ...``, containing ``needles``."""
    got, err = _cli(argv, capsys)
    assert got == 2, err
    assert len(err) == 1 and err[0].startswith("lmforge: error:"), err
    for needle in needles:
        assert needle in err[0], (needle, err[0])
    return err[0]


def _import(model_dir: Path) -> list[str]:
    return ["import", "--model", model_dir, "--out", model_dir.parent / (model_dir.name + "-imported")]


# --- 1. weight files must be plain file names inside the directory ----------------------------------
def _index(d: Path) -> dict:
    return json.loads((d / INDEX).read_text())


def _point_first_tensor_at(d: Path, target: str) -> str:
    """Make the index's first entry name ``target``; returns that entry's tensor name."""
    index = _index(d)
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = target
    (d / INDEX).write_text(json.dumps(index))
    return key


@pytest.mark.parametrize("how", ["dotdot", "absolute", "subdirectory"])
def test_weight_map_entries_outside_the_directory_are_refused(exports, tmp_path, capsys, how):
    d = _copy(exports, "sharded", tmp_path)
    shard = _index(d)["weight_map"][next(iter(_index(d)["weight_map"]))]
    # A real, readable shard outside the model directory: the old loader read it without a word.
    outside = tmp_path / "elsewhere" / shard
    outside.parent.mkdir()
    shutil.copyfile(d / shard, outside)
    (d / "sub").mkdir()
    shutil.copyfile(d / shard, d / "sub" / shard)
    target = {"dotdot": f"../elsewhere/{shard}", "absolute": str(outside), "subdirectory": f"sub/{shard}"}[how]
    key = _point_first_tensor_at(d, target)
    _refused(_import(d), capsys, str(d / INDEX), repr(key), repr(target), "not a plain file name")
    assert not (tmp_path / "sharded-imported").exists()


def test_shard_symlink_leading_out_is_refused(exports, tmp_path, capsys):
    d = _copy(exports, "sharded", tmp_path)
    shard = sorted(p.name for p in d.glob("model-*.safetensors"))[0]
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(d / shard, outside)
    (d / shard).symlink_to(outside)
    _refused(_import(d), capsys, str(d / INDEX), repr(shard), "link leading outside")


def test_single_file_symlink_leading_out_is_refused(exports, tmp_path, capsys):
    d = _copy(exports, "single", tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(d / "model.safetensors", outside)
    (d / "model.safetensors").symlink_to(outside)
    _refused(_import(d), capsys, str(d / "model.safetensors"), "link leading outside")


def test_links_inside_the_directory_and_the_hf_cache_layout_still_load(exports, tmp_path, capsys):
    # A shard that is a link to another file of the same directory is inside it.
    d = _copy(exports, "sharded", tmp_path)
    shard = sorted(p.name for p in d.glob("model-*.safetensors"))[0]
    (d / shard).rename(d / "real.safetensors")
    (d / shard).symlink_to("real.safetensors")
    rc, err = _cli(_import(d), capsys)
    assert rc == 0, err
    # huggingface_hub's cache: REPO/snapshots/REV/* are links to REPO/blobs/*.
    repo = tmp_path / "models--me--tiny"
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in sorted((exports / "single").iterdir()):
        shutil.copyfile(f, repo / "blobs" / f.name)
        (snap / f.name).symlink_to(Path("../../blobs") / f.name)
    rc, err = _cli(_import(snap), capsys)
    assert rc == 0, err


# --- 2. malformed files: one line naming the file and the key ----------------------------------------
def _json_edit(name: str, fn):
    def edit(d: Path) -> None:
        doc = json.loads((d / name).read_text())
        fn(doc)
        (d / name).write_text(json.dumps(doc))

    return edit


def _write(name: str, data: str | bytes):
    def edit(d: Path) -> None:
        (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())

    return edit


def _without_yaml(edit):
    def both(d: Path) -> None:
        os.remove(d / "lmforge.yaml")  # config.json is what gets read
        edit(d)

    return both


MALFORMED = {
    # config.json (read when the export has no lmforge.yaml, as in transformers' own directories)
    "config-not-json": ("single", _without_yaml(_write("config.json", "{oops")), ["config.json", "invalid JSON"]),
    "config-not-utf8": ("single", _without_yaml(_write("config.json", b"\xff\xfe{}")), ["config.json", "not UTF-8"]),
    "config-list": ("single", _without_yaml(_write("config.json", "[1, 2]")), ["config.json", "JSON object", "list"]),
    "config-hidden-abc": ("single", _without_yaml(_json_edit("config.json", lambda c: c.update(hidden_size="abc"))), ["config.json", "'hidden_size'", "'abc'"]),
    "config-hidden-missing": ("single", _without_yaml(_json_edit("config.json", lambda c: c.pop("hidden_size"))), ["config.json", "'hidden_size'"]),
    "config-hidden-fraction": ("single", _without_yaml(_json_edit("config.json", lambda c: c.update(hidden_size=64.5))), ["config.json", "'hidden_size'", "64.5"]),
    "config-heads-bool": ("single", _without_yaml(_json_edit("config.json", lambda c: c.update(num_attention_heads=True))), ["config.json", "'num_attention_heads'"]),
    "config-vocab-zero": ("single", _without_yaml(_json_edit("config.json", lambda c: c.update(vocab_size=0))), ["config.json", "'vocab_size'"]),
    "config-rope-int": ("single", _without_yaml(_json_edit("config.json", lambda c: c.update(rope_parameters=5))), ["config.json", "'rope_parameters'"]),
    "config-tie-string": ("single", _without_yaml(_json_edit("config.json", lambda c: c.update(tie_word_embeddings="no"))), ["config.json", "'tie_word_embeddings'"]),
    "config-heads-indivisible": ("single", _without_yaml(_json_edit("config.json", lambda c: c.update(num_attention_heads=5))), ["config.json", "n_heads"]),
    # lmforge.yaml (exports of lmforge: it wins over config.json)
    "yaml-invalid": ("single", _write("lmforge.yaml", "model: [unclosed\n"), ["lmforge.yaml", "not valid YAML"]),
    "yaml-list": ("single", _write("lmforge.yaml", "- 1\n- 2\n"), ["lmforge.yaml", "'model' section"]),
    "yaml-no-model": ("single", _write("lmforge.yaml", "other: 1\n"), ["lmforge.yaml", "no 'model' key"]),
    "yaml-d-model-abc": ("single", _write("lmforge.yaml", "model:\n  d_model: abc\n"), ["lmforge.yaml", "model.d_model", "'abc'"]),
    # model.safetensors.index.json
    "index-not-json": ("sharded", _write(INDEX, "{oops"), [INDEX, "invalid JSON"]),
    "index-list": ("sharded", _write(INDEX, "[]"), [INDEX, "JSON object", "list"]),
    "index-no-weight-map": ("sharded", _write(INDEX, '{"metadata": {}}'), [INDEX, "no 'weight_map' key"]),
    "index-weight-map-list": ("sharded", _write(INDEX, '{"weight_map": ["a"]}'), [INDEX, "'weight_map' is"]),
    "index-entry-int": ("sharded", _json_edit(INDEX, lambda i: i["weight_map"].update({"lm_head.weight": 5})), [INDEX, "'lm_head.weight'", "got 5"]),
    # tokenizer_config.json
    "tokcfg-not-json": ("single", _write("tokenizer_config.json", "{oops"), ["tokenizer_config.json", "not valid JSON"]),
    "tokcfg-list": ("single", _write("tokenizer_config.json", "[]"), ["tokenizer_config.json", "JSON object"]),
    "tokcfg-eos-int": ("single", _json_edit("tokenizer_config.json", lambda t: t.update(eos_token=123)), ["tokenizer_config.json", "'eos_token'", "123"]),
    "tokcfg-pad-content-int": ("single", _json_edit("tokenizer_config.json", lambda t: t.update(pad_token={"content": 7})), ["tokenizer_config.json", "'pad_token'"]),
    "tokcfg-chat-template-int": ("single", _json_edit("tokenizer_config.json", lambda t: t.update(chat_template=5)), ["tokenizer_config.json", "'chat_template'"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_one_line_errors_through_import(exports, tmp_path, capsys, case):
    kind, edit, needles = MALFORMED[case]
    d = _copy(exports, kind, tmp_path)
    edit(d)
    _refused(_import(d), capsys, *needles)


@pytest.mark.parametrize("case", ["config-hidden-abc", "config-list", "yaml-list", "index-list", "tokcfg-eos-int"])
def test_malformed_files_are_one_line_errors_through_export_and_generate(exports, tmp_path, capsys, case):
    kind, edit, needles = MALFORMED[case]
    d = _copy(exports, kind, tmp_path)
    edit(d)
    _refused(["export", "--model", d, "--out", tmp_path / "out"], capsys, *needles)
    _refused(["generate", "--model", d, "--prompt", "hi", "--max-new-tokens", "2"], capsys, *needles)


def test_the_edits_above_start_from_a_loadable_directory(exports, tmp_path, capsys):
    for kind in ("single", "sharded"):
        rc, err = _cli(_import(_copy(exports, kind, tmp_path)), capsys)
        assert rc == 0, err


# --- 3. shapes are checked against the safetensors headers before anything is built -------------------
@pytest.mark.parametrize("arch, tie, kv", [("olmo1", False, None), ("olmo2", True, 2), ("olmo2", False, 1)])
def test_expected_shapes_are_the_models_shapes(arch, tie, kv):
    cfg = tiny_config(arch, tie_embeddings=tie, n_kv_heads=kv)
    state = cfg.build(device="meta").state_dict()
    assert dict(expected_shapes(cfg, "lmforge")) == {k: tuple(v.shape) for k, v in state.items()}
    hf = to_hf_state_dict(cfg.build().state_dict(), cfg)
    assert dict(expected_shapes(cfg, "hf")) == {k: tuple(v.shape) for k, v in hf.items()}


_LIMITED = """
import resource, sys
limit = 2 << 30  # 2 GiB of address space: torch fits, a model of the config's size does not
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from lmforge.cli import main
rc = main(sys.argv[1:])
# this process's own peak: ru_maxrss would start at the parent's (Linux carries it across exec)
print("maxrss_kib", next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")))
sys.exit(rc)
"""


def _run_limited(argv) -> tuple[int, str, int, float]:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _LIMITED, *map(str, argv)], capture_output=True, text=True, timeout=300)
    rss = [int(line.split()[1]) for line in p.stdout.splitlines() if line.startswith("maxrss_kib")]
    return p.returncode, p.stderr, rss[0] if rss else -1, time.perf_counter() - t0


ABSURD = {
    # config.json edits of an export without lmforge.yaml: first mismatching tensor named
    "hidden_size": ("config.json", {"hidden_size": 10_000_000}, "'model.embed_tokens.weight' has shape (384, 64), config.json implies (384, 10000000)"),
    "vocab_size": ("config.json", {"vocab_size": 10**9}, "'model.embed_tokens.weight' has shape (384, 64), config.json implies (1000000000, 64)"),
    "num_hidden_layers": ("config.json", {"num_hidden_layers": 10**8}, "no tensor 'model.layers.2.self_attn.q_proj.weight'"),
    # lmforge.yaml edits (it is what an lmforge export is read with)
    "n_layers": ("lmforge.yaml", {"n_layers": 10**8}, "no tensor 'model.layers.2.self_attn.q_proj.weight', which lmforge.yaml implies"),
    "d_model": ("lmforge.yaml", {"d_model": 4_000_000}, "'model.embed_tokens.weight' has shape (384, 64), lmforge.yaml implies (384, 4000000)"),
}


@pytest.mark.parametrize("case", sorted(ABSURD))
def test_absurd_config_is_refused_before_allocating(exports, tmp_path, case):
    name, change, needle = ABSURD[case]
    d = _copy(exports, "single", tmp_path)
    if name == "config.json":
        os.remove(d / "lmforge.yaml")
        cfg = json.loads((d / name).read_text())
        cfg.update(change)
        (d / name).write_text(json.dumps(cfg))
    else:
        doc = yaml.safe_load((d / name).read_text())
        doc["model"].update(change)
        (d / name).write_text(yaml.safe_dump(doc))
    rc, err, rss_kib, seconds = _run_limited(_import(d))
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("lmforge: error:"), err[-2000:]
    assert needle in lines[0], lines[0]
    # well under the 2 GiB address-space limit: torch and transformers themselves take most of it
    # (0.8-1.1 GiB seen, depending on what the machine's allocator does), the config's model nothing
    assert 0 < rss_kib < 3 << 19, f"peak RSS {rss_kib} KiB"
    assert seconds < 120


def test_absurd_lmforge_checkpoint_config_is_refused_before_building(exports, tmp_path):
    # An lmforge checkpoint (config.yaml + model.safetensors) whose config claims 10 million layers:
    # the model used to be built (on the meta device, layer by layer) before the weights were compared.
    ck = _copy(exports, "ckpt", tmp_path)
    doc = yaml.safe_load((ck / "config.yaml").read_text())
    doc["model"]["n_layers"] = 10**7
    (ck / "config.yaml").write_text(yaml.safe_dump(doc))
    rc, err, rss_kib, seconds = _run_limited(["export", "--model", ck, "--out", tmp_path / "out"])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("lmforge: error:"), err[-2000:]
    assert "no tensor 'blocks.2.attn.qkv.weight', which config.yaml implies" in lines[0]
    assert 0 < rss_kib < 3 << 19 and seconds < 120


def test_non_float_weights_are_refused(exports, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    d = _copy(exports, "single", tmp_path)
    state = load_file(d / "model.safetensors")
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
    save_file(state, d / "model.safetensors", metadata={"format": "pt"})
    _refused(_import(d), capsys, "'model.norm.weight' has dtype I32")
