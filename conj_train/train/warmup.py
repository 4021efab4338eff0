"""Format warm-up: a short SFT that teaches a base model the judge's JSON format, not the task.

Con-J starts from an instruct model that already writes parseable judgments and is no better than
chance at the task; contrastive training then moves its verdicts. A small random model (the embedded
demo's) writes no JSON at all, so sampling it yields nothing the filter can pair. This stage stands
in for the instruct model: supervised fine-tuning (TRL's ``SFTTrainer``, conversational
prompt/completion rows, loss on the completion only) on the judge prompts of a preference source,
with targets that carry

* a fixed, low-entropy rationale, e.g. ``' {"原因": "回答2更好。", "更好的回答": 2}'``. Prototypes on the
  tiny model found that rationales copying words from the answers were not learned at that size and
  only added noise to the DPO signal, while a near-constant one left the verdict as the one choice;
* a verdict drawn from a hash of (``verdict_seed``, pair id), independent of the label, so the warmed
  judge parses reliably while its verdicts stay at chance.

Targets start with the template's evaluation prefill (``' {"原因":'``), so sampling (no prefill) and
evaluation (prefilled) see the same tokens.

Output folder: the model, its tokenizer (with the chat template) and generation config, and
``manifest.json`` (config, config hash, input, counts, loss, versions), written last. A rerun with
the same config and input is a no-op; a different one is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conj_train.config import (
    INPUT_OLD_NAMES,
    JudgePromptOptions,
    PreferenceReadOptions,
    config_to_dict,
    settings_hash,
)
from conj_train.errors import ConjError
from conj_train.ids import id_slot
from conj_train.io import atomic_write_json, file_hash, library_versions
from conj_train.runs import check_output_dir, check_separate, finished_output, folder_lock, remove_layout

# The fixed rationale per template language; "{verdict}" is replaced by the drawn slot.
DEFAULT_RATIONALES = {"zh": "回答{verdict}更好。", "en": "Answer {verdict} is better."}
# Fields that do not change the warmed model: left out of the config hash.
_RUNTIME_FIELDS = {"output_dir", "overwrite", "threads", "logging_steps"}
_STARTED = ".warmup-started"
_LOCKS = "_locks"  # the warm-up's lock (a model folder: "_"-prefixed, as training's)


@dataclass
class WarmupConfig(PreferenceReadOptions, JudgePromptOptions):
    """Configuration of the format warm-up (data, targets, and TRL SFT optimisation settings).

    Reads pairs and renders judge prompts with the parts sampling and evaluation share
    (:class:`~conj_train.config.PreferenceReadOptions`, :class:`~conj_train.config.JudgePromptOptions`).
    """

    model_name_or_path: str = field(default="", metadata={"help": "The model to warm up (required)."})
    dataset_name: str = field(default="", metadata={
        "help": "The preference source whose questions it learns the format on (required)."})
    output_dir: str = field(default="", metadata={
        "help": "The folder of the warmed model (required; not hashed)."})
    # Targets.
    rationale: str | None = field(default=None, metadata={
        "help": "The fixed rationale of every target, with '{verdict}'; null: a short one in the "
                "template's language."})
    verdict_seed: int = field(default=0, metadata={
        "help": "Seed of the target verdicts (a hash of seed and pair id, independent of the label)."})
    # Optimisation (TRL SFTConfig fields).
    learning_rate: float = field(default=3e-3, metadata={"help": "SFT learning rate (> 0)."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "SFT epochs (used when max_steps <= 0)."})
    max_steps: int = field(default=-1, metadata={"help": "SFT optimizer steps; -1: num_train_epochs decides."})
    per_device_train_batch_size: int = field(default=16, metadata={
        "help": "Rows per step and device (>= 1)."})
    lr_scheduler_type: str = field(default="cosine", metadata={
        "help": "Learning-rate schedule (transformers' names)."})
    warmup_steps: float = field(default=0.0, metadata={"help": "Learning-rate warm-up (TRL's warmup_steps)."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay (>= 0)."})
    max_length: int = field(default=1024, metadata={
        "help": "Tokens per row (>= 1); TRL keeps the start of longer rows, and a row left without its "
                "target is dropped."})
    seed: int = field(default=42, metadata={"help": "Training seed."})
    # Runtime only.
    logging_steps: int = field(default=10, metadata={
        "help": "Log the loss every this many steps (not hashed)."})
    threads: int | None = field(default=None, metadata={
        "help": "CPU threads torch uses; null: torch's default (not hashed)."})
    overwrite: bool = field(default=False, metadata={
        "help": "Replace an earlier warm-up of another config or input in output_dir, instead of refusing."})

    def validate(self) -> None:
        """Check values before anything is loaded."""
        for name in ("model_name_or_path", "dataset_name", "output_dir"):
            if not getattr(self, name):
                raise ConjError(f"warmup: '{name}' is required")
        if self.rationale is not None and "{verdict}" not in self.rationale:
            raise ConjError("warmup: rationale must contain '{verdict}' (the slot it names)")
        if self.learning_rate <= 0 or self.per_device_train_batch_size < 1:
            raise ConjError("warmup: learning_rate must be > 0 and per_device_train_batch_size >= 1")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ConjError("warmup: set num_train_epochs > 0 or max_steps > 0")

    def output_hash(self) -> str:
        """Hash of every setting that changes the warmed model."""
        return settings_hash(self, exclude=_RUNTIME_FIELDS, old_names=INPUT_OLD_NAMES)


@dataclass
class WarmupResult:
    """What a warm-up run did; ``skipped`` when an identical earlier run made it a no-op."""

    output_dir: Path
    counts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    summary: str = ""


def random_verdict(pair_id: str, seed: int) -> int:
    """The target verdict of one pair: 1 or 2 from SHA-256 of (seed, pair id), blind to the label."""
    return id_slot("warmup", seed, pair_id)


def target_text(verdict: int, *, template: Any = "conj-zh", rationale: str | None = None) -> str:
    """The judgment the warm-up teaches: the template's eval prefill, a fixed rationale, the verdict."""
    from conj_train.prompts.templates import get_template

    tpl = get_template(template)
    why = (rationale or DEFAULT_RATIONALES[tpl.language.code]).replace("{verdict}", str(verdict))
    body = json.dumps(why, ensure_ascii=False) + ', "' + tpl.verdict_key + '": ' + str(verdict) + "}"
    return tpl.eval_prefill + " " + body


def warmup_rows(cfg: WarmupConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Conversational prompt/completion rows for TRL's SFTTrainer, and their counts."""
    from conj_train.data import load_preferences
    from conj_train.prompts.build import build_judge_prompts, label_balance
    from conj_train.prompts.chat import chat_messages
    from conj_train.prompts.templates import get_template

    res = load_preferences(cfg.dataset_name, format=cfg.dataset_format, field_map=cfg.field_map,
                           multi_turn=cfg.multi_turn)
    records = res.records[: cfg.max_pairs] if cfg.max_pairs else res.records
    if not records:
        raise ConjError(f"warmup: {cfg.dataset_name} has no usable preference pairs")
    tpl = get_template(cfg.template)
    items = build_judge_prompts(records, template=tpl, seed=cfg.swap_seed)
    rows, agree, ones = [], 0, 0
    for it in items:
        verdict = random_verdict(it["pair_id"], cfg.verdict_seed)
        agree += verdict == it["label"]
        ones += verdict == 1
        prompt = chat_messages(it["prompt"], system=cfg.system_prompt)
        text = target_text(verdict, template=tpl, rationale=cfg.rationale)
        rows.append({"prompt": prompt, "completion": [{"role": "assistant", "content": text}]})
    counts = {"examples": len(rows), "ingest": res.report.to_dict(), "label_balance": label_balance(items),
              "target_verdict_1": ones, "target_agrees_with_label": agree}
    return rows, counts


def _input_info(cfg: WarmupConfig) -> dict[str, Any]:
    info: dict[str, Any] = {"model": cfg.model_name_or_path, "dataset": cfg.dataset_name}
    if Path(cfg.dataset_name).is_file():
        info["dataset_hash"] = file_hash(cfg.dataset_name)
    weights = Path(cfg.model_name_or_path) / "model.safetensors"
    if weights.is_file():
        info["model_hash"] = file_hash(weights)
    return info


def _check_output(out: Path, cfg: WarmupConfig, config_hash: str, inputs: dict[str, Any]) -> dict | None:
    """The earlier manifest if this exact run is done; refuse to replace a different one unless overwrite."""
    done = finished_output(out, config_hash=config_hash, same_input=lambda old: old == inputs,
                           overwrite=cfg.overwrite, what="a warm-up")
    if done is not None:
        return done
    foreign = not (out / "manifest.json").is_file() and out.is_dir() and any(c.name != _LOCKS for c in out.iterdir())
    if foreign and not (out / _STARTED).exists() and not cfg.overwrite:
        raise ConjError(f"{out} exists and is not a warm-up output; choose a new output_dir")
    return None


def _summary(result: WarmupResult) -> str:
    c, m = result.counts, result.metrics
    head = "warm-up already done (same config and input)" if result.skipped else "warm-up done"
    loss = f"; mean train loss {m['train_loss']:.4f}" if "train_loss" in m else ""
    return (f"{head}: {c.get('examples', 0)} judge prompts, target verdict 1 on "
            f"{c.get('target_verdict_1', 0)}, agreeing with the label on "
            f"{c.get('target_agrees_with_label', 0)}{loss} -> {result.output_dir}")


def run_warmup(cfg: WarmupConfig) -> WarmupResult:
    """Fine-tune ``cfg.model_name_or_path`` on format-only judgments and save it to ``cfg.output_dir``."""
    cfg.validate()
    out = check_output_dir(cfg.output_dir)
    check_separate(out, [cfg.dataset_name, cfg.model_name_or_path])
    with folder_lock(out, "warmup", folder=_LOCKS, what="a warm-up"):  # one warm-up writes here at a time
        return _warmup(cfg, out)


def _warmup(cfg: WarmupConfig, out: Path) -> WarmupResult:
    config_hash, inputs = cfg.output_hash(), _input_info(cfg)
    done = _check_output(out, cfg, config_hash, inputs)
    if done is not None:
        result = WarmupResult(out, done.get("counts", {}), done.get("metrics", {}), skipped=True)
        result.summary = _summary(result)
        return result
    start = time.time()
    rows, counts = warmup_rows(cfg)
    metrics = _train(cfg, rows, out)
    metrics["seconds"] = round(time.time() - start, 1)
    atomic_write_json(out / "manifest.json", {
        "stage": "warmup", "config": config_to_dict(cfg), "config_hash": config_hash, "input": inputs,
        "counts": counts, "metrics": metrics, "versions": library_versions(), "complete": True})
    (out / _STARTED).unlink()
    result = WarmupResult(out, counts, metrics)
    result.summary = _summary(result)
    return result


def _train(cfg: WarmupConfig, rows: list[dict[str, Any]], out: Path) -> dict[str, float]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from conj_train.tokens import load_tokenizer
    from conj_train.train.run_dir import TRAIN_LAYOUT

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # A different or unfinished warm-up (refused above unless overwrite): only what a warm-up writes.
    remove_layout(out, (*TRAIN_LAYOUT, _STARTED))
    out.mkdir(parents=True, exist_ok=True)
    (out / _STARTED).touch()  # lets a rerun replace what a killed run left
    tokenizer = load_tokenizer(cfg.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(cfg.model_name_or_path, dtype=torch.bfloat16 if cuda else torch.float32)
    args = SFTConfig(
        output_dir=str(out), learning_rate=cfg.learning_rate, num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps, per_device_train_batch_size=cfg.per_device_train_batch_size,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay, max_length=cfg.max_length, seed=cfg.seed,
        completion_only_loss=True, gradient_checkpointing=False, save_strategy="no", report_to="none",
        logging_steps=cfg.logging_steps, disable_tqdm=True, use_cpu=not cuda, bf16=cuda,
    )
    from conj_train.prompts.chat import plain_messages

    # The judge prompts are data: their special-token strings tokenize as text (chat.plain_text).
    rows = [{**r, "prompt": plain_messages(tokenizer, r["prompt"])} for r in rows]
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer)
    train_result = trainer.train()
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))  # keeps the chat template next to the weights
    losses = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    metrics = {k: float(v) for k, v in train_result.metrics.items() if isinstance(v, (int, float))}
    if losses:
        metrics["last_logged_loss"] = float(losses[-1])
    metrics["steps"] = float(trainer.state.global_step)
    return metrics
