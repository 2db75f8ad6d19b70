#!/usr/bin/env bash
# The GPU benchmarks in one device call (device tool: run(command="bash bench/gpu/device_checks.sh",
# carry=[".wheels"], timeout_s=580)). Before it, on the CPU machine, fetch OLMo-core's wheels:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform any -d .wheels \
#       ai2-olmo-core==3.0.0 dataclass-extensions bettermap importlib_resources dill
# (.wheels/ is git-ignored; `carry` takes it along.) Results land in $OUT as JSON, with a log.
set -uo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
SITE=/tmp/olmocore_site
pip install --quiet --no-index --no-deps --target "$SITE" .wheels/*.whl >"$OUT/install.log" 2>&1 || echo "OLMo-core wheels missing: its column will be empty"
export PYTHONPATH="$PWD/src:$SITE:$PWD/bench/gpu/stubs"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
run() { local name=$1 limit=$2; shift 2; echo "== $name"; timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | grep -v "^\[step" | tail -20; }
# 1. speed: lmforge's trainer path vs OLMo-core vs HF+compile (OLMo-2-1B, seq 4096); then the
#    lmforge variants worth trying (bigger micro-batch without activation checkpointing)
run train_speed 170 python bench/train_speed_gpu.py --out "$OUT"
run train_speed_mb8 60 python bench/train_speed_gpu.py --only lmforge --lmforge-micro-batch 8 --out "$OUT/mb8"
run train_speed_async 50 python bench/train_speed_gpu.py --only lmforge --lmforge trainer.async_metrics=true \
    --lmforge trainer.stability.skip_nonfinite=false --lmforge trainer.stability.spike_k=null --out "$OUT/async"
run train_speed_fsdp1 60 python bench/train_speed_gpu.py --only lmforge --lmforge trainer.parallel=fsdp \
    --lmforge trainer.fsdp_single_process=true --out "$OUT/fsdp1"
# 2. same numbers, faster: 50 bf16 steps, fast path vs plain path
run fast_vs_plain 80 python bench/fast_vs_plain.py --preset olmo2-150m --steps 50 --out "$OUT"
# 3. decode: compiled static cache vs HF generate at batch 1, 16, 64 (after a float32 token check against HF)
run decode 130 python bench/decode_gpu.py --out "$OUT"
# 4. checkpoint stall of the 1B model (then every save loaded back and compared with the live state)
run checkpoint_stall 90 python bench/checkpoint_stall.py --out "$OUT"
ls -la "$OUT"
