"""HF interop: exported directories load in stock transformers with identical logits, and back.

Tiny random models, both architectures, tied and untied, grouped-query attention on and off.
"""

import dataclasses
import json
import os

import pytest
import torch
import transformers

from lmforge.checkpoint import CheckpointError, save_model
from lmforge.release import export_hf, import_hf, load_pretrained
from tests.conftest import tiny_config

CASES = [(arch, tie, kv) for arch in ("olmo1", "olmo2") for tie in (False, True) for kv in (None, 2)]
# OLMo-1's clip_qkv, at values that bite for these models and inputs: about a tenth of the q/k/v
# projections' outputs lie beyond them (lmforge's init with randomised norms reaches ~4, HF's ~0.6).
EXPORT_CLIP, IMPORT_CLIP = 1.5, 0.25


def _randomise_norms(model):
    # Norm weights start at 1; perturb them so a wrong key mapping of norms cannot go unnoticed.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)


def _check_clipping_bites(model, ids, mask, clip):
    """The q/k/v projections' outputs (before the clamp) go beyond ``clip``, and the logits differ
    from those of the same weights without clipping."""
    outs = []
    hooks = [b.attn.qkv.register_forward_hook(lambda m, a, o: outs.append(o.detach().abs().flatten())) for b in model.blocks]
    with torch.no_grad():
        clipped = model(ids, attention_mask=mask)
    for h in hooks:
        h.remove()
    pre = torch.cat(outs)
    assert model.config.clip_qkv == clip and (pre > clip).float().mean() > 0.01, (pre.max(), clip)
    free = dataclasses.replace(model.config, clip_qkv=None).build().eval()
    free.load_state_dict(model.state_dict())
    with torch.no_grad():
        unclipped = free(ids, attention_mask=mask)
    assert (clipped - unclipped)[mask.bool()].abs().max() > 1e-2
    return clipped


def _inputs(vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, 19), generator=g)
    mask = torch.ones_like(ids)
    mask[1, :6] = 0  # left padding in the second row
    return ids, mask


@pytest.mark.parametrize("arch, tie, kv", CASES)
def test_export_loads_in_transformers_with_equal_logits(tmp_path, bpe_tokenizer, arch, tie, kv):
    torch.manual_seed(0)
    cfg = tiny_config(arch, vocab_size=bpe_tokenizer.vocab_size, tie_embeddings=tie, n_kv_heads=kv, clip_qkv=EXPORT_CLIP if arch == "olmo1" else None)
    model = cfg.build().eval()
    _randomise_norms(model)
    out = export_hf(model, bpe_tokenizer, tmp_path / "hf")
    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf).__name__ == ("Olmo2ForCausalLM" if arch == "olmo2" else "OlmoForCausalLM")
    ids, mask = _inputs(bpe_tokenizer.vocab_size)
    if arch == "olmo1":
        assert hf.config.clip_qkv == EXPORT_CLIP
        _check_clipping_bites(model, ids, mask, EXPORT_CLIP)
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
        theirs = hf(input_ids=ids, attention_mask=mask).logits
    valid = mask.bool()
    assert (ours - theirs)[valid].abs().max().item() < 1e-5
    tok_cfg = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_cfg["padding_side"] == "left"
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    assert "token_type_ids" not in hf_tok.model_input_names
    assert hf_tok.eos_token_id == bpe_tokenizer.eos_token_id and hf_tok.pad_token_id == bpe_tokenizer.pad_token_id


@pytest.mark.parametrize("arch, tie, kv", CASES)
def test_import_from_transformers_with_equal_logits(tmp_path, arch, tie, kv):
    torch.manual_seed(1)
    common = dict(
        vocab_size=384, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv or 4, max_position_embeddings=128, tie_word_embeddings=tie, pad_token_id=1, eos_token_id=0,
    )
    hf_cfg = transformers.Olmo2Config(**common, rms_norm_eps=1e-6) if arch == "olmo2" else transformers.OlmoConfig(**common, clip_qkv=IMPORT_CLIP)
    hf = transformers.AutoModelForCausalLM.from_config(hf_cfg).eval()
    _randomise_norms(hf)
    hf.save_pretrained(tmp_path / "hf")
    model, tokenizer = import_hf(tmp_path / "hf")
    assert tokenizer is None and model.config.arch == arch and model.config.tie_embeddings == tie
    ids, mask = _inputs(384, seed=1)
    if arch == "olmo1":
        _check_clipping_bites(model, ids, mask, IMPORT_CLIP)
    with torch.no_grad():
        diff = (model(ids, attention_mask=mask) - hf(input_ids=ids, attention_mask=mask).logits)[mask.bool()]
    assert diff.abs().max().item() < 1e-5


def test_sharded_export_and_round_trip(tmp_path, bpe_tokenizer):
    torch.manual_seed(0)
    model = tiny_config(vocab_size=bpe_tokenizer.vocab_size).build().eval()
    out = export_hf(model, bpe_tokenizer, tmp_path / "hf", max_shard_size="100KB")
    shards = sorted(p.name for p in out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    again, tok = import_hf(out)
    ids = torch.randint(0, bpe_tokenizer.vocab_size, (1, 9))
    with torch.no_grad():
        assert (hf(ids).logits - model(ids)).abs().max() < 1e-5
        assert torch.equal(again(ids), model(ids))
    assert tok.encode("hello world") == bpe_tokenizer.encode("hello world")


def test_lmforge_checkpoint_round_trip(tmp_path, bpe_tokenizer):
    torch.manual_seed(0)
    model = tiny_config("olmo1", vocab_size=bpe_tokenizer.vocab_size, tie_embeddings=True).build().eval()
    save_model(tmp_path / "ckpt", model, tokenizer=bpe_tokenizer, config={"note": "resolved run config"})
    loaded, tok = load_pretrained(tmp_path / "ckpt")
    ids = torch.randint(0, bpe_tokenizer.vocab_size, (1, 9))
    assert torch.equal(loaded(ids), model(ids))
    assert tok.eos_token_id == bpe_tokenizer.eos_token_id
    assert "note: resolved run config" in (tmp_path / "ckpt" / "config.yaml").read_text()


def test_pipeline_generates_from_export_offline(tmp_path, bpe_tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    model = tiny_config(vocab_size=bpe_tokenizer.vocab_size).build().eval()
    out = export_hf(model, bpe_tokenizer, tmp_path / "hf")
    pipe = transformers.pipeline("text-generation", model=str(out))
    result = pipe("the model reads", max_new_tokens=8, do_sample=False)
    text = result[0]["generated_text"]
    assert text.startswith("the model reads") and len(text) > len("the model reads")


# --- errors ----------------------------------------------------------------------------------------
def test_missing_and_corrupt_files_are_one_line_errors(tmp_path, bpe_tokenizer):
    torch.manual_seed(0)
    model = tiny_config(vocab_size=bpe_tokenizer.vocab_size).build()
    out = export_hf(model, bpe_tokenizer, tmp_path / "hf")

    def err(path):
        with pytest.raises(CheckpointError) as info:
            load_pretrained(path)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert "no such checkpoint" in err(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "not an lmforge checkpoint" in err(tmp_path / "empty")

    weights = out / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in err(out) and "model.safetensors" in err(out)
    weights.unlink()
    assert "no model.safetensors" in err(out)
    (out / "pytorch_model.bin").write_bytes(b"not unpickled")
    assert "safetensors only" in err(out)


def test_shape_mismatch_names_the_tensor(tmp_path, bpe_tokenizer):
    model = tiny_config(vocab_size=bpe_tokenizer.vocab_size).build()
    out = export_hf(model, bpe_tokenizer, tmp_path / "hf")
    os.remove(out / "lmforge.yaml")
    cfg = json.loads((out / "config.json").read_text())
    cfg["intermediate_size"] = 128
    (out / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"'model.layers.0.mlp.gate_proj.weight' has shape \(96, 64\), config.json implies \(128, 64\)"):
        import_hf(out)


def test_export_refuses_tokenizer_larger_than_embedding(tmp_path, bpe_tokenizer):
    from lmforge.tokenizer import TokenizerError

    model = tiny_config(vocab_size=100).build()  # 128 rows < 384 ids
    with pytest.raises(TokenizerError, match="384"):
        export_hf(model, bpe_tokenizer, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_export_does_not_overwrite_by_accident(tmp_path, bpe_tokenizer):
    model = tiny_config(vocab_size=bpe_tokenizer.vocab_size).build()
    export_hf(model, bpe_tokenizer, tmp_path / "hf")
    with pytest.raises(CheckpointError, match="overwrite"):
        export_hf(model, bpe_tokenizer, tmp_path / "hf")
    export_hf(model, bpe_tokenizer, tmp_path / "hf", overwrite=True)
