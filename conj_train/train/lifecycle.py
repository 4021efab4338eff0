"""The run around a trainer, shared by the judge and the scalar reward model: set-up, train (resuming
if asked), evaluate, save, and the reports.

Output folder, besides the checkpoints (:mod:`conj_train.train.run_dir`): the final model (weights or
LoRA adapter, tokenizer with chat template, generation config: a judge's set to the evaluation
decoding, :func:`set_eval_decoding`), ``README.md`` (model card),
``report.json`` (data counts, metrics), ``manifest.json`` (config, input, versions; written last),
``recipe.yaml`` (the resolved arguments), ``metrics.jsonl``/``.csv`` and ``training_curves.png``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conj_train.io import atomic_write_json, atomic_write_text, library_versions
from conj_train.runs import check_output_dir, check_separate
from conj_train.train.args import resolved_config
from conj_train.train.card import card_info, filter_summary
from conj_train.train.pair_data import SplitCounts
from conj_train.train.tracking import setup_wandb

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run produced."""

    output_dir: Path
    metrics: dict[str, float]
    counts: dict[str, SplitCounts]
    resumed_from: str | None = None
    notes: list[str] = field(default_factory=list)
    kind: str = "judge"  # or "reward"

    @property
    def summary(self) -> str:
        """One human line per split and the final metrics."""
        what = "judge" if self.kind == "judge" else "reward model"
        lines = [f"{what} saved to {self.output_dir}" + (f" (resumed from {self.resumed_from})"
                                                         if self.resumed_from else "")]
        for split, c in self.counts.items():
            dropped = ", ".join(f"{k} {v}" for k, v in c.dropped.items() if v) or "none"
            lines.append(f"  {split}: {c.used} of {c.read} pairs used (dropped: {dropped}; "
                         f"truncated {c.truncated})")
        keys = ("train_loss", "eval_loss", "eval_rewards/accuracies", "eval_rewards/margins", "eval_accuracy",
                "eval_margin")
        shown = {k: round(self.metrics[k], 4) for k in keys if k in self.metrics}
        if shown:
            lines.append(f"  metrics: {shown}")
        return "\n".join(lines)


def _last_logged(history: list[dict[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in history:
        out.update({k: row[k] for k in keys if isinstance(row.get(k), (int, float))})
    return out


def begin_run(training_args: Any, inputs: Sequence[str | None] = ()) -> dict[str, Any]:
    """Output folder check, logging, seed and wandb set-up shared by both trainers; returns what
    save_run reports. An output that is, lies inside or contains one of ``inputs`` (the pairs, the
    base model) is refused before anything is written."""
    from transformers import set_seed

    check_output_dir(training_args.output_dir)
    check_separate(training_args.output_dir, inputs)
    _setup_logging(training_args)
    set_seed(training_args.seed)
    wandb_mode = setup_wandb(training_args.report_to, Path(training_args.output_dir) / "_wandb")
    return {"t0": time.time(), "wandb": wandb_mode}


def train_and_evaluate(trainer: Any, kind: str, all_args: tuple[Any, Any, Any], *,
                       counts: dict[str, SplitCounts], filter_report: dict | None,
                       resume: str | bool | None) -> dict[str, float]:
    """Train (resuming from ``resume`` if given), then evaluate on the validation pairs; returns the
    train and validation metrics with the last logged value of each panel."""
    _, training_args, model_args = all_args
    config = resolved_config(*all_args)
    # The card as known before training: a checkpoint pushed mid-run carries it.
    trainer.card = card_info(kind, model_args, training_args, config, counts, filter_report, {})
    if trainer.is_world_process_zero():
        logger.info("data: %s", {s: asdict(c) for s, c in counts.items()})
    if _reached_max_steps(resume, training_args):
        metrics = _load_finished(trainer, resume)
    else:
        metrics = dict(trainer.train(resume_from_checkpoint=resume).metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    metrics.update(_last_logged(trainer.state.log_history, [p[1] for p in trainer.panels]))
    return metrics


def save_run(trainer: Any, kind: str, all_args: tuple[Any, Any, Any], metrics: dict[str, float], *,
             counts: dict[str, SplitCounts], filter_report: dict | None, input_info: dict[str, Any],
             resume: str | bool | None, start: dict[str, Any]) -> TrainResult:
    """Save the trained model with its card, report.json, recipe.yaml and manifest.json (written
    last: the run is complete), and push it when asked."""
    _, training_args, model_args = all_args
    config = resolved_config(*all_args)
    trainer.card = card_info(kind, model_args, training_args, config, counts, filter_report, metrics)
    out = Path(training_args.output_dir)
    trainer.save_model(str(out))  # every process: ZeRO-3 gathers the shards
    notes = list(getattr(training_args, "machine_notes", []))
    if trainer.is_world_process_zero():
        _save_generation_config(trainer, out)
        if kind == "judge":  # a reward model's adapter stays as saved: its score head is not in the base
            _merge_adapter(out)
            set_eval_decoding(out)
        report = {"stage": "train" if kind == "judge" else "train-rm", "objective": trainer.card["objective"],
                  "data": {s: asdict(c) for s, c in counts.items()},
                  "filter_report": filter_summary(filter_report), "metrics": metrics,
                  "resumed_from": resume, "world_size": training_args.world_size,
                  "distributed_type": str(training_args.distributed_state.distributed_type).split(".")[-1],
                  "machine_notes": notes, "wandb": start["wandb"],
                  "seconds": round(time.time() - start["t0"], 1)}
        atomic_write_json(out / "report.json", report)
        _write_recipe(out, config)
        trainer.create_model_card()
        atomic_write_json(out / "manifest.json", {
            "stage": report["stage"], "config": config, "input": input_info,
            "counts": {s: c.used for s, c in counts.items()}, "versions": library_versions(),
            "complete": True})
    if training_args.push_to_hub:
        trainer.push_to_hub()
    trainer.accelerator.wait_for_everyone()
    return TrainResult(out, metrics, counts, resume if isinstance(resume, str) else None, notes, kind)


def _reached_max_steps(resume: str | bool | None, training_args: Any) -> bool:
    """Whether the checkpoint to resume already holds ``max_steps`` steps (a run killed after its
    last checkpoint): the Trainer would take one more step before it checks the count."""
    import json

    if not isinstance(resume, str) or training_args.max_steps <= 0:
        return False
    try:
        step = json.loads((Path(resume) / "trainer_state.json").read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return False  # the Trainer's own resume reports what is wrong with the checkpoint
    return isinstance(step, int) and step >= training_args.max_steps


class _AlreadyTrained(Exception):
    """Raised by :class:`_StopBeforeFirstStep` once the checkpoint is loaded."""


def _load_finished(trainer: Any, resume: str) -> dict[str, float]:
    """Load a finished checkpoint (weights, optimizer, state: the Trainer's own resume, DeepSpeed
    included) and take no step; returns the train metrics (no time spent, the checkpoint's epoch)."""
    from transformers import TrainerCallback

    class _StopBeforeFirstStep(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            raise _AlreadyTrained

    stopper = _StopBeforeFirstStep()
    trainer.add_callback(stopper)
    try:
        trainer.train(resume_from_checkpoint=resume)
    except _AlreadyTrained:
        logger.info("%s already holds max_steps=%d: no further step", resume, trainer.args.max_steps)
    finally:
        trainer.remove_callback(stopper)
    return {"train_runtime": 0.0, "epoch": float(trainer.state.epoch or 0.0)}


def _setup_logging(training_args: Any) -> None:
    import datasets
    import transformers

    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def _save_generation_config(trainer: Any, out: Path) -> None:
    """Generation config next to a LoRA adapter too (save_model writes it only for full models)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    gen = getattr(model, "generation_config", None)
    if gen is not None and not (out / "generation_config.json").is_file():
        gen.save_pretrained(str(out))


# What a served judge decodes with by default: `conj eval`'s decoding (EvalConfig: greedy, no
# repetition penalty, max_new_tokens 512; tests/test_train.py checks the two agree).
EVAL_DECODING = {"do_sample": False, "temperature": 0.0, "max_new_tokens": 512}
_SAMPLING_KEYS = ("top_p", "top_k", "min_p", "typical_p", "repetition_penalty", "num_beams")


def set_eval_decoding(out: Path) -> None:
    """Make the judge folder's ``generation_config.json`` the evaluation decoding (greedy).

    The saved one is the base model's (a Qwen2 instruct model's samples with T 0.7, top-p 0.8 and
    repetition penalty 1.05), and ``vllm serve`` takes its default sampling settings from it, so a
    served judge would sample where ``conj eval`` decodes greedily. vLLM reads ``temperature``, not
    ``do_sample``, hence ``temperature: 0`` beside ``do_sample: false``; transformers refuses to save
    that pair through ``GenerationConfig.save_pretrained`` (it only loads it, with a notice that the
    temperature is unused), so the file is written directly. Token ids (EOS, PAD) stay as they were.
    """
    import json

    path = out / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for key in _SAMPLING_KEYS:
        config.pop(key, None)
    config.update(EVAL_DECODING)
    atomic_write_json(path, config)


def _merge_adapter(out: Path) -> None:
    """Make a LoRA judge run's folder a full model, as a full-weight run's is: every later stage (sampling
    round 2, evaluation, ``Judge``) loads a model folder, and transformers' config readers cannot
    read an adapter-only one. The merged weights go in ``out``, the adapter itself in ``out/adapter``."""
    if not (out / "adapter_config.json").is_file() or (out / "config.json").is_file():
        return
    from peft import AutoPeftModelForCausalLM

    merged = AutoPeftModelForCausalLM.from_pretrained(str(out), dtype="auto").merge_and_unload()
    adapter = out / "adapter"
    adapter.mkdir(exist_ok=True)
    for f in list(out.iterdir()):
        if f.name.startswith("adapter_") and f.is_file():
            f.replace(adapter / f.name)
    merged.save_pretrained(str(out))
    logger.info("LoRA adapter merged into %s (adapter kept in %s)", out, adapter)


def _write_recipe(out: Path, config: dict[str, Any]) -> None:
    import yaml

    atomic_write_text(out / "recipe.yaml", yaml.safe_dump(config, sort_keys=True, allow_unicode=True))

