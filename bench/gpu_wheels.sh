#!/usr/bin/env bash
# Fill the git-ignored .wheels/ with what the GPU machine lacks for bench/gpu_check.sh (it has torch,
# accelerate, peft, pyarrow, pandas, xxhash, fsspec, tokenizers 0.23 and transformers 5.17, Python
# 3.12, no network). Run here, where the package registry is reachable; versions follow
# constraints/cpu.txt; ~16.5 MiB. pyarrow is not carried (52.5 MiB for cp312 alone; the image has it).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="${PIP:-.venv/bin/pip}"
mkdir -p .wheels
"$PIP" download --no-deps -d .wheels trl==1.16.0 datasets==5.2.0 dill==0.4.1 transformers==5.24.0 \
    fsspec==2026.9.0
for v in 3.10 3.11 3.12; do
    "$PIP" download --no-deps --only-binary=:all: --python-version "$v" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .wheels multiprocess==0.70.19 xxhash==4.1.0
done
ls -l .wheels
