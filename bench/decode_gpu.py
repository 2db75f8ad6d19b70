"""Decode speed of the OLMo-2-1B architecture on one GPU: lmforge's compiled static-cache path vs HF generate().

Same bf16 weights on both sides (lmforge's, copied into HF ``Olmo2ForCausalLM``, sdpa), random
prompts of ``--prompt-len`` tokens, greedy, exactly ``--new-tokens`` new tokens per row (no EOS stop).

* batch 1: lmforge plain (dynamic cache), lmforge ``compile=True`` (static KV cache, one compiled
  single-token step replayed as a CUDA graph), HF ``generate()``; ratio compiled / HF.
* batches 16 and 64: throughput (new tokens/s over all rows) of the same three.
* checks first: the compiled path gives the plain path's tokens (greedy) in every timed batch; and
  lmforge's greedy tokens equal HF ``generate()``'s on the same prompts, checked in float32 (a float32
  copy of the same weights on the same device, TF32 off; ``--check-rows`` prompts, up to 64 new
  tokens each). Where a row differs, lmforge's own float32 logits at the first differing token must
  show a near-tie between the two choices (margin <= 1e-3; kernels round differently), otherwise
  the check fails. In the timed bf16 runs HF's tokens are compared too, and only reported (bf16
  rounding flips near-ties, and a random model's top logits are close together).
  Either check failing makes the script exit 1 (after writing the JSON).

Each figure is the median of ``--reps`` timed calls after a warmup (the first compiled call
compiles and captures). ``--tiny`` runs a 2-layer model on the CPU to check the script.

    python bench/decode_gpu.py [--tiny] [--batches 1,16,64] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import model_pair  # noqa: E402

PAD_ID = 1
TIE_MARGIN = 1e-3  # float32: larger than the two implementations' rounding differences, far below a real difference


def greedy_hf(hf, prompts: torch.Tensor, new_tokens: int, dev: str, vocab_size: int) -> list[list[int]]:
    """HF generate(), greedy; the embedding's padding ids (>= ``vocab_size``) are never chosen, as in lmforge."""
    padding = list(range(vocab_size, hf.config.vocab_size))
    with torch.inference_mode():
        out = hf.generate(prompts.to(dev), attention_mask=torch.ones_like(prompts).to(dev), max_new_tokens=new_tokens,
                          min_new_tokens=new_tokens, do_sample=False, suppress_tokens=padding or None)  # fmt: skip
    return out[:, prompts.shape[1] :].tolist()


def hf_agreement(cfg, dev: str, prompts: torch.Tensor, new_tokens: int, pair=None) -> dict:
    """lmforge's greedy tokens vs HF generate()'s, in float32 (see the module docstring)."""
    from lmforge.generate import GenerationConfig, generate_ids

    ours, hf = pair if pair is not None else model_pair(cfg, torch.float32, 0, eos_token_id=None, pad_token_id=PAD_ID)
    ours, hf = ours.to(dev).eval(), hf.to(dev).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = PAD_ID
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        gen = GenerationConfig(max_new_tokens=new_tokens, stop_at_eos=False)
        a_rows = generate_ids(ours, prompts.tolist(), gen, pad_token_id=PAD_ID, eos_token_id=None, vocab_size=cfg.vocab_size)
        b_rows = greedy_hf(hf, prompts, new_tokens, dev, cfg.vocab_size)
        divergences = []
        for i, (a, b) in enumerate(zip(a_rows, b_rows)):
            if a == b:
                continue
            j = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
            if j is None:  # one is a prefix of the other: lengths differ
                divergences.append({"row": i, "at": min(len(a), len(b)), "margin": None, "lengths": [len(a), len(b)]})
                continue
            context = torch.tensor([prompts[i].tolist() + a[:j]], device=dev)
            with torch.inference_mode():
                logits = ours(context)[0, -1].float()
            margin = abs(float(logits[a[j]] - logits[b[j]]))
            divergences.append({"row": i, "at": j, "lmforge": a[j], "hf": b[j], "margin": margin})
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    ok = all(d["margin"] is not None and d["margin"] <= TIE_MARGIN for d in divergences)
    return {"dtype": "float32", "rows": len(a_rows), "new_tokens": new_tokens, "identical_rows": len(a_rows) - len(divergences),
            "divergences": divergences, "tie_margin": TIE_MARGIN, "ok": ok}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--preset", default="olmo2-1b", help="model preset (random weights)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU in float32 even when a GPU is there")
    p.add_argument("--check-rows", type=int, default=4, help="prompts of the float32 agreement check with HF generate()")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a = p.parse_args()
    from lmforge.generate import GenerationConfig, generate_ids
    from lmforge.models import get_preset

    dev = "cuda" if torch.cuda.is_available() and not (a.tiny or a.cpu) else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    if a.tiny:
        cfg = get_preset("olmo2-1m", {"max_seq_len": 256})
        a.prompt_len, a.new_tokens, a.batches, a.reps = 16, 24, "1,4", 2
    else:
        cfg = get_preset(a.preset, {"max_seq_len": max(a.prompt_len + a.new_tokens, get_preset(a.preset).max_seq_len)})
    V = cfg.vocab_size
    # Agreement with HF first, in float32 (the float32 pair is freed before the timed one is built).
    check_prompts = torch.randint(2, V, (a.check_rows, a.prompt_len), generator=torch.Generator().manual_seed(1))
    check_new = min(a.new_tokens, 64)
    if dtype == torch.float32:
        ours, hf = model_pair(cfg, dtype, 0, eos_token_id=None, pad_token_id=PAD_ID)
        agreement = hf_agreement(cfg, dev, check_prompts, check_new, pair=(ours, hf))
    else:
        agreement = hf_agreement(cfg, dev, check_prompts, check_new)
        if dev == "cuda":
            torch.cuda.empty_cache()
        ours, hf = model_pair(cfg, dtype, 0, eos_token_id=None, pad_token_id=PAD_ID)
    print(f"agreement with HF generate() in float32: {agreement['identical_rows']}/{agreement['rows']} rows identical over "
          f"{check_new} new tokens" + (f"; differing rows: {agreement['divergences']}" if agreement["divergences"] else "")
          + ("" if agreement["ok"] else "  << FAILED: not a near-tie"), flush=True)  # fmt: skip
    ours, hf = ours.to(dev).eval(), hf.to(dev).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = PAD_ID

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    def lmforge(compile_: bool):
        gen = GenerationConfig(max_new_tokens=a.new_tokens, stop_at_eos=False, compile=compile_)
        return lambda prompts: generate_ids(ours, prompts.tolist(), gen, pad_token_id=PAD_ID, eos_token_id=None, vocab_size=V)

    def hf_generate(prompts):
        return greedy_hf(hf, prompts, a.new_tokens, dev, V)

    runners = {"lmforge_plain": lmforge(False), "lmforge_compiled": lmforge(True), "hf_generate": hf_generate}
    results: dict = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "dtype": str(dtype), "torch": torch.__version__,
                     "prompt_len": a.prompt_len, "new_tokens": a.new_tokens, "command": "python bench/decode_gpu.py " + " ".join(sys.argv[1:]),
                     "hf_agreement": agreement}  # fmt: skip
    g = torch.Generator().manual_seed(0)
    for B in [int(b) for b in a.batches.split(",")]:
        prompts = torch.randint(2, V, (B, a.prompt_len), generator=g)
        outs = {name: fn(prompts) for name, fn in runners.items()}  # warmup (compiles, captures)
        same = outs["lmforge_compiled"] == outs["lmforge_plain"]
        row = {"compiled_equals_plain": same, "hf_equals_plain": outs["hf_generate"] == outs["lmforge_plain"]}
        if not same:
            print(f"batch {B}: the compiled path's tokens differ from the plain path's", flush=True)
        for name, fn in runners.items():
            times = []
            for _ in range(a.reps):
                sync()
                t = time.perf_counter()
                fn(prompts)
                sync()
                times.append(time.perf_counter() - t)
            row[name] = B * a.new_tokens / statistics.median(times)
        row["ratio_compiled_over_hf"] = row["lmforge_compiled"] / row["hf_generate"]
        results[f"batch{B}"] = row
        print(f"batch {B:3d}: lmforge compiled {row['lmforge_compiled']:9.0f} tok/s  plain {row['lmforge_plain']:9.0f}  "
              f"HF generate {row['hf_generate']:9.0f}  ratio compiled/HF {row['ratio_compiled_over_hf']:.2f}x  "
              f"same tokens: compiled=plain {same}, HF=plain {row['hf_equals_plain']}", flush=True)  # fmt: skip
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "decode_gpu.json").write_text(json.dumps(results, indent=1) + "\n")
    compiled_ok = all(results[k]["compiled_equals_plain"] for k in results if k.startswith("batch"))
    return 0 if compiled_ok and agreement["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
