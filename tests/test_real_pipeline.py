"""Every stage on the real pretrained SmolLM2-135M-Instruct and real hh-rlhf pairs, kept small for CI.

One ``conj run`` (sample with hints and the template's prefill, filter, DPO with full weights,
reward model, evaluation in both orders) is shared by the module's tests; LoRA, ``Judge.compare`` and
the bf16-vs-fp32 checks reuse its outputs. Sizes: 6 training pairs (the shortest of the file), 2
held-out pairs, 24 new tokens, 1 optimizer step. bf16 is used where the CPU has bf16 instructions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conj_train.io import iter_jsonl, read_json, write_jsonl
from conj_train.train.machine import cpu_has_fast_bf16

PREFILL = ' {"reason":'  # the conj-en template's evaluation prefill
DTYPE = "bfloat16" if cpu_has_fast_bf16() else "float32"
TRAIN = {"max_length": 384, "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.1], "beta": 0.1,
         "learning_rate": 1e-5, "max_steps": 1, "per_device_train_batch_size": 2,
         "gradient_checkpointing": False, "save_strategy": "no", "eval_strategy": "no", "report_to": "none",
         "disable_tqdm": True, "logging_steps": 1, "seed": 3, "precompute_ref_log_probs": True}


def conversational(r: dict) -> dict:
    """A canonical record as a TRL conversational row."""
    prompt = [*(r.get("context") or []), {"role": "user", "content": r["question"]}]
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}]}


def _chars(r: dict) -> int:
    return len(r["question"]) + len(r["chosen"]) + len(r["rejected"]) + len(json.dumps(r.get("context") or []))


@pytest.fixture(scope="module")
def real_run(real_model_dir: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The pipeline run on 6 + 2 real pairs; returns its paths and the two runs' results."""
    from conj_train.data import load_preferences
    from conj_train.pipeline.run import run_pipeline

    root = tmp_path_factory.mktemp("real-run")
    records = load_preferences(str(shared_data / "hh-rlhf-harmless-base-test.jsonl.gz")).records
    short = sorted(records, key=lambda r: (_chars(r), r["id"]))[:8]
    write_jsonl(root / "train.jsonl", map(conversational, short[:6]))
    write_jsonl(root / "heldout.jsonl", map(conversational, short[6:]))
    spec = {
        "output_dir": str(root / "run"), "model_name_or_path": str(real_model_dir),
        "dataset_name": str(root / "train.jsonl"), "heldout": str(root / "heldout.jsonl"),
        "sample": {"template": "conj-en", "n": 2, "hint_samples": 1, "prefill": None, "temperature": 0.8,
                   "repetition_penalty": 1.0, "max_new_tokens": 24, "dtype": DTYPE, "progress": False,
                   "threads": 2, "batch_pairs": 6},
        "filter": {"preset": "paper", "validation_share": 0.0},
        "train": {**TRAIN, "bf16": True},
        "train_rm": {k: v for k, v in TRAIN.items() if k not in ("loss_type", "loss_weights", "beta",
                                                                "precompute_ref_log_probs")},
        "eval": {"template": "conj-en", "orders": "both", "max_new_tokens": 24, "dtype": DTYPE,
                 "transfer": False, "progress": False, "threads": 2},
    }
    recipe = root / "pipeline.yaml"
    recipe.write_text(yaml.safe_dump(spec))
    first = run_pipeline(recipe)
    again = run_pipeline(recipe)
    return {"out": root / "run", "first": first, "again": again, "recipe": recipe}


def test_every_stage_runs_on_the_real_model_and_reruns_from_the_cache(real_run: dict) -> None:
    out = real_run["out"]
    assert {s.name: s.status for s in real_run["first"].stages} == dict.fromkeys(
        ("sample", "filter", "train", "train_rm", "eval"), "ran")
    assert {s.status for s in real_run["again"].stages} == {"cached"}
    counts = read_json(out / "sample" / "manifest.json")["counts"]
    assert counts["by_kind"] == {"repeated": 12, "hint_correct": 6, "hint_wrong": 6}
    rows = list(iter_jsonl(out / "sample" / "judgments" / "shard-00000-of-00001.jsonl"))
    assert all(r["text"].startswith(PREFILL) for r in rows)
    # With the prefill the real model writes the JSON verdict for most judgments.
    assert counts["share_parseable"] >= 0.5, counts
    report = read_json(out / "filter" / "report.json")
    assert report["pairs_total"] >= 1 and report["pairs_unparseable_chosen"] == 0
    assert (out / "train" / "model.safetensors").is_file() and (out / "reward" / "model.safetensors").is_file()
    metrics = read_json(out / "eval" / "metrics.json")
    text = json.dumps(metrics)
    for name in ("base", "rm", "conj"):
        assert f'"{name}"' in text
    assert (out / "eval" / "summary.md").is_file()


def test_lora_trains_on_the_real_model(real_run: dict, real_model_dir: Path, tmp_path: Path) -> None:
    from test_train import train_argv

    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    argv = train_argv(real_model_dir, real_run["out"] / "filter", tmp_path / "lora", **TRAIN, use_peft=True,
                      lora_r=4, lora_alpha=8, lora_target_modules=["q_proj", "v_proj"])
    result = run_train(*parse_train_args(argv))
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "lora" / "config.json").is_file()  # merged: a model folder like a full run's
    assert result.metrics["train_loss"] > 0


def test_judge_compare_on_the_trained_real_judge(real_run: dict) -> None:
    from conj_train.inference.judge import Judge

    judge = Judge.from_pretrained(str(real_run["out"] / "train"), template="conj-en", max_new_tokens=24,
                                  dtype=DTYPE, threads=2, probability=False)
    v = judge.compare("What is the capital of France?", "Paris.", "I don't know.", both_orders=True)
    assert isinstance(v.raw, tuple) and len(v.raw) == 2 and all(t.startswith(PREFILL) for t in v.raw)
    assert v.better in (1, 2, None) and v.consistent in (True, False)


def _token_log_probs(model_dir: Path, dtype: str, text: str) -> list[float]:
    import torch

    from conj_train.engines.hf import HFEngine

    engine = HFEngine(str(model_dir), dtype=dtype, threads=2)
    ids = torch.tensor([engine.tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        logp = torch.log_softmax(engine.model(ids).logits.float(), -1)[0, :-1]
    return logp.gather(-1, ids[0, 1:, None])[:, 0].tolist()


def test_bf16_inference_matches_fp32(real_model_dir: Path) -> None:
    # Tolerance: mean per-token |log p(bf16) - log p(fp32)| < 0.1 nat and the sequence total within 1%
    # (measured on this model: 0.04 nat and 0.2%).
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(real_model_dir)
    msgs = [{"role": "user", "content": "Which answer is better? Answer 1: Paris is the capital of France. "
             "Answer 2: Lyon is the capital of France."}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + \
        PREFILL + ' "Answer 1 is right", "better_answer": 1}'
    fp32, bf16 = _token_log_probs(real_model_dir, "float32", text), _token_log_probs(real_model_dir, "bfloat16", text)
    diffs = [abs(a - b) for a, b in zip(fp32, bf16, strict=True)]
    assert 0 < sum(diffs) / len(diffs) < 0.1
    assert abs(sum(bf16) - sum(fp32)) < 0.01 * abs(sum(fp32))


def test_bf16_training_matches_fp32(real_run: dict, real_model_dir: Path, tmp_path: Path) -> None:
    # The pipeline's step ran under bf16 autocast (fp32 weights); the same step in fp32 logs the
    # policy's log-probs of the same batch before any update. Tolerance: 2% of the fp32 value.
    if not cpu_has_fast_bf16():
        pytest.skip("this CPU has no bf16 instructions: training stays in fp32")
    from test_train import train_argv

    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    notes = read_json(real_run["out"] / "train" / "report.json")["machine_notes"]
    assert any("bf16 mixed precision" in n for n in notes), notes
    run_train(*parse_train_args(train_argv(real_model_dir, real_run["out"] / "filter", tmp_path / "fp32",
                                           **TRAIN, bf16=False)))
    bf16, fp32 = (read_json(d / "trainer_state.json")["log_history"][0]
                  for d in (real_run["out"] / "train", tmp_path / "fp32"))
    for key in ("logps/chosen", "logps/rejected"):
        a, b = bf16[key], fp32[key]
        assert a != b and abs(a - b) <= 0.02 * abs(b), (key, a, b)
