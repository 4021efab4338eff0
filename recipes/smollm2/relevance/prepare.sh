#!/usr/bin/env bash
# Inputs of the relevance study (recipes/smollm2/relevance/pipeline.yaml), from the public test files
# of hh-rlhf harmless and PandaLM and the real SmolLM2-135M-Instruct (its pip package, no Hub):
#   bash recipes/smollm2/relevance/prepare.sh DATA_DIR   # DATA_DIR: the folder with the two test files
# then: conj run --config recipes/smollm2/relevance/pipeline.yaml
set -euo pipefail
DATA=${1:?usage: prepare.sh DATA_DIR (holding hh-rlhf-harmless-base-test.jsonl.gz and pandalm-testset-v1.json)}
OUT=${OUT:-runs/relevance/inputs}
[ -d "$OUT/model" ] || conj real-model "$OUT/model"
# hh-rlhf: 30% of questions held out; own part (question + context + answer) <= 600 characters keeps
# CPU prompts short; answers under 4 words are generic ("I see.") and left out.
conj data relevance "$DATA/hh-rlhf-harmless-base-test.jsonl.gz" -o "$OUT/data/hh" \
  --heldout-percent 30 --max-chars 600 --min-answer-words 4 --seed 0
# PandaLM: a transfer set only (every question held out; never trained on).
conj data relevance "$DATA/pandalm-testset-v1.json" -o "$OUT/data/pandalm" \
  --heldout-percent 100 --max-chars 600 --min-answer-words 4 --seed 0
