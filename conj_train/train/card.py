"""The model card (``README.md``) of a trained judge or scalar reward model, and the trainer mixin
that writes it wherever the Trainer writes a card (the final folder, checkpoints, pushes).

:func:`card_info` gathers what the card shows as plain data (base model, objective, the
hyper-parameters that matter, data counts, filter summary, final metrics, versions);
:func:`model_card` renders it.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from conj_train.io import atomic_write_text, library_versions
from conj_train.train.pair_data import SplitCounts
from conj_train.train.tracking import DPO_PANELS


def objective(training_args: Any) -> str:
    """The loss in words, e.g. ``sigmoid DPO (beta 0.1) + 0.001 x SFT (chosen NLL)``."""
    types = list(training_args.loss_type)
    weights = list(training_args.loss_weights or [1.0] * len(types))
    parts = []
    for t, w in zip(types, weights, strict=True):
        name = {"sigmoid": f"sigmoid DPO (beta {training_args.beta})",
                "sft": "SFT (token-mean NLL of the chosen judgment)"}.get(t, t)
        parts.append(name if w == 1 else f"{w:g} x {name}")
    return " + ".join(parts) + "; log-probs summed over judgment tokens"


def filter_summary(report: dict | None) -> dict | None:
    """The filter report's headline counts (shown in the card and report.json), or None."""
    if not report:
        return None
    keys = ("input_pairs", "input_pairs_with_pairs", "lost", "pairs_total", "pairs_by_type", "splits",
            "judgments_read", "judgments_by_class")
    return {k: report[k] for k in keys if k in report}


_CARD_KEYS = ("learning_rate", "lr_scheduler_type", "warmup_steps", "adam_beta1",
              "adam_beta2", "weight_decay", "max_grad_norm", "num_train_epochs", "max_steps",
              "per_device_train_batch_size", "gradient_accumulation_steps", "global_batch_size", "beta",
              "loss_type", "loss_weights", "max_length", "overlong", "precompute_ref_log_probs",
              "bf16", "gradient_checkpointing", "seed", "use_peft", "lora_r", "lora_alpha",
              "load_in_4bit", "max_train_pairs", "pair_types", "center_rewards_coefficient")


def card_info(kind: str, model_args: Any, training_args: Any, config: dict[str, Any],
              counts: dict[str, SplitCounts], filter_report: dict | None,
              metrics: dict[str, float]) -> dict[str, Any]:
    """Everything :func:`model_card` shows, as plain data."""
    return {
        "kind": kind,
        "base_model": model_args.model_name_or_path,
        "objective": objective(training_args) if kind == "judge" else
        "Bradley-Terry: -log sigmoid(r(chosen) - r(rejected)), scalar head on the last token",
        "hyperparameters": {k: config[k] for k in _CARD_KEYS if config.get(k) is not None
                            and (config.get("use_peft") or not k.startswith(("lora_", "load_in_")))},
        "world_size": training_args.world_size,
        "data": {s: asdict(c) for s, c in counts.items()},
        "filter": filter_summary(filter_report),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and _card_metric(k)},
        "versions": library_versions(),
    }


def _card_metric(key: str) -> bool:
    return any(w in key for w in ("loss", "accurac", "margin")) or key in ("epoch", "train_runtime")


def _table(rows: dict[str, Any]) -> str:
    return "\n".join(["| key | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows.items())])


def model_card(card: dict[str, Any]) -> str:
    """The README.md of a trained judge (or scalar reward model)."""
    judge = card["kind"] == "judge"
    title = "Con-J generative judge" if judge else "Scalar reward model (Bradley-Terry baseline)"
    lines = ["---", f"base_model: {card['base_model']}", "library_name: transformers",
             f"tags: [{'con-j, judge, dpo, trl' if judge else 'reward-model, trl'}]", "---", "",
             f"# {title}", "",
             f"Trained from `{card['base_model']}` with conj-train "
             f"({card['world_size']} process(es), {card.get('step', 0)} optimizer steps).", "",
             "## Objective", "", card["objective"], "", "## Hyper-parameters", "",
             _table(card["hyperparameters"]), "", "## Data", ""]
    for split, c in card["data"].items():
        dropped = {k: v for k, v in c["dropped"].items() if v}
        lines.append(f"- {split}: {c['used']} pairs used of {c['read']} read"
                     + (f"; dropped {dropped}" if dropped else "")
                     + (f"; {c['truncated']} truncated" if c["truncated"] else "")
                     + (f"; token lengths {c['tokens']}" if c.get("tokens") else ""))
    if card.get("filter"):
        f = card["filter"]
        lines += ["", "Filter stage (contrastive judgment pairs):", "",
                  _table({k: v for k, v in f.items() if k != "splits"})]
    lines += ["", "## Final metrics", ""]
    lines.append(_table({k: round(v, 6) for k, v in card["metrics"].items()}) if card["metrics"]
                 else "(training in progress)")
    lines += ["", "## Usage", ""]
    if judge:
        lines += ["Render the judge prompt (the same template as in training) as the user turn, apply the "
                  "chat template with `add_generation_prompt=True` and generate; the judgment ends with a "
                  "JSON verdict naming the better answer.", "", "```python",
                  "from transformers import AutoModelForCausalLM, AutoTokenizer",
                  "tok = AutoTokenizer.from_pretrained(PATH)",
                  "model = AutoModelForCausalLM.from_pretrained(PATH)",
                  "ids = tok.apply_chat_template([{'role': 'user', 'content': judge_prompt}],",
                  "                              add_generation_prompt=True, return_tensors='pt')",
                  "print(tok.decode(model.generate(ids, max_new_tokens=512)[0, ids.shape[1]:]))", "```"]
    else:
        lines += ["```python", "from conj_train.reward_model import RewardModel",
                  "rm = RewardModel.from_pretrained(PATH)",
                  "r1, r2 = rm.score_pair(question, answer1, answer2)  # higher is better", "```"]
    lines += ["", "## Versions", "", _table(card["versions"]), ""]
    return "\n".join(lines)


class ConjCardMixin:
    """Trainer mixin: the model card (also written with checkpoints and on push) is conj-train's."""

    card: dict[str, Any] | None = None
    panels: tuple[tuple[str, str, str], ...] = DPO_PANELS

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None) -> None:
        """Write the card to ``output_dir/README.md`` (main process only)."""
        if not self.is_world_process_zero() or self.card is None:  # type: ignore[attr-defined]
            return
        card = dict(self.card, step=self.state.global_step)  # type: ignore[attr-defined]
        out = Path(self.args.output_dir)  # type: ignore[attr-defined]
        atomic_write_text(out / "README.md", model_card(card))

