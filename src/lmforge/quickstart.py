"""``lmforge quickstart``: the main job.

This is the foundation-stage version of the quickstart. It runs every stage that exists today on
real inputs, and says plainly which stages come next:

    corpus     text from this Python's own standard library (always available, PSF license)
    tokenizer  a byte-level BPE with OLMo's special tokens, trained on that corpus
    model      a small OLMo-2-style model (preset olmo2-1m), saved as an lmforge checkpoint
    export     the checkpoint exported to HF transformers' Olmo2ForCausalLM format
    parity     transformers loads the export and computes the same logits
    generate   text from lmforge's generator and from transformers.pipeline

Finished stages are reused when the command is run again (``--out`` decides where).
"""

from __future__ import annotations

import os
import sysconfig
import time
from pathlib import Path

from lmforge.config import atomic_write_text

CORPUS_BYTES = 3_000_000
VOCAB_SIZE = 4096
PROMPTS = ["def main():", "The standard library"]


def _stage(i: int, n: int, text: str) -> float:
    print(f"[{i}/{n}] {text}", flush=True)
    return time.perf_counter()


def _done(t0: float, note: str = "") -> None:
    print(f"      done in {time.perf_counter() - t0:.1f}s{(' - ' + note) if note else ''}", flush=True)


def build_stdlib_corpus(path: Path, max_bytes: int = CORPUS_BYTES) -> Path:
    """Concatenate Python standard-library sources (sorted, deterministic) up to ``max_bytes``."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, size = [], 0
    for f in sorted(stdlib.glob("*.py")):
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # a few files carry other encodings; the corpus does not need them
        parts.append(text)
        size += len(text.encode("utf-8"))
        if size >= max_bytes:
            break
    atomic_write_text(path, "\n\n".join(parts))
    return path


def run_quickstart(out_dir: str | os.PathLike = "runs/quickstart") -> int:
    import torch
    import transformers

    from lmforge.checkpoint import save_model
    from lmforge.generate import GenerationConfig, generate
    from lmforge.models import get_preset
    from lmforge.release import export_hf, load_pretrained
    from lmforge.tokenizer import Tokenizer, train_bpe

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = 6
    start = time.perf_counter()

    corpus = out / "corpus" / "stdlib.txt"
    t0 = _stage(1, n, f"corpus: Python standard library sources -> {corpus}")
    if not corpus.is_file():
        build_stdlib_corpus(corpus)
    _done(t0, f"{corpus.stat().st_size / 1e6:.1f} MB")

    tok_path = out / "tokenizer" / "tokenizer.json"
    t0 = _stage(2, n, f"tokenizer: byte-level BPE, {VOCAB_SIZE} ids, OLMo special tokens -> {tok_path}")
    tokenizer = Tokenizer.from_file(tok_path) if tok_path.is_file() else train_bpe([str(corpus)], VOCAB_SIZE, tok_path)
    _done(t0, f"EOS {tokenizer.eos_token_id}, PAD {tokenizer.pad_token_id}, vocab {tokenizer.vocab_size}")

    ckpt = out / "checkpoint"
    t0 = _stage(3, n, f"model: olmo2-1m (untrained; training arrives with the trainer) -> {ckpt}")
    cfg = get_preset("olmo2-1m", {"vocab_size": tokenizer.vocab_size})
    torch.manual_seed(0)
    model = cfg.build().eval()
    save_model(ckpt, model, tokenizer=tokenizer, config={"quickstart": {"preset": "olmo2-1m", "seed": 0}})
    _done(t0, f"{model.num_params():,} parameters")

    hf_dir = out / "hf"
    t0 = _stage(4, n, f"export: HF transformers Olmo2ForCausalLM -> {hf_dir}")
    export_hf(model, tokenizer, hf_dir, overwrite=True)
    _done(t0)

    t0 = _stage(5, n, "parity: transformers loads the export; logits compared with lmforge's")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    ids = torch.tensor([tokenizer.encode(PROMPTS[0] + " return 0")])
    with torch.no_grad():
        diff = (hf_model(ids).logits - model(ids)).abs().max().item()
    _done(t0, f"{type(hf_model).__name__}, max |logit difference| = {diff:.2e}")

    t0 = _stage(6, n, "generate: lmforge (KV cache) and transformers.pipeline, greedy, 24 new tokens")
    reloaded, tok = load_pretrained(ckpt)
    gen = GenerationConfig(max_new_tokens=24)
    ours = generate(reloaded, tok, PROMPTS, gen)
    pipe = transformers.pipeline("text-generation", model=str(hf_dir))
    theirs = [r[0]["generated_text"][len(p):] for p, r in zip(PROMPTS, (pipe(p, max_new_tokens=24, do_sample=False) for p in PROMPTS))]
    for p, a, b in zip(PROMPTS, ours, theirs):
        print(f"      prompt {p!r}\n        lmforge:      {a!r}\n        transformers: {b!r}")
    _done(t0, "same text from both" if ours == theirs else "outputs differ")

    print(f"\nquickstart finished in {time.perf_counter() - start:.0f}s. Outputs:")
    for label, path in [("corpus", corpus), ("tokenizer", tok_path), ("lmforge checkpoint", ckpt), ("HF export", hf_dir)]:
        print(f"  {label:20s} {path}")
    print(
        "\nTry:  lmforge generate --model " + str(hf_dir) + " --prompt 'import os'"
        "\nNext: `lmforge data tokenize` + `lmforge train` (docs/training.md) and `lmforge eval` run today; the full quickstart (fetch, process, train, evaluate, release) is the next milestone."
    )
    return 0 if diff < 1e-4 else 1
