#!/usr/bin/env bash
# Issue 4's GPU figures in one call of the `device` tool (about 6 minutes on an H200 plus the machine's start).
# Prepare on the development machine first, then run it there:
#
#   bash bench/gpu_prepare.sh
#   device run: command="bash bench/gpu_run.sh", carry=[".whl", ".gpu-data"], timeout_s=560
#
# Steps (each under its own time limit, so one that hangs leaves the others' figures):
#   1. scoring, GPT-Neo-125M shape, bf16: neogen vs one-at-a-time and batched `generate` at batch 64 (the CPU
#      table's setting), then neogen and batched `generate` at batch 512 over 5,000 questions (the GPU's share of
#      peak needs more tokens per pass than 64 short questions give);
#   2. training, GPT-Neo-125M shape: neogen vs the tutorial's Trainer recipe (speed and peak CUDA memory only: the
#      weights are random);
#   3. `neogen train` + `neogen score` with base weights in bf16, 8-bit and 4-bit (bitsandbytes): that the paths
#      run on CUDA, their training and scoring times.
# Every figure lands in $OUT (the device tool's folder; /tmp/neogen-gpu elsewhere): gpu.log and one JSON per step.
# Off a GPU the script runs as a smoke test of its own plumbing (NEOGEN_GPU_SMOKE=1 shrinks every step).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/neogen-gpu}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu.log") 2>&1
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
python=${PYTHON:-python3}
data=.gpu-data
smoke=${NEOGEN_GPU_SMOKE:-0}

if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/neogen-site \
    .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/neogen-site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
"$python" - <<'EOF'
import importlib

import torch

print(f"torch {torch.__version__} cuda {torch.version.cuda} available {torch.cuda.is_available()}")
for name in ("transformers", "peft", "accelerate", "datasets", "pyarrow", "bitsandbytes", "gguf"):
    try:  # a package that does not import here names the wheel to add in bench/gpu_prepare.sh
        print(f"{name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except Exception as error:
        print(f"{name}: does not import ({type(error).__name__}: {error})")
EOF

if [ "$smoke" = 1 ]; then rows=64; big_rows=128; big_batch=32; train_rows=16; test_rows=16; epochs=0.25
else rows=1000; big_rows=5000; big_batch=512; train_rows=400; test_rows=200; epochs=1; fi

step() {  # step NAME SECONDS COMMAND...: runs COMMAND under a time limit and logs its exit status and wall time
  local name=$1 limit=$2 start=$SECONDS
  shift 2
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@"
  echo "=== $name: rc=$? in $((SECONDS - start)) s"
}

step "scoring, batch 64" 150 "$python" bench/scoring.py --model gpt-neo-125m-random --precision bf16 \
  --data "$data/trec/TREC_10.label" --rows "$rows" --batch-size 64 --repeats 2 --peak-size 8192 \
  --json "$OUT/scoring-gptneo-bf16-b64.json"
step "scoring, batch $big_batch" 120 "$python" bench/scoring.py --model gpt-neo-125m-random --precision bf16 \
  --data "$data/trec/train_5500.label" --rows "$big_rows" --batch-size "$big_batch" --repeats 2 --skip-naive \
  --peak-size 8192 --json "$OUT/scoring-gptneo-bf16-b$big_batch.json"
step "training" 150 "$python" bench/training.py --model gpt-neo-125m-random \
  --data "$data/student_questions/subjects-questions-subset.csv" --rows "$train_rows" --test-rows "$test_rows" \
  --epochs "$epochs" --json "$OUT/training-gptneo.json"

# 3. Quantized base weights through the CLI, on the random GPT-Neo-125M that step 2 saved (no Hub here), and
#    TREC questions as the JSONL to score.
neo=$("$python" - "$data/trec/train_5500.label" /tmp/neogen-trec.jsonl "$big_rows" <<'EOF' | tail -n 1
import sys
from pathlib import Path

sys.path.insert(0, "bench")
from common import RANDOM_NEO, read_trec
from score_memory import write_input
from training import materialize_model

texts, _ = read_trec(sys.argv[1])
write_input(texts, int(sys.argv[3]), Path(sys.argv[2]))
print(materialize_model(RANDOM_NEO))  # the folder step 2 saved it in
EOF
)
train_csv=$data/student_questions/subjects-questions-subset.csv
if [ "$smoke" = 1 ]; then  # the first 100 rows, so that the CPU trains in seconds
  "$python" - "$train_csv" /tmp/neogen-student-smoke.csv <<'EOF'
import csv, sys

with open(sys.argv[1], newline="") as f, open(sys.argv[2], "w", newline="") as out:
    csv.writer(out).writerows(list(csv.reader(f))[:101])
EOF
  train_csv=/tmp/neogen-student-smoke.csv
fi
for q in null 8bit 4bit; do
  run=/tmp/neogen-run-$q
  rm -rf "$run" "/tmp/neogen-scored-$q.jsonl"
  # Device memory in use, sampled every 200 ms through both steps (the CUDA context included).
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "/tmp/neogen-mem-$q.txt" 2>/dev/null &
  sampler=$!
  step "train, quantization=$q" 90 "$python" -m neogen.cli -q train recipes/gpt-neo-125m.yaml model.name="$neo" \
    model.quantization="$q" data.train="$train_csv" \
    train.epochs="$epochs" output_dir="$run"
  step "score, quantization=$q" 60 "$python" -m neogen.cli score --no-progress "$run" /tmp/neogen-trec.jsonl \
    "/tmp/neogen-scored-$q.jsonl"
  kill "$sampler" 2>/dev/null
done
"$python" - "$OUT/quantized.json" <<'EOF'
import json, pathlib, sys

figures = {}
for q in ("null", "8bit", "4bit"):
    results = pathlib.Path(f"/tmp/neogen-run-{q}/results.json")
    scored = pathlib.Path(f"/tmp/neogen-scored-{q}.jsonl")
    memory = pathlib.Path(f"/tmp/neogen-mem-{q}.txt")
    samples = [int(v) for v in memory.read_text().split() if v.isdigit()] if memory.exists() else []
    figures[q] = {"results": json.loads(results.read_text()) if results.exists() else None,
                  "scored_lines": sum(1 for _ in scored.open()) if scored.exists() else 0,
                  "peak_device_memory_mib": max(samples, default=None)}
pathlib.Path(sys.argv[1]).write_text(json.dumps(figures, indent=1))
print(json.dumps({q: (f["scored_lines"], f["peak_device_memory_mib"]) for q, f in figures.items()}))
EOF
echo "=== done"
