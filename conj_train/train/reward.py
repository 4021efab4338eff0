"""The scalar baseline of the paper's central comparison: a Bradley-Terry reward model (TRL RewardTrainer).

It learns from the same preference pairs the judge's data came from, one answer per side: the input
of each side is the conversation (context + question) followed by one answer, and the sequence
classification head reads a scalar at the last token; the loss is ``-log sigmoid(r+ - r-)``. The same
recipe style, accelerate configs, machine adjustments, resume and reports as the judge apply
(:mod:`conj_train.train.dpo` and the modules it names).

Pairs: every record of ``dataset_name`` (any source ``conj data`` reads), split into train and
validation by a hash of the pair id (``validation_share``, the filter stage's rule). With
``pairs_from`` set to a filter output folder, only the pair ids of its train split are trained on
and those of its validation split are held out, so judge and scalar model see the same questions.

A trained model scores answers with :class:`conj_train.inference.reward_model.RewardModel` (the one scorer, also
used by the evaluation stage to compare judge and scalar model on the same test sets).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trl import ModelConfig, RewardConfig, RewardTrainer, ScriptArguments

from conj_train.data.report import percentiles
from conj_train.errors import ConjError
from conj_train.train.args import CardArguments, check_train_values, parse_args
from conj_train.train.card import ConjCardMixin
from conj_train.train.lifecycle import TrainResult, begin_run, save_run, train_and_evaluate
from conj_train.train.machine import adapt_to_machine
from conj_train.train.model import load_pretrained, load_tokenizer, model_kwargs
from conj_train.train.pair_data import SplitCounts, resolve_dataset
from conj_train.train.run_dir import claim_train_dir, resume_point, train_data_hash, train_lock
from conj_train.train.tracking import RM_PANELS, MetricsRecorder

logger = logging.getLogger(__name__)


@dataclass
class RewardScriptArguments(ScriptArguments, CardArguments):
    """Where the scalar model's pairs come from (TRL's ScriptArguments + conj-train's reading options)."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Preference source: a file, folder, saved dataset or Hub id (as `conj data` "
                  "reads)."},
    )
    dataset_format: str | None = field(default=None, metadata={"help": "Input format (default: detect)."})
    multi_turn: str = field(
        default="context",
        metadata={"help": "'context' keeps earlier turns; 'first_turn' uses the first user turn (Con-J)."},
    )
    pairs_from: str | None = field(
        default=None,
        metadata={"help": "A filter output folder: train on its train pair ids, hold out its validation "
                  "ids."},
    )
    validation_share: float = field(
        default=0.05, metadata={"help": "Held-out share by pair-id hash when pairs_from is not set."})
    max_train_pairs: int | None = field(default=None, metadata={"help": "Use only the first N train pairs."})
    max_eval_pairs: int | None = field(default=None, metadata={"help": "Use only the first N eval pairs."})
    auto_resume: bool = field(
        default=True,
        metadata={"help": "Resume from the last complete checkpoint-N in output_dir when one exists."},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Empty output_dir first when it holds a run of another config or launch."},
    )


@dataclass
class ConjRewardConfig(RewardConfig):
    """TRL's RewardConfig plus ``global_batch_size`` and this machine's adjustments."""

    global_batch_size: int | None = field(
        default=None,
        metadata={"help": "If set, gradient_accumulation_steps = global_batch_size / (per-device batch x "
                  "processes)."},
    )

    def __post_init__(self) -> None:
        check_train_values(self)
        self.machine_notes = adapt_to_machine(self)
        super().__post_init__()


def parse_reward_args(argv: Sequence[str] | None = None, *, values: Mapping[str, Any] | None = None,
                      ) -> tuple[RewardScriptArguments, ConjRewardConfig, ModelConfig]:
    """(script, training, model) arguments of a reward-model run from a recipe and CLI overrides.

    ``values``: the recipe as a mapping instead of (or on top of) ``--config``
    (see :func:`conj_train.train.args.parse_args`).
    """
    classes = (RewardScriptArguments, ConjRewardConfig, ModelConfig)
    return parse_args(classes, argv, values)  # type: ignore[return-value]


class ConjRewardTrainer(ConjCardMixin, RewardTrainer):
    """TRL's RewardTrainer with conj-train's model card."""

    panels = RM_PANELS


def conversation(record: Mapping[str, Any]) -> list[dict[str, str]]:
    """The context turns and the question of a canonical record, as chat messages."""
    return [*({"role": m["role"], "content": m["content"]} for m in record.get("context") or []),
            {"role": "user", "content": record["question"]}]


def reward_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One canonical preference record in TRL's conversational preference format."""
    return {"prompt": conversation(record),
            "chosen": [{"role": "assistant", "content": record["chosen"]}],
            "rejected": [{"role": "assistant", "content": record["rejected"]}],
            "pair_id": record["id"]}


def _filter_ids(pairs_from: str) -> dict[str, set[str]]:
    from datasets import load_from_disk

    ddir, _ = resolve_dataset(pairs_from)
    dd = load_from_disk(str(ddir))
    return {split: set(ds["pair_id"]) for split, ds in dd.items() if "pair_id" in ds.column_names}


def split_records(records: Sequence[Mapping[str, Any]], script_args: RewardScriptArguments
                  ) -> tuple[dict[str, list[Mapping[str, Any]]], int]:
    """Records per split (train / validation) and how many belong to neither (not in pairs_from)."""
    from conj_train.filter.pairs import split_of

    out: dict[str, list[Mapping[str, Any]]] = {"train": [], "validation": []}
    outside = 0
    if script_args.pairs_from:
        ids = _filter_ids(script_args.pairs_from)
        if "train" not in ids:
            raise ConjError(f"{script_args.pairs_from}: its dataset has no train split with a pair_id column")
        for r in records:
            split = next((s for s in ("train", "validation") if r["id"] in ids.get(s, ())), None)
            if split is None:
                outside += 1
            else:
                out[split].append(r)
    else:
        for r in records:
            out[split_of(r["id"], script_args.validation_share)].append(r)
    return out, outside


def _sequence_lengths(tokenizer: Any, row: Mapping[str, Any]) -> tuple[int, int]:
    def n(side: str) -> int:
        return len(tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True,
                                                 return_dict=True)["input_ids"])

    return n("chosen"), n("rejected")


def prepare_rows(rows: list[dict[str, Any]], tokenizer: Any, max_length: int | None,
                 cap: int | None) -> tuple[list[dict[str, Any]], SplitCounts]:
    """Cap and length-filter one split (TRL's RewardTrainer would drop over-long pairs silently)."""
    counts = SplitCounts(read=len(rows))
    if cap is not None and len(rows) > cap:
        counts.over_cap = len(rows) - cap
        rows = rows[:cap]
    from conj_train.prompts.chat import plain_messages

    kept, lens = [], []
    for row in rows:
        # Questions and answers are data: their special-token strings tokenize as text.
        row = {**row, **{k: plain_messages(tokenizer, row[k]) for k in ("prompt", "chosen", "rejected")}}
        c, r = _sequence_lengths(tokenizer, row)
        reason = None
        if max_length is not None:
            reason = "chosen_too_long" if c > max_length else "rejected_too_long" if r > max_length else None
        if reason:
            counts.dropped[reason] += 1
        else:
            kept.append(row)
            lens.append(max(c, r))
    counts.used = len(kept)
    counts.tokens = percentiles(lens)
    counts.check()
    return kept, counts


def load_reward_splits(script_args: RewardScriptArguments, tokenizer: Any, max_length: int | None
                       ) -> tuple[Any, Any | None, dict[str, SplitCounts], dict[str, Any]]:
    """(train, eval or None, counts, ingest info) as in-memory datasets for RewardTrainer."""
    from datasets import Dataset

    from conj_train.data import load_preferences

    if not script_args.dataset_name:
        raise ConjError("dataset_name is required: the preference source (file, folder or Hub id)")
    res = load_preferences(script_args.dataset_name, format=script_args.dataset_format,
                           config=script_args.dataset_config, split=script_args.dataset_train_split,
                           multi_turn=script_args.multi_turn)
    by_split, outside = split_records(res.records, script_args)
    train_rows, train_counts = prepare_rows([reward_row(r) for r in by_split["train"]], tokenizer,
                                            max_length, script_args.max_train_pairs)
    if not train_rows:
        raise ConjError(f"{script_args.dataset_name}: no training pairs left ({train_counts})")
    counts = {"train": train_counts}
    eval_ds = None
    if by_split["validation"]:
        eval_rows, counts["eval"] = prepare_rows([reward_row(r) for r in by_split["validation"]], tokenizer,
                                                 max_length, script_args.max_eval_pairs)
        eval_ds = Dataset.from_list(eval_rows) if eval_rows else None
    info = {"dataset": script_args.dataset_name, "ingest": res.report.to_dict(),
            "outside_pairs_from": outside, "pairs_from": script_args.pairs_from}
    return Dataset.from_list(train_rows), eval_ds, counts, info


def run_train_rm(script_args: RewardScriptArguments, training_args: ConjRewardConfig,
                 model_args: ModelConfig, *, callbacks: Sequence[Any] = ()) -> TrainResult:
    """Train and save the scalar reward model; same outputs as :func:`conj_train.train.dpo.run_train`."""
    start = begin_run(training_args, (script_args.dataset_name, model_args.model_name_or_path,
                                      script_args.pairs_from))
    with train_lock(training_args):  # one training run writes this folder at a time
        return _train_rm(script_args, training_args, model_args, callbacks, start)


def _train_rm(script_args: RewardScriptArguments, training_args: ConjRewardConfig, model_args: ModelConfig,
              callbacks: Sequence[Any], start: dict[str, Any]) -> TrainResult:
    from transformers import AutoModelForSequenceClassification

    claim_train_dir(script_args, training_args, model_args, data_hash=train_data_hash(script_args.dataset_name))
    resume = resume_point(script_args, training_args)
    tokenizer = load_tokenizer(model_args, training_args.trust_remote_code)
    train, eval_ds, counts, info = load_reward_splits(script_args, tokenizer, training_args.max_length)
    if eval_ds is None and training_args.eval_strategy != "no":
        logger.warning("no validation pairs: evaluation is turned off")
        training_args.eval_strategy = "no"
    kwargs = model_kwargs(model_args, training_args)
    kwargs.pop("use_cache", None)
    model = load_pretrained(AutoModelForSequenceClassification, model_args.model_name_or_path, num_labels=1,
                            **kwargs)
    from trl import get_peft_config

    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        peft_config.task_type = "SEQ_CLS"  # keeps the new score head trainable and saved
    trainer = ConjRewardTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=eval_ds,
        processing_class=tokenizer, peft_config=peft_config,
        callbacks=[MetricsRecorder(training_args.output_dir, RM_PANELS), *callbacks],
    )
    all_args = (script_args, training_args, model_args)
    metrics = train_and_evaluate(trainer, "reward", all_args, counts=counts, filter_report=None, resume=resume)
    return save_run(trainer, "reward", all_args, metrics, counts=counts, filter_report=None, input_info=info,
                    resume=resume, start=start)
