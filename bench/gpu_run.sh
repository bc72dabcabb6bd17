#!/usr/bin/env bash
# neogen's GPU figures in one go, on a CUDA machine without network access (about 6 minutes on an H200). Prepare on
# a machine with network access, copy the checkout with .whl/ and .gpu-data/, then run it there:
#
#   bash bench/gpu_prepare.sh          # here
#   bash bench/gpu_run.sh              # there; the result files and gpu.log land in $OUT (default /tmp/neogen-gpu)
#
# Steps (each under its own time limit, so one that hangs leaves the others' figures):
#   1. scoring, GPT-Neo-125M shape, bf16: neogen vs one-at-a-time and batched `generate` at batch 64 (the CPU
#      table's setting), then neogen and batched `generate` at batch 512 over 5,000 questions (a GPU's share of its
#      peak needs more tokens per pass than 64 short questions give);
#   2. training, GPT-Neo-125M shape: neogen vs the tutorial's Trainer recipe (speed and peak CUDA memory only: the
#      weights are random);
#   3. quantized: `neogen train` + `neogen score` with base weights in bf16, 8-bit and 4-bit (bitsandbytes): that
#      the paths run on CUDA, their training and scoring times and peak device memory.
# Every step writes its result file (bench/README.md's schema) into $OUT. Off a GPU the script checks its own
# plumbing: NEOGEN_GPU_SMOKE=1 shrinks every step (8-bit and 4-bit then stop with "needs a CUDA GPU", as they must).
# On a busy CPU a smoke step can still run out of time; run its command alone to check it.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/neogen-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python=${PYTHON:-python3}
smoke=${NEOGEN_GPU_SMOKE:-0}
if [ -d .gpu-data ]; then export NEOGEN_SHARED_DATA="$PWD/.gpu-data"; fi  # else ../shared/data, as everywhere

if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/neogen-site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/neogen-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
"$python" - <<'PY'
import importlib

import torch

print(f"torch {torch.__version__} cuda {torch.version.cuda} available {torch.cuda.is_available()}")
for name in ("transformers", "peft", "accelerate", "datasets", "pyarrow", "bitsandbytes", "gguf"):
    try:  # a package that does not import here names the wheel to add in bench/gpu_prepare.sh
        print(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as error:
        print(f"{name}: does not import ({type(error).__name__}: {error})")
PY

# The smoke check shrinks every step and gives it 4x the time: a CPU is far slower than the GPU the limits are for.
if [ "$smoke" = 1 ]; then rows=64; big_rows=128; big_batch=32; train_rows=16; test_rows=16; epochs=0.25; student=100
  peak=1024; scale=4
else rows=1000; big_rows=5000; big_batch=512; train_rows=400; test_rows=200; epochs=1; student=none; peak=8192
  scale=1; fi

step() {  # step NAME SECONDS COMMAND...: runs COMMAND under a time limit and logs its exit status and wall time
  local name=$1 limit=$(($2 * scale)) start=$SECONDS
  shift 2
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@"
  echo "=== $name: rc=$? in $((SECONDS - start)) s"
}

bench=("$python" -m bench run --out "$OUT")
neo=model=gpt-neo-125m-random
step "scoring, batch 64" 150 "${bench[@]}" scoring "$neo" precision=bf16 data=trec/TREC_10.label rows="$rows" \
  batch_size=64 repeats=2 peak_size="$peak"
step "scoring, batch $big_batch" 120 "${bench[@]}" scoring "$neo" precision=bf16 rows="$big_rows" \
  batch_size="$big_batch" repeats=2 skip_naive=true peak_size="$peak"
step "training" 150 "${bench[@]}" training "$neo" rows="$train_rows" test_rows="$test_rows" epochs="$epochs"
for q in none 8bit 4bit; do
  step "quantized, $q" 180 "${bench[@]}" quantized quantization="$q" train_rows="$student" epochs="$epochs" \
    score_lines="$big_rows" train_timeout=$((90 * scale)) score_timeout=$((60 * scale))
done
ls "$OUT"
echo "=== done"
