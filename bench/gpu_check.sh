#!/usr/bin/env bash
# GPU check for one H100/H200 machine without network (CI never runs this; it needs a GPU).
#
# What it measures (bench/gpu_check.py has the details and the counting conventions): a random-weight
# Qwen2-1.5B-shaped model in bf16; DPO+SFT step time, tokens/s, peak GPU memory and MFU at 4K tokens
# per pair for trl.DPOTrainer vs PrefixSharedDPOTrainer (plus the two-row baseline, and TRL with
# flash_attention_2 when flash_attn imports); sampling tokens/s of HFEngine vs
# model.generate(num_return_sequences=8). Results: $OUT/gpu_check.json, log $OUT/gpu_check.log,
# package list $OUT/gpu_pip_list.txt. Last line: "ratio vs TRL DPOTrainer (GPU): N.NNx".
#
# How the lead runs it: the device tool's `run` with
#     command: bash bench/gpu_check.sh      carry: [".wheels"]      timeout_s: 600
# (.wheels/ is git-ignored and holds the wheels that machine lacks: `bash bench/gpu_wheels.sh` fills it). The
# machine has torch, accelerate and peft; missing or older packages (trl, datasets, dill,
# multiprocess, and transformers, which it has below the project's 5.20 floor) are installed offline
# from .wheels into /tmp/gpu_check_site, which goes first on PYTHONPATH; the repo itself is used
# through PYTHONPATH too (no pip install -e). GPU_CHECK_UPGRADE=0 installs only missing packages.
# GPU_CHECK_BUDGET (seconds, default 360) time-boxes the Python part; a hard `timeout 540` backs it.
# Extra arguments go to gpu_check.py (e.g. --sections "dpo equal").
#
# vLLM: when `vllm` imports on that machine, bench/vllm_check.py measures VLLMEngine's sampling
# tokens/s with prefix caching on vs off ($OUT/vllm_check.json, last line "vllm prefix caching on vs
# off: N.NNx tokens/s"). Two engine starts do not fit beside the DPO sections in one 600 s command, so
# it runs as its own command: `GPU_CHECK_ONLY=vllm bash bench/gpu_check.sh` (timeout 540 s). vLLM and
# its CUDA wheels are far over the 64 MiB carry limit: the check runs only where vLLM is preinstalled
# and says so otherwise.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
SITE=/tmp/gpu_check_site
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
    if [[ "${GPU_CHECK_ONLY:-}" == "vllm" ]]; then
        if ! "$PY" -c "import vllm" 2>/dev/null; then
            echo "vllm_check: vllm does not import here; nothing measured"
            return 0
        fi
        timeout 540 "$PY" bench/vllm_check.py --out "$OUT/vllm_check.json" || rc=$?
        [[ $rc -eq 124 ]] && echo "vllm_check.py hit the 540 s timeout"
        return "$rc"
    fi
    timeout 540 "$PY" bench/gpu_check.py --device cuda \
        --seconds-budget "${GPU_CHECK_BUDGET:-360}" --out "$OUT/gpu_check.json" "$@" || rc=$?
    if [[ $rc -eq 124 ]]; then
        echo "gpu_check.py hit the 540 s timeout; $OUT/gpu_check.json holds the sections that finished"
    fi
    return "$rc"
}

main "$@" 2>&1 | tee "$OUT/gpu_check.log"
