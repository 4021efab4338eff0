"""Stage 3 on the tiny model, one process: the loss, learning, length filtering, resume, LoRA, reload.

``write_pairs`` builds the filter stage's output layout (``dataset/`` + ``report.json``) by hand; the
multi-process and reward-model tests import it from here.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conj_train.errors import ConjError
from conj_train.io import iter_jsonl, read_json

_FRUITS = ["apple", "banana", "cherry", "grape", "lemon", "mango", "orange", "peach", "pear", "plum"]
_OTHERS = ["horse", "tiger", "rabbit", "purple", "green", "yellow", "hammer", "shovel", "wrench", "spoon"]


def pair_rows(n: int, seed: int, *, long_prompt_every: int = 0, long_chosen_every: int = 0) -> list[dict]:
    """Deterministic judge pairs: the chosen judgment names the answer that is a fruit."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        good, bad, label = rng.choice(_FRUITS), rng.choice(_OTHERS), rng.choice([1, 2])
        a1, a2 = (good, bad) if label == 1 else (bad, good)
        pad = " The weather today is sunny." * 40 if long_prompt_every and i % long_prompt_every == 0 else ""
        prompt = f"Question: Name a fruit.{pad}\nAnswer 1: {a1}.\nAnswer 2: {a2}.\nWhich answer is better?"
        why = " It is complete and correct." * 20 if long_chosen_every and i % long_chosen_every == 1 else ""
        chosen = f'{{"reason": "Answer {label} is {good}.{why}", "better_answer": {label}}}'
        rejected = f'{{"reason": "Answer {3 - label} is {bad}.", "better_answer": {3 - label}}}'
        rows.append({
            "prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "pair_id": f"s{seed}-{i}", "pair_type": "best_of_n" if i % 4 else "preamble", "label": label,
            "chosen_judgment_id": f"s{seed}-{i}:c", "rejected_judgment_id": f"s{seed}-{i}:r",
        })
    return rows


def write_pairs(folder: Path, n_train: int = 32, n_val: int = 8, **kw: int) -> Path:
    """A filter-stage output folder: ``dataset/`` (train, validation) and a small ``report.json``."""
    from datasets import Dataset, DatasetDict, Features, List, Value

    msgs, text = List({"role": Value("string"), "content": Value("string")}), Value("string")
    features = Features({"prompt": msgs, "chosen": msgs, "rejected": msgs, "pair_id": text, "pair_type": text,
                         "label": Value("int64"), "chosen_judgment_id": text, "rejected_judgment_id": text})
    splits = {"train": pair_rows(n_train, 0, **kw), "validation": pair_rows(n_val, 1, **kw)}
    dd = DatasetDict({s: Dataset.from_dict({k: [r[k] for r in rows] for k in features}, features=features)
                      for s, rows in splits.items()})
    # An empty split needs one (empty) shard to load back (datasets 5.2), as the filter stage writes it.
    dd.save_to_disk(str(folder / "dataset"), num_shards={s: 1 for s, d in dd.items() if d.num_rows == 0})
    n = n_train + n_val
    report = {"input_pairs": n, "pairs_total": n, "pairs_by_type": {"best_of_n": n}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def train_argv(model: Path, data: Path, out: Path, **overrides: object) -> list[str]:
    """Recipe-like CLI arguments of a small fp32 CPU run; overrides as key=value."""
    base: dict[str, object] = {
        "model_name_or_path": model, "dataset_name": data, "output_dir": out,
        "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.1], "beta": 0.1,
        "learning_rate": 1e-3, "max_steps": 6, "per_device_train_batch_size": 4, "max_length": 256,
        "gradient_checkpointing": False, "logging_steps": 1, "save_steps": 3, "eval_strategy": "no",
        "report_to": "none", "seed": 7, "disable_tqdm": True,
    }
    base.update(overrides)
    argv: list[str] = []
    for k, v in base.items():
        argv.append(f"--{k}")
        argv.extend(str(x) for x in v) if isinstance(v, list) else argv.append(str(v))
    return argv


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: Path, b: Path, tol: float) -> None:
    """Every tensor of two saved models agrees to ``tol``."""
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].float() - wb[k].float()).abs().max()) for k in wa)
    assert worst < tol, worst


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One short run (eval at start and end, wandb requested without a key) shared by several tests."""
    import os

    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    tmp = tmp_path_factory.mktemp("trained")
    data = write_pairs(tmp / "filter")
    argv = train_argv(tiny_model_dir, data, tmp / "out", max_steps=16, logging_steps=4,
                      learning_rate=2e-3, eval_strategy="steps", eval_steps=8, eval_on_start=True,
                      report_to="wandb", card_license="apache-2.0")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WANDB_MODE", raising=False)
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("WANDB_DIR", "unset")  # recorded, so the context restores the original state
        mp.delenv("WANDB_DIR")
        result = run_train(*parse_train_args(argv))
        mode = os.environ.get("WANDB_MODE")
    return SimpleNamespace(result=result, out=tmp / "out", wandb_mode=mode)


def test_dpo_sft_loss_matches_independent_computation(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import build_trainer

    beta, alpha = 0.2, 0.3
    argv = train_argv(tiny_model_dir, write_pairs(tmp_path / "filter", 8, 0), tmp_path / "out",
                      beta=beta, loss_weights=[1.0, alpha])
    trainer, _, _ = build_trainer(*parse_train_args(argv))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the policy away from the reference so the DPO term is not log 2
        for p in trainer.model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    rows = [trainer.train_dataset[i] for i in range(4)]
    keys = ("prompt_ids", "chosen_ids", "rejected_ids")
    batch = trainer.data_collator([{k: r[k] for k in keys} for r in rows])
    trl_loss = trainer.compute_loss(trainer.model, batch).item()

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    def completion_logps(model: torch.nn.Module, prompt: list, answer: list) -> torch.Tensor:
        p_text = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full_text = tok.apply_chat_template(prompt + answer, tokenize=False)
        full = tok(full_text, add_special_tokens=False).input_ids
        n = len(tok(p_text, add_special_tokens=False).input_ids)
        with torch.no_grad():
            logp = F.log_softmax(model(torch.tensor([full])).logits[0, :-1].float(), dim=-1)
        return logp[torch.arange(n - 1, len(full) - 1), torch.tensor(full[n:])]  # per completion token

    dpo, nll = [], []
    for r in rows:
        pc, pr = (completion_logps(trainer.model, r["prompt"], r[s]) for s in ("chosen", "rejected"))
        rc, rr = (completion_logps(ref, r["prompt"], r[s]) for s in ("chosen", "rejected"))
        dpo.append(-F.logsigmoid(beta * ((pc.sum() - rc.sum()) - (pr.sum() - rr.sum()))))
        nll.append(-pc)
    expected = float(torch.stack(dpo).mean() + alpha * torch.cat(nll).mean())
    assert abs(trl_loss - expected) < 1e-5, (trl_loss, expected)
    assert abs(float(torch.stack(dpo).mean()) - 0.6931) > 1e-3  # the perturbation made the test meaningful


def test_short_run_lowers_loss_and_raises_reward_accuracy(trained: SimpleNamespace) -> None:
    evals = [r for r in iter_jsonl(trained.out / "metrics.jsonl") if "eval_loss" in r]
    first, last = evals[0], evals[-1]
    assert first["step"] == 0 and last["step"] == 16
    assert last["eval_loss"] < first["eval_loss"] - 0.05
    assert last["eval_rewards/accuracies"] > first["eval_rewards/accuracies"]
    assert last["eval_rewards/accuracies"] >= 0.75
    train_rows = [r for r in iter_jsonl(trained.out / "metrics.jsonl") if "loss" in r]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]


def test_run_writes_card_reports_curves_and_offline_wandb(trained: SimpleNamespace) -> None:
    out = trained.out
    report = read_json(out / "report.json")
    assert report["data"]["train"]["used"] == 32 and report["data"]["eval"]["used"] == 8
    assert report["filter_report"]["input_pairs"] == 40
    card = (out / "README.md").read_text()
    assert "sigmoid DPO (beta 0.1) + 0.1 x SFT" in card and "32 pairs used of 32 read" in card
    assert "eval_rewards/accuracies" in card and "input_pairs | 40" in card
    assert read_json(out / "manifest.json")["complete"] is True
    assert (out / "metrics.csv").read_text().startswith("step,epoch")
    assert (out / "training_curves.png").stat().st_size > 10_000
    assert trained.wandb_mode == "offline" and list((out / "_wandb").rglob("*.wandb"))
    saved = {p.name for p in out.iterdir()}
    assert {"chat_template.jinja", "generation_config.json", "tokenizer.json"} <= saved


def _usage_snippet(card_text: str) -> str:
    """The Python block of a model card's usage section."""
    return card_text.split("## Usage", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_card_metadata_loads_back_with_huggingface_hub(trained: SimpleNamespace) -> None:
    from huggingface_hub import ModelCard, ModelCardData

    card = ModelCard.load(trained.out / "README.md")
    data = card.data
    assert data.license == "apache-2.0" and data.language == ["zh"]  # the recipe's; conj-zh's language
    assert data.pipeline_tag == "text-generation" and data.library_name == "transformers"
    assert "con-j" in data.tags and data.base_model is None  # a local base model is no Hub id
    assert ModelCardData(**data.to_dict()).to_dict() == data.to_dict()
    assert "@misc{ye2024beyondscalarrewardmodel" in card.text and "eprint={2410.03742}" in card.text
    assert "Not evaluated yet" in card.text


def test_card_usage_snippet_runs_as_written(trained: SimpleNamespace, tmp_path: Path) -> None:
    import os

    code = _usage_snippet((trained.out / "README.md").read_text())
    assert repr(str(trained.out.resolve())) in code  # the snippet loads this very folder
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    better, probability = proc.stdout.splitlines()[:2]
    assert better in ("1", "2", "None")
    assert probability == "None" or 0.0 <= float(probability) <= 1.0


def _metrics(accuracy: float) -> dict:
    overall = {"accuracy": accuracy, "accuracy_avg": accuracy - 0.05, "consistency": 0.9, "pairs": 40}
    return {
        "datasets": {"hh": {"path": "Anthropic/hh-rlhf", "split": "test"},
                     "llmbar": {"path": "/data/llmbar", "split": None}},
        "models": {"conj": {"datasets": {
            "hh": {"overall": overall},
            "llmbar": {"overall": {**overall, "consistency": None},
                       "official": {"benchmark": "LLMBar", "headline": ["natural"], "natural": 0.625}},
        }}},
    }


def test_eval_results_enter_the_card_as_model_index(trained: SimpleNamespace, tmp_path: Path) -> None:
    import shutil

    from huggingface_hub import ModelCard

    from conj_train.train.card import add_eval_results

    model, first, second = tmp_path / "judge", tmp_path / "eval1", tmp_path / "eval2"
    for d in (model, first, second):
        d.mkdir()
    shutil.copy(trained.out / "README.md", model / "README.md")
    (first / "metrics.json").write_text(json.dumps(_metrics(0.75)))
    add_eval_results(model, first, "conj")
    card = ModelCard.load(model / "README.md")
    got = [(r.dataset_name, r.dataset_type, r.dataset_split, r.metric_name, r.metric_value)
           for r in card.data.eval_results]
    assert got == [
        ("hh", "Anthropic/hh-rlhf", "test", "Accuracy (one random order)", 0.75),
        ("hh", "Anthropic/hh-rlhf", "test", "Accuracy (mean of both orders)", 0.7),
        ("hh", "Anthropic/hh-rlhf", "test", "Consistency across orders", 0.9),
        ("llmbar", "llmbar", None, "Accuracy (one random order)", 0.75),  # a local path: its name
        ("llmbar", "llmbar", None, "Accuracy (mean of both orders)", 0.7),
        ("llmbar", "llmbar", None, "LLMBar natural (official)", 0.625),
    ]
    assert "model-index:" in (model / "README.md").read_text()
    assert "| hh | test | Accuracy (one random order) | 75.00 |" in card.text
    assert "Not evaluated yet" not in card.text and card.text.count("## Evaluation") == 1
    assert "|\n\n## Training" in card.text  # the table ends before the next section
    assert "## Training" in card.text and "32 pairs used of 32 read" in card.text  # the rest is kept

    # A later evaluation of one data set replaces that data set's entries and keeps the others.
    metrics = _metrics(0.5)
    del metrics["models"]["conj"]["datasets"]["llmbar"]
    (second / "metrics.json").write_text(json.dumps(metrics))
    add_eval_results(model, second, "conj")
    results = ModelCard.load(model / "README.md").data.eval_results
    assert [(r.dataset_name, r.metric_value) for r in results if "one random" in r.metric_name] == [
        ("llmbar", 0.75), ("hh", 0.5)]
    with pytest.raises(ConjError, match="no model 'other'"):
        add_eval_results(model, second, "other")


def test_conj_card_finds_the_model_by_its_path(trained: SimpleNamespace, tmp_path: Path, capsys) -> None:
    import shutil

    from huggingface_hub import ModelCard

    from conj_train.cli import main as conj_main

    model, run = tmp_path / "judge", tmp_path / "eval"
    model.mkdir()
    run.mkdir()
    shutil.copy(trained.out / "README.md", model / "README.md")
    metrics = _metrics(0.8)
    metrics["models"] = {"base": {"path": "/elsewhere", "datasets": {}},
                         "mine": {**metrics["models"]["conj"], "path": str(model)}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert conj_main(["card", str(model), "--eval", str(run)]) == 0
    assert "6 evaluation results (mine)" in capsys.readouterr().out
    assert ModelCard.load(model / "README.md").data.eval_results[0].metric_value == 0.8
    assert conj_main(["card", str(tmp_path), "--eval", str(run)]) != 0  # no model of that path


def test_card_metadata_names_the_source_and_pushed_pairs(tmp_path: Path) -> None:
    from conj_train.train.card import card_data, judge_setup, usage_snippet

    sample, filt = tmp_path / "sample", tmp_path / "filter"
    sample.mkdir()
    filt.mkdir()
    (sample / "manifest.json").write_text(json.dumps({"config": {
        "template": "conj-en", "system_prompt": "Be fair.", "dataset_name": "Anthropic/hh-rlhf"}}))
    (filt / "manifest.json").write_text(json.dumps({
        "config": {"push_to_hub": True, "hub_repo_id": "someone/pairs"}, "input": {"sample_dir": str(sample)}}))
    setup = judge_setup(str(filt))
    assert setup == {"template": "conj-en", "system_prompt": "Be fair.", "source": "Anthropic/hh-rlhf",
                     "pairs_repo": "someone/pairs"}
    card = {"kind": "judge", "base_model": "Qwen/Qwen2-7B-Instruct", "setup": setup, "model_id": "me/judge",
            "license": None, "language": ["en"]}
    data = card_data(card)
    assert data.datasets == ["someone/pairs", "Anthropic/hh-rlhf"] and data.base_model == "Qwen/Qwen2-7B-Instruct"
    code = usage_snippet(card)
    assert "Judge.from_pretrained('me/judge', template='conj-en', system_prompt='Be fair.')" in code


def test_saved_judge_reloads_in_a_fresh_process_and_generates(trained: SimpleNamespace) -> None:
    code = (
        "import json, sys\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "ids = tok.apply_chat_template([{'role': 'user', 'content': 'Answer 1: apple. Answer 2: horse.'}],\n"
        "    add_generation_prompt=True, return_tensors='pt', return_dict=True)['input_ids']\n"
        "out = m.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)\n"
        "print(json.dumps({'new': out.shape[1] - ids.shape[1], 'eos': m.generation_config.eos_token_id,\n"
        "                  'template': '<|im_start|>' in (tok.chat_template or '')}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(trained.out)], capture_output=True, text=True,
                          timeout=120, check=True)
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info == {"new": 6, "eos": 2, "template": True}


def test_overlong_pairs_are_dropped_with_counted_reasons(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import build_trainer

    data = write_pairs(tmp_path / "filter", 12, 0, long_prompt_every=4, long_chosen_every=4)
    argv = train_argv(tiny_model_dir, data, tmp_path / "out", max_length=160, pair_types=["best_of_n"])
    trainer, counts, _ = build_trainer(*parse_train_args(argv))
    c = counts["train"]
    # rows 0, 4, 8 are preamble pairs (not selected); rows 1, 5, 9 have a long chosen judgment.
    assert c.read == 12 and c.not_selected == 3
    assert c.dropped == {"prompt_too_long": 0, "chosen_too_long": 3, "rejected_too_long": 0}
    assert c.used == 6 and len(trainer.train_dataset) == 6  # TRL drops nothing further
    assert all(len(r["prompt_ids"]) + len(r["chosen_ids"]) <= 160 for r in trainer.train_dataset)

    argv = train_argv(tiny_model_dir, data, tmp_path / "out2", max_length=160, overlong="truncate")
    _, counts, _ = build_trainer(*parse_train_args(argv))
    c = counts["train"]
    assert c.dropped["prompt_too_long"] == 3 and c.dropped["chosen_too_long"] == 0
    assert c.truncated == 3 and c.used == 9


def test_resume_after_stop_equals_an_uninterrupted_run(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if state.global_step == 3:
                control.should_training_stop = True

    data = write_pairs(tmp_path / "filter", 24, 0)
    run_train(*parse_train_args(train_argv(tiny_model_dir, data, tmp_path / "full")))
    run_train(*parse_train_args(train_argv(tiny_model_dir, data, tmp_path / "cut")), callbacks=[StopAt()])
    assert (tmp_path / "cut" / "checkpoint-3").is_dir() and not (tmp_path / "cut" / "checkpoint-6").exists()
    result = run_train(*parse_train_args(train_argv(tiny_model_dir, data, tmp_path / "cut")))
    assert result.resumed_from is not None and result.resumed_from.endswith("checkpoint-3")
    assert_same_weights(tmp_path / "full", tmp_path / "cut", 1e-5)
    steps = [r["step"] for r in iter_jsonl(tmp_path / "cut" / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_lora_trains_and_saves_an_adapter_that_reloads(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    out = tmp_path / "lora"
    argv = train_argv(tiny_model_dir, write_pairs(tmp_path / "filter", 16, 0), out, use_peft=True,
                      lora_r=8, lora_alpha=16, lora_target_modules=["q_proj", "v_proj"],
                      learning_rate=5e-3, max_steps=4)
    result = run_train(*parse_train_args(argv))
    # The run folder is a full model (what evaluation and sampling load); the adapter sits in adapter/.
    assert (out / "adapter" / "adapter_config.json").is_file() and not (out / "adapter_config.json").exists()
    assert AutoConfig.from_pretrained(out).model_type == "qwen2"
    assert result.metrics["train_loss"] > 0
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        before = base(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out)(ids).logits
        judge = PeftModel.from_pretrained(base, str(out / "adapter"))
        after = judge(ids).logits
        with judge.disable_adapter():  # the reference TRL used: the adapter-disabled base
            assert torch.allclose(judge(ids).logits, before)
    assert float((after - before).abs().max()) > 1e-4  # the trained adapter changes the model
    assert torch.allclose(merged, after, atol=1e-5)  # the merged folder = base + adapter


def test_machine_adaptation_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import deepspeed.comm.torch  # noqa: F401

    import conj_train.train.machine as machine
    from conj_train.train.machine import adapt_to_machine, set_up_machine

    def args(**kw: object) -> SimpleNamespace:
        base = {"bf16": None, "fp16": False, "deepspeed": None, "use_cpu": False, "ddp_backend": None,
                "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "global_batch_size": 24}
        return SimpleNamespace(**{**base, **kw})

    monkeypatch.setenv("WORLD_SIZE", "3")
    build_shm_op = sys.modules["deepspeed.comm.torch"].build_shm_op
    monkeypatch.setattr(sys.modules["deepspeed.comm.torch"], "build_shm_op", build_shm_op)
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    a = args()
    adapt_to_machine(a)
    assert (a.gradient_accumulation_steps, a.bf16, a.use_cpu, a.ddp_backend) == (4, False, False, "gloo")
    assert sys.modules["deepspeed.comm.torch"].build_shm_op is build_shm_op  # values only, no patching
    set_up_machine([])  # the entry points' process set-up: DeepSpeed's shm op build is skipped
    assert sys.modules["deepspeed.comm.torch"].build_shm_op() is None
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    a = args(global_batch_size=None)
    adapt_to_machine(a)
    assert (a.gradient_accumulation_steps, a.use_cpu) == (1, True)
    with pytest.raises(ConjError, match="must be a multiple"):
        adapt_to_machine(args(global_batch_size=25))
    # bf16 on CPU: kept (autocast) only when asked and the processor has bf16 instructions.
    for fast, asked, kept in ((True, True, True), (True, None, False), (False, True, False)):
        monkeypatch.setattr(machine, "cpu_has_fast_bf16", lambda fast=fast: fast)
        a = args(global_batch_size=None, bf16=asked)
        notes = adapt_to_machine(a)
        assert a.bf16 is kept and any(("bf16 mixed" if kept else "fp32") in n for n in notes)


def test_deepspeed_is_read_from_the_command_line_or_the_recipe(tmp_path: Path) -> None:
    from conj_train.train.machine import asks_for_deepspeed

    recipe = tmp_path / "r.yaml"
    recipe.write_text("deepspeed: ds.json\nlearning_rate: 1.0e-3\n")
    assert asks_for_deepspeed(["--config", str(recipe)])
    assert asks_for_deepspeed(["--deepspeed=ds.json"]) and asks_for_deepspeed(["--deepspeed", "ds.json"])
    recipe.write_text("learning_rate: 1.0e-3\n")
    assert not asks_for_deepspeed(["--config", str(recipe)])
    assert not asks_for_deepspeed(["--config", str(tmp_path / "missing.yaml")])


def test_bad_inputs_are_user_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import build_trainer

    with pytest.raises(ConjError, match="neither a filter output folder"):
        build_trainer(*parse_train_args(train_argv(tiny_model_dir, tmp_path, tmp_path / "o")))
    with pytest.raises(ConjError, match="overlong"):
        parse_train_args(train_argv(tiny_model_dir, tmp_path, tmp_path / "o", overlong="cut"))
    with pytest.raises(ConjError, match="recipe not found"):
        parse_train_args(["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConjError, match="not_a_key"):
        parse_train_args([*train_argv(tiny_model_dir, tmp_path, tmp_path / "o"), "--not_a_key", "1"])


def test_unknown_training_keys_name_the_closest_key(tmp_path: Path) -> None:
    """As in every other stage: a typo is a one-line error with a hint, from a recipe, a mapping or argv."""
    from conj_train.train.args import parse_train_args
    from conj_train.train.reward import parse_reward_args

    recipe = tmp_path / "train.yaml"
    recipe.write_text(f"output_dir: {tmp_path / 'o'}\nlearning_rat: 1.0e-3\n")
    with pytest.raises(ConjError, match=r"unknown key 'learning_rat' in .*train.yaml \(did you mean 'learning_rate'\?\)"):
        parse_train_args(["--config", str(recipe)])
    with pytest.raises(ConjError, match=r"'learning_rat' in command-line options \(did you mean 'learning_rate'"):
        parse_train_args(["--output_dir", str(tmp_path / "o"), "--learning_rat", "1e-3"])  # no abbreviation
    with pytest.raises(ConjError, match=r"'pair_type' in recipe values \(did you mean 'pair_types'"):
        parse_train_args(values={"output_dir": str(tmp_path / "o"), "pair_type": ["best_of_n"]})
    with pytest.raises(ConjError, match=r"'pairs_frm' in recipe values \(did you mean 'pairs_from'"):
        parse_reward_args(values={"output_dir": str(tmp_path / "o"), "pairs_frm": "x"})


def test_training_arguments_from_a_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``values`` carry what argv cannot (mappings, lists); argv overrides them; sys.argv is not read."""
    from conj_train.train.args import parse_train_args

    monkeypatch.setattr(sys, "argv", ["conj", "run", "--config", "pipeline.yaml"])
    values = {"output_dir": str(tmp_path / "o"), "loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.1],
              "model_init_kwargs": {"attn_implementation": "eager"}, "pair_types": ["best_of_n"],
              "learning_rate": 1e-3, "report_to": "none"}
    script, training, _ = parse_train_args(values=values)
    assert training.model_init_kwargs == {"attn_implementation": "eager"}
    assert training.loss_type == ["sigmoid", "sft"] and script.pair_types == ["best_of_n"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text("beta: 0.3\nlearning_rate: 5.0e-3\n")
    _, training, _ = parse_train_args(["--config", str(recipe), "--learning_rate", "2e-3"], values=values)
    assert (training.beta, training.learning_rate) == (0.3, 2e-3)  # recipe < values < argv


def test_secrets_are_redacted_from_saved_configs() -> None:
    from conj_train.train.tracking import redact

    out = redact({"hub_token": "hf_abc", "pad_token": "<|endoftext|>", "wandb_api_key": "k", "lr": 1.0,
                  "hub_model_id": None})
    assert out == {"hub_token": "<redacted>", "pad_token": "<|endoftext|>", "wandb_api_key": "<redacted>",
                   "lr": 1.0, "hub_model_id": None}


def test_cli_reports_a_missing_recipe_in_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from conj_train.cli import main

    assert main(["train", "--config", str(tmp_path / "nope.yaml"), "--max_steps", "1"]) == 2
    assert main(["train-rm", "--config", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"conj train: error: recipe not found: {tmp_path / 'nope.yaml'}",
                   f"conj train-rm: error: recipe not found: {tmp_path / 'nope.yaml'}"]


def test_balanced_order_interleaves_labels_and_depends_only_on_seed() -> None:
    from conj_train.train.batches import LabelBalancedSampler, balanced_order

    labels = [1] * 7 + [2] * 4
    order = balanced_order(labels, seed=3)
    assert sorted(order) == list(range(11))
    assert [labels[i] for i in order[:8]] == [1, 2] * 4
    assert order == balanced_order(labels, seed=3) and order != balanced_order(labels, seed=4)
    sampler = LabelBalancedSampler(labels, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) == balanced_order(labels, seed=4)
    with pytest.raises(ConjError, match="1 or 2"):
        LabelBalancedSampler([1, 0], seed=0)


def test_balanced_batches_alternate_the_chosen_verdict(tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import build_trainer
    from conj_train.verdicts import parse_verdict

    data = write_pairs(tmp_path / "filter", n_train=24)
    args = parse_train_args(train_argv(tiny_model_dir, data, tmp_path / "out", balanced_batches=True))
    trainer, _, _ = build_trainer(*args)
    tok = trainer.processing_class
    verdicts = []
    for batch in trainer.get_train_dataloader():
        half = len(batch["input_ids"]) // 2  # TRL stacks the chosen rows, then the rejected rows
        for row, m in zip(batch["input_ids"][:half], batch["completion_mask"][:half], strict=True):
            verdicts.append(parse_verdict(tok.decode(row[m.bool()])).verdict)
    labels = [r["label"] for r in pair_rows(24, 0)]
    k = min(labels.count(1), labels.count(2))
    assert 0 < k < 12  # the data is unbalanced: the surplus comes last
    majority = 1 if labels.count(1) > k else 2
    assert verdicts == [1, 2] * k + [majority] * (24 - 2 * k)


def test_a_folder_keeps_one_config_and_refuses_a_launch_that_cannot_resume(tiny_model_dir: Path,
                                                                           tmp_path: Path) -> None:
    from transformers import TrainerCallback

    from conj_train.io import atomic_write_json
    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            control.should_training_stop = state.global_step == 3

    data, out = write_pairs(tmp_path / "filter", 16, 0), tmp_path / "t"
    run_train(*parse_train_args(train_argv(tiny_model_dir, data, out)), callbacks=[StopAt()])
    claim = read_json(out / "run.json")
    assert (out / "checkpoint-3").is_dir() and claim["launch"] == {"world_size": 1, "deepspeed": False}
    # Another config would resume checkpoint-3 and record itself: refused.
    with pytest.raises(ConjError, match="different config"):
        run_train(*parse_train_args(train_argv(tiny_model_dir, data, out, learning_rate=5e-3)))
    # A ZeRO-3 launch cannot load a single-process checkpoint: one line saying what to do.
    atomic_write_json(out / "run.json", {**claim, "launch": {"world_size": 2, "deepspeed": True}})
    with pytest.raises(ConjError, match=r"cannot load it\. Resume with the first launch"):
        run_train(*parse_train_args(train_argv(tiny_model_dir, data, out)))
    atomic_write_json(out / "run.json", claim)
    # A runtime-only change (logging) resumes.
    resumed = run_train(*parse_train_args(train_argv(tiny_model_dir, data, out, logging_steps=2)))
    assert resumed.resumed_from is not None and resumed.resumed_from.endswith("checkpoint-3")
    # --overwrite true starts over with the new config.
    fresh = run_train(*parse_train_args(train_argv(tiny_model_dir, data, out, learning_rate=5e-3,
                                                   overwrite=True, max_steps=2)))
    assert fresh.resumed_from is None and not (out / "checkpoint-3").exists()
    assert read_json(out / "run.json")["config_hash"] != claim["config_hash"]


def test_a_hub_token_is_never_saved(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import torch

    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    secret = "hf_" + "x" * 30
    monkeypatch.delenv("HF_TOKEN", raising=False)
    argv = train_argv(tiny_model_dir, write_pairs(tmp_path / "filter", 8, 0), tmp_path / "t", max_steps=1,
                      save_steps=1, hub_token=secret)
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])  # what wandb would record
    parsed = parse_train_args(argv)
    assert secret not in " ".join(sys.argv)
    run_train(*parsed)
    assert os.environ.pop("HF_TOKEN") == secret  # where pushing reads it
    for path in [tmp_path / "t" / "training_args.bin", tmp_path / "t" / "checkpoint-1" / "training_args.bin"]:
        args = torch.load(path, weights_only=False)
        assert args.hub_token is None
        assert secret.encode() not in path.read_bytes()
    for f in (tmp_path / "t").rglob("*"):
        if f.is_file() and f.suffix in (".json", ".yaml", ".md", ".jsonl", ".csv"):
            assert secret not in f.read_text(errors="replace"), f


def test_saved_judge_decodes_like_conj_eval_when_served(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A base model that samples by default (Qwen2 instruct's generation config) gives a judge folder
    whose generation config is conj eval's greedy decoding, which vllm serve takes as its default."""
    import dataclasses
    import shutil

    from transformers import GenerationConfig

    from conj_train.evaluate.config import EvalConfig
    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train
    from conj_train.train.lifecycle import EVAL_DECODING

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    sampling = {**read_json(base / "generation_config.json"), "do_sample": True, "temperature": 0.7,
                "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    (base / "generation_config.json").write_text(json.dumps(sampling))
    out = tmp_path / "judge"
    run_train(*parse_train_args(train_argv(base, write_pairs(tmp_path / "filter", 8, 0), out, max_steps=1)))
    saved = read_json(out / "generation_config.json")
    assert {k: saved.get(k) for k in ("do_sample", "temperature", "top_p", "top_k", "repetition_penalty")} == {
        "do_sample": False, "temperature": 0.0, "top_p": None, "top_k": None, "repetition_penalty": None}
    assert saved["eos_token_id"] == sampling["eos_token_id"]
    # The same decoding as conj eval's defaults, and transformers still loads it.
    defaults = {f.name: f.default for f in dataclasses.fields(EvalConfig)}
    assert defaults["decoding"] == "greedy" and defaults["repetition_penalty"] == 1.0
    assert EVAL_DECODING["max_new_tokens"] == defaults["max_new_tokens"]
    assert GenerationConfig.from_pretrained(out).do_sample is False
