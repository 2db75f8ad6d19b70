"""Decode speed of the OLMo-2-1B architecture on one GPU: lmforge's compiled static-cache path vs HF generate().

Same bf16 weights on both sides (lmforge's, copied into HF ``Olmo2ForCausalLM``, sdpa), random
prompts of ``--prompt-len`` tokens, greedy, exactly ``--new-tokens`` new tokens per row (no EOS stop).

* batch 1: lmforge plain (dynamic cache), lmforge ``compile=True`` (static KV cache, one compiled
  single-token step replayed as a CUDA graph), HF ``generate()``; ratio compiled / HF.
* batches 16 and 64: throughput (new tokens/s over all rows) of the same three.
* checks first: the compiled path gives the plain path's tokens (greedy), and reports whether HF's
  tokens agree too (in bf16 a near-tie may differ; that is reported, not failed).

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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--batches", default="1,16,64")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--preset", default="olmo2-1b", help="model preset (random weights)")
    p.add_argument("--cpu", action="store_true", help="run on the CPU in float32 even when a GPU is there")
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
    ours, hf = model_pair(cfg, dtype, 0, eos_token_id=None, pad_token_id=PAD_ID)
    ours, hf = ours.to(dev).eval(), hf.to(dev).eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = PAD_ID
    V = cfg.vocab_size

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    def lmforge(compile_: bool):
        gen = GenerationConfig(max_new_tokens=a.new_tokens, stop_at_eos=False, compile=compile_)
        return lambda prompts: generate_ids(ours, prompts.tolist(), gen, pad_token_id=PAD_ID, eos_token_id=None, vocab_size=V)

    def hf_generate(prompts):
        with torch.inference_mode():
            out = hf.generate(prompts.to(dev), attention_mask=torch.ones_like(prompts).to(dev), max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, do_sample=False)
        return out[:, prompts.shape[1] :].tolist()

    runners = {"lmforge_plain": lmforge(False), "lmforge_compiled": lmforge(True), "hf_generate": hf_generate}
    results: dict = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "dtype": str(dtype), "torch": torch.__version__,
                     "prompt_len": a.prompt_len, "new_tokens": a.new_tokens, "command": "python bench/decode_gpu.py " + " ".join(sys.argv[1:])}  # fmt: skip
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
    return 0 if all(results[k]["compiled_equals_plain"] for k in results if k.startswith("batch")) else 1


if __name__ == "__main__":
    raise SystemExit(main())
