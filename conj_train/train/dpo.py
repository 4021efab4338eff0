"""Stage 3: contrastive DPO training of the judge with TRL; the steps of a run, top to bottom.

    set_up_machine(argv)                          # machine.py   (entry points, before the arguments)
    args = parse_train_args(argv)                 # args.py      recipe + --key value overrides
    run_train(*args):
        begin_run                                 # lifecycle.py output folder, logging, seed, wandb
        claim_train_dir, resume_point             # run_dir.py   config hash, checkpoint to resume
        build_trainer:
            load_tokenizer                        # model.py
            load_pair_splits                      # pair_data.py filter output -> length-checked pairs
            load_pretrained(AutoModelForCausalLM) # model.py     policy (TRL adds the reference / LoRA)
            ConjDPOTrainer                        # this module
        train_and_evaluate                        # lifecycle.py train (or resume), validation metrics
        save_run                                  # lifecycle.py the judge, card.py, reports, manifest

Objective (docs/method.md#training-objective): ``L = L_DPO(sigmoid, beta) + alpha * L_SFT``, written
in TRL 1.x as ``loss_type: [sigmoid, sft]`` and ``loss_weights: [1.0, alpha]`` (``rpo_alpha`` no longer exists).
TRL sums the per-token log-probabilities of each completion (``ld_alpha`` unset), as Con-J does
(``average_log_prob=False``); the SFT term is TRL's token-mean NLL of the chosen judgments of the
micro-batch. ``tests/test_train.py`` recomputes both terms from the policy's and reference's
log-probs.

The released code's SFT is different: a separate optimizer step every ``1/sft_loss`` steps on the
repeated-sampling positives only, scaled by 0.001. It is not offered here because it cannot be done
cleanly: that extra step shares Adam's state, so its 0.001 factor barely changes the update size
(Adam normalises the gradient scale away); reproducing it needs a second optimizer step inside one
Trainer step, which DeepSpeed's engine (accumulation boundaries, partitioned gradients, the LR
schedule) does not allow; and its masking of hint pairs yields NaN on hint-only micro-batches. The
per-step form is the paper's description, and ``pair_types: [best_of_n]`` reproduces the code's
"repeated-sampling pairs only" ablation for the whole objective.

Machine: without CUDA the run is fp32; under DeepSpeed it uses gloo with ``use_cpu=False`` and skips
DeepSpeed's shared-memory op build, so CI exercises the real ZeRO-3 path; DDP uses ``use_cpu=True``
(MULTI_CPU over gloo); see :mod:`conj_train.train.machine`. With CUDA none of this applies.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trl import ModelConfig

from conj_train.errors import ConjError
from conj_train.io import file_hash
from conj_train.train.args import ConjDPOConfig, TrainScriptArguments
from conj_train.train.batches import LabelBalancedSampler
from conj_train.train.card import ConjCardMixin
from conj_train.train.lifecycle import TrainResult, begin_run, save_run, train_and_evaluate
from conj_train.train.model import load_pretrained, load_tokenizer, model_kwargs
from conj_train.train.pair_data import CACHE_DIR, SplitCounts, load_pair_splits, resolve_dataset
from conj_train.train.prefix_trainer import PrefixSharedDPOTrainer
from conj_train.train.run_dir import claim_train_dir, resume_point, train_data_hash, train_lock
from conj_train.train.tracking import DPO_PANELS, MetricsRecorder

logger = logging.getLogger(__name__)


def run_train(script_args: TrainScriptArguments, training_args: ConjDPOConfig, model_args: ModelConfig,
              *, callbacks: Sequence[Any] = (), trainer_cls: type | None = None) -> TrainResult:
    """Train the judge, evaluate it, save it with its card and reports; returns the result.

    Run the same call in every process of an ``accelerate launch``, after
    :func:`~conj_train.train.machine.set_up_machine` and the arguments (as ``scripts/train.py`` does);
    only the main process writes reports. ``callbacks`` are extra ``transformers.TrainerCallback`` objects (tests use one to stop);
    ``trainer_cls`` as in :func:`build_trainer`.
    """
    # Output folder check (apart from the pairs and the base model), logging, seed, wandb.
    start = begin_run(training_args, (script_args.dataset_name, model_args.model_name_or_path))
    with train_lock(training_args):  # one training run writes this folder at a time
        # This config's and these pairs' folder, before any checkpoint.
        claim_train_dir(script_args, training_args, model_args, data_hash=_pairs_hash(script_args.dataset_name))
        resume = resume_point(script_args, training_args)  # the last complete checkpoint, or None
        trainer, counts, filter_report = build_trainer(script_args, training_args, model_args,
                                                       callbacks=callbacks, trainer_cls=trainer_cls)
        all_args = (script_args, training_args, model_args)
        metrics = train_and_evaluate(trainer, "judge", all_args, counts=counts, filter_report=filter_report,
                                     resume=resume)
        _, report_path = resolve_dataset(script_args.dataset_name)
        return save_run(trainer, "judge", all_args, metrics, counts=counts, filter_report=filter_report,
                        input_info=_input_info(script_args, report_path), resume=resume, start=start)


def build_trainer(script_args: TrainScriptArguments, training_args: ConjDPOConfig, model_args: ModelConfig,
                  *, callbacks: Sequence[Any] = (), trainer_cls: type | None = None
                  ) -> tuple[ConjDPOTrainer, dict[str, SplitCounts], dict | None]:
    """Tokenizer, prepared pairs, policy (+ frozen reference, or LoRA) and the TRL trainer.

    ``trainer_cls`` replaces :class:`ConjDPOTrainer` (a DPOTrainer subclass with
    :class:`ConjCardMixin` first, e.g. one combining the mixin with a prefix-sharing trainer).
    """
    from transformers import AutoModelForCausalLM
    from trl import get_peft_config

    tokenizer = load_tokenizer(model_args, training_args.trust_remote_code)
    out = Path(training_args.output_dir)
    train, eval_ds, counts, filter_report = load_pair_splits(script_args, tokenizer, training_args.max_length,
                                                             out / CACHE_DIR, training_args.dataset_num_proc)
    if eval_ds is None and training_args.eval_strategy != "no":
        logger.warning("no validation pairs: evaluation is turned off")
        training_args.eval_strategy = "no"
    model = load_pretrained(AutoModelForCausalLM, model_args.model_name_or_path,
                            **model_kwargs(model_args, training_args))
    # ref_model=None: TRL loads a frozen copy of the base (or, with precompute_ref_log_probs, scores
    # the pairs once up front); with a LoRA config the adapter-disabled base is the reference.
    extra: dict[str, Any] = {}
    if getattr(training_args, "balanced_batches", False):
        if "label" not in train.column_names:
            raise ConjError(f"balanced_batches: the training pairs in {script_args.dataset_name} have no "
                            "`label` column")
        extra["pair_labels"] = train["label"]
    trainer = (trainer_cls or ConjDPOTrainer)(
        **extra, model=model, ref_model=None, args=training_args, train_dataset=train, eval_dataset=eval_ds,
        processing_class=tokenizer, peft_config=get_peft_config(model_args),
        callbacks=[MetricsRecorder(out, DPO_PANELS), *callbacks],
    )
    return trainer, counts, filter_report


class ConjDPOTrainer(ConjCardMixin, PrefixSharedDPOTrainer):
    """TRL's DPOTrainer with prefix-shared log-probs (``prefix_sharing``), label-balanced batches
    (``balanced_batches``) and conj-train's model card.

    ``pair_labels`` are the training rows' labels, taken before TRL's tokenization drops the column.
    """

    def __init__(self, *args: Any, pair_labels: Sequence[int] | None = None, **kwargs: Any) -> None:
        self.pair_labels = None if pair_labels is None else list(pair_labels)
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if not getattr(self.args, "balanced_batches", False):
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.pair_labels is None or len(self.pair_labels) != len(dataset):
            raise ConjError("balanced_batches needs one label per training pair (the filter's `label` column)")
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return LabelBalancedSampler(self.pair_labels, seed)


def _pairs_hash(dataset_name: str | None) -> str | None:
    """Content hash of the pairs folder training reads; None when it is not one (build_trainer says
    what is wrong, after the model checks)."""
    try:
        return train_data_hash(resolve_dataset(dataset_name)[0])
    except ConjError:
        return None


def _input_info(script_args: Any, report_path: Path | None) -> dict[str, Any]:
    info: dict[str, Any] = {"dataset": str(script_args.dataset_name)}
    if report_path is not None:
        info["filter_report_hash"] = file_hash(report_path)
        manifest = report_path.parent / "manifest.json"
        if manifest.is_file():
            info["filter_manifest_hash"] = file_hash(manifest)
    return info
