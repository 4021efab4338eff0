#!/usr/bin/env bash
# GPU check for one H100/H200 machine without network (CI never runs this; it needs a GPU).
#
# It runs the CPU benchmarks themselves on the GPU, so their last lines are the same as on CPU:
#   bench/train_step.py --device cuda --dtype bfloat16: DPO+SFT step of trl.DPOTrainer, the two-row
#     baseline and PrefixSharedDPOTrainer on a random Qwen2-1.5B-shaped model (bf16 weights), 4K tokens
#     per pair (3,072/512/512 and an unequal case), 2 pairs per batch, non-reentrant gradient
#     checkpointing, fused AdamW; seconds per step (median and spread of the rounds) and peak GPU memory
#     (torch.cuda.max_memory_allocated) per variant. Last lines:
#       "MFU against the <GPU> bf16 peak (989 TFLOP/s): N%"
#       "share of same-process GEMM FLOP/s (bfloat16): N%"   (8192^3 bf16 matmul measured in the process)
#       "ratio vs TRL DPOTrainer: N.NNx"
#   bench/sample.py --device cuda --dtype bfloat16: HFEngine packed and default vs
#     generate(num_return_sequences=8) per prompt and padded, same random model, 4 prompts of ~1,000
#     tokens, 256 new tokens; tokens/s (median, spread) and peak GPU memory per method. Last lines:
#       "<engine mode>: N% of the decode bound (...)"  (weights + KV bytes per step at the GPU's copy
#       bandwidth measured in the process), then "ratio vs num_return_sequences: N.NNx"
# The device and versions are in each log's "device:" line. Logs: $OUT/train_step.log,
# $OUT/sample.log, everything in $OUT/gpu_check.log, packages in $OUT/gpu_pip_list.txt; the last lines
# of both benchmarks are repeated at the end ("== summary").
#
# How the lead runs it: the device tool's `run` with
#     command: bash bench/gpu_check.sh      carry: [".wheels"]      timeout_s: 600
# (.wheels/ is git-ignored and holds the wheels that machine lacks: `bash bench/gpu_wheels.sh` fills it). The
# machine has torch, accelerate and peft; missing or older packages (trl, datasets, dill,
# multiprocess, and transformers, which it has below the project's 5.20 floor) are installed offline
# from .wheels into /tmp/gpu_check_site, which goes first on PYTHONPATH; the repo itself is used
# through PYTHONPATH too (no pip install -e). GPU_CHECK_UPGRADE=0 installs only missing packages.
#
# Time: one device command may run 600 s. GPU_CHECK_BUDGET (seconds, default 480) is shared by the two
# benchmarks: train_step gets 40% of it, sample what is left; each is told its part minus 30 s
# (--time-limit: it measures fewer rounds rather than overrun, at least one) and killed at its part
# (timeout); a hard limit of 540 s from the script's start backs the whole run.
# GPU_CHECK_ONLY=train|sample|vllm runs one part (then it gets the whole budget); GPU_CHECK_MODEL=PATH
# benchmarks a model folder instead of the random model; GPU_CHECK_TRAIN_ARGS / GPU_CHECK_SAMPLE_ARGS
# append options (e.g. GPU_CHECK_TRAIN_ARGS="--rounds 3 --pairs 1").
#
# vLLM: when `vllm` imports on that machine, bench/vllm_check.py measures VLLMEngine's sampling
# tokens/s with prefix caching on vs off ($OUT/vllm_check.json, last line "vllm prefix caching on vs
# off: N.NNx tokens/s"). Two engine starts do not fit beside the benchmarks in one 600 s command, so
# it runs as its own command: `GPU_CHECK_ONLY=vllm bash bench/gpu_check.sh` (timeout 540 s). vLLM and
# its CUDA wheels are far over the 64 MiB carry limit: the check runs only where vLLM is preinstalled
# and says so otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SITE=/tmp/gpu_check_site
HARD_LIMIT=540  # seconds since the start; bash's SECONDS counts from it
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 WANDB_MODE=disabled

# Prints name==version for each carried wheel that fits this interpreter and is missing (does not
# import) or, unless GPU_CHECK_UPGRADE=0, installed at an older version.
wanted_wheels() {
    "$PY" - "$1" <<'PYEOF'
import importlib, importlib.metadata as md, os, sys
from pathlib import Path
from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

upgrade = os.environ.get("GPU_CHECK_UPGRADE", "1") != "0"
supported = set(sys_tags())
seen = {}
for whl in sorted(Path(sys.argv[1]).glob("*.whl")):
    name, version, _, tags = parse_wheel_filename(whl.name)
    if tags & supported:
        seen[canonicalize_name(name)] = version
for name, version in sorted(seen.items()):
    try:
        importlib.import_module(name.replace("-", "_"))
        have = Version(md.version(name))
    except Exception:
        have = None
    if have is None or (upgrade and have < version):
        print(f"{name}=={version}")
        print(f"  {name}: have {have}, installing {version}", file=sys.stderr)
PYEOF
}

main() {
    echo "gpu_check.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader \
        || echo "nvidia-smi: not available"
    "$PY" -V
    local pythonpath="$PWD"
    if [[ -d .wheels ]]; then
        local specs
        specs=$(wanted_wheels .wheels) || { echo "WARNING: could not read .wheels"; specs=""; }
        if [[ -n "$specs" ]]; then
            # shellcheck disable=SC2086  # one spec per word
            if "$PY" -m pip install -q --no-index --find-links .wheels --no-deps --no-compile \
                    --no-cache-dir --upgrade --target "$SITE" $specs; then
                pythonpath="$SITE:$pythonpath"
            else
                echo "WARNING: offline install from .wheels failed; running with what is installed"
            fi
        fi
    else
        echo "WARNING: no .wheels folder (carry it: carry [\".wheels\"]); running with what is installed"
    fi
    export PYTHONPATH="$pythonpath${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -m pip list --format=freeze >"$OUT/gpu_pip_list.txt" 2>/dev/null || true
    local rc=0
    case "${GPU_CHECK_ONLY:-}" in
        "" | train | sample | vllm) ;;
        *) echo "GPU_CHECK_ONLY=${GPU_CHECK_ONLY}: expected train, sample or vllm"; return 2 ;;
    esac
    if [[ "${GPU_CHECK_ONLY:-}" == "vllm" ]]; then
        if ! "$PY" -c "import vllm" 2>/dev/null; then
            echo "vllm_check: vllm does not import here; nothing measured"
            return 0
        fi
        timeout $((HARD_LIMIT - SECONDS)) "$PY" bench/vllm_check.py --out "$OUT/vllm_check.json" || rc=$?
        [[ $rc -eq 124 ]] && echo "vllm_check.py hit the ${HARD_LIMIT} s limit"
        return "$rc"
    fi
    local budget="${GPU_CHECK_BUDGET:-480}" only="${GPU_CHECK_ONLY:-}" model=()
    [[ -n "${GPU_CHECK_MODEL:-}" ]] && model=(--model "$GPU_CHECK_MODEL")
    local train_part=$((budget * 2 / 5))
    [[ "$only" == "train" ]] && train_part=$budget
    # shellcheck disable=SC2086  # the extra options are words
    if [[ -z "$only" || "$only" == "train" ]]; then
        run_bench train_step "$train_part" bench/train_step.py --device cuda --dtype bfloat16 \
            ${model[@]+"${model[@]}"} ${GPU_CHECK_TRAIN_ARGS:-} || rc=$?
    fi
    # shellcheck disable=SC2086
    if [[ -z "$only" || "$only" == "sample" ]]; then
        run_bench sample $((budget - SECONDS)) bench/sample.py --device cuda --dtype bfloat16 \
            ${model[@]+"${model[@]}"} --prompts 4 --prompt-tokens 1024 --new-tokens 256 --n 8 --rounds 3 \
            ${GPU_CHECK_SAMPLE_ARGS:-} || rc=$?
    fi
    echo
    echo "== summary (rc $rc)"
    # (|| true: a missing line must not end the script under set -e)
    grep -sE '^(device:|MFU against|share of same-process|ratio vs TRL)' "$OUT/train_step.log" || true
    grep -sE '(of the decode bound|^ratio vs num_return_sequences)' "$OUT/sample.log" || true
    return "$rc"
}

# run_bench NAME SECONDS SCRIPT ARGS...: the script with --time-limit SECONDS - 30, killed at SECONDS
# (never past HARD_LIMIT since the start), its output in $OUT/NAME.log.
run_bench() {
    local name=$1 seconds=$2
    shift 2
    local left=$((HARD_LIMIT - SECONDS - 5))
    ((seconds > left)) && seconds=$left
    if ((seconds < 90)); then
        echo "== $name: skipped, ${seconds} s left of the time limits"
        return 1
    fi
    echo
    echo "== $name ($seconds s at most, from ${SECONDS} s): $*"
    local rc=0
    timeout "$seconds" "$PY" "$@" --time-limit $((seconds - 30)) 2>&1 | tee "$OUT/$name.log" || rc=$?
    [[ $rc -eq 124 ]] && echo "$name hit its ${seconds} s timeout: its last lines are missing"
    return "$rc"
}

main "$@" 2>&1 | tee "$OUT/gpu_check.log"
