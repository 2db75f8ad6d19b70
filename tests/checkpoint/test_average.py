"""Checkpoint averaging: the weights equal the mean computed by hand, the result loads and exports to
transformers with the same logits, and bad inputs get one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

from lmforge.checkpoint import CheckpointError, load_model, save_model
from lmforge.checkpoint.average import average_checkpoints
from lmforge.cli import main
from lmforge.release import export_hf
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoints(tmp_path, tokenizer, n=3, **cfg_kw):
    cfg = tiny_config("olmo2", vocab_size=tokenizer.vocab_size, **cfg_kw)
    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = cfg.build().eval()
        with torch.no_grad():  # norms away from 1, so that their averaging shows too
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5)
        paths.append(save_model(tmp_path / f"step{i}", model, tokenizer=tokenizer))
    return paths


def test_the_average_is_the_mean_by_hand_and_exports_to_transformers(tmp_path, bpe_tokenizer, capsys):
    paths = _checkpoints(tmp_path, bpe_tokenizer)
    states = [load_model(p).state_dict() for p in paths]
    assert main(["checkpoint", "average", *map(str, paths), "--out", str(tmp_path / "soup"), "--weights", "1,2,1"]) == 0
    assert "averaged 3 checkpoints (weights 1, 2, 1)" in capsys.readouterr().out
    soup = load_model(tmp_path / "soup")
    for name, tensor in soup.state_dict().items():
        if name not in states[0]:
            continue
        by_hand = (states[0][name].double() + 2 * states[1][name].double() + states[2][name].double()) / 4
        assert torch.allclose(tensor.double(), by_hand, atol=1e-7, rtol=0), name
        assert not torch.equal(tensor, states[0][name]), name  # every input differs: so does the mean
    provenance = json.loads((tmp_path / "soup" / "averaged_from.json").read_text())
    assert [round(x["weight"], 6) for x in provenance["inputs"]] == [0.25, 0.5, 0.25]
    assert all(len(x["sha256"]) == 64 for x in provenance["inputs"])
    # uniform by default
    average_checkpoints(paths[:2], tmp_path / "half")
    half = load_model(tmp_path / "half").state_dict()
    name = next(k for k in half if k.endswith("weight") and "norm" not in k)
    assert torch.allclose(half[name].double(), (states[0][name].double() + states[1][name].double()) / 2, atol=1e-7, rtol=0)
    # exportable: stock transformers loads it, with the same logits
    out = export_hf(soup, bpe_tokenizer, tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(0, bpe_tokenizer.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (soup(ids) - hf(input_ids=ids).logits).abs().max().item() < 1e-5
    assert main(["export", "--model", str(tmp_path / "soup"), "--out", str(tmp_path / "hf-cli")]) == 0
    assert (tmp_path / "hf-cli" / "config.json").is_file()


def test_bad_inputs_get_one_line_errors(tmp_path, bpe_tokenizer, capsys):
    paths = _checkpoints(tmp_path, bpe_tokenizer, n=2)
    other = _checkpoints(tmp_path / "wide", bpe_tokenizer, n=1, d_model=96)
    with pytest.raises(CheckpointError, match="model config differs .*d_model"):
        average_checkpoints([paths[0], other[0]], tmp_path / "x")
    with pytest.raises(CheckpointError, match="2 value\\(s\\) for 3 checkpoint"):
        average_checkpoints([*paths, paths[0]], tmp_path / "x", weights=[1, 1])
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints(paths[:1], tmp_path / "x")
    with pytest.raises(CheckpointError, match="not an lmforge checkpoint"):
        average_checkpoints([paths[0], tmp_path / "nowhere"], tmp_path / "x")
    (tmp_path / "taken").mkdir()
    with pytest.raises(CheckpointError, match="already exists"):
        average_checkpoints(paths, tmp_path / "taken")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.tmp-*"))
    assert main(["checkpoint", "average", *map(str, paths), "--out", str(tmp_path / "y"), "--weights", "1,a"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error:") and "--weights" in err and "\n" not in err
