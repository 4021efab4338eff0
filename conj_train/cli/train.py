"""``conj train`` and ``conj train-rm``: stage 3 in one process (the judge, or the scalar baseline)."""

from __future__ import annotations

import argparse

_LAUNCH = ("Several GPUs / nodes: accelerate launch --config_file accelerate_configs/<x>.yaml "
           "scripts/{script} --config R.yaml [--key value ...]")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` and ``train-rm`` subcommands."""
    p = sub.add_parser(
        "train",
        help="train the judge with DPO (+SFT) on the filter stage's pairs",
        description="Train the Con-J judge with TRL's DPOTrainer. The recipe's keys are the fields of "
        "TRL's ScriptArguments, DPOConfig and ModelConfig (plus conj-train's: pair_types, overlong, "
        "max_train_pairs, global_batch_size, auto_resume); override any as --key value. "
        + _LAUNCH.format(script="train.py"),
    )
    p.add_argument("--config", help="recipe YAML (e.g. recipes/demo/train.yaml)")
    p.set_defaults(func=run, accepts_overrides=True)
    rm = sub.add_parser(
        "train-rm",
        help="train the scalar Bradley-Terry reward model baseline on the same pairs",
        description="Train a sequence-classification reward model with TRL's RewardTrainer on the "
        "preference source (question + one answer per side). " + _LAUNCH.format(script="train_rm.py"),
    )
    rm.add_argument("--config", help="recipe YAML (e.g. recipes/demo/train_rm.yaml)")
    rm.set_defaults(func=run_rm, accepts_overrides=True)


def _argv(args: argparse.Namespace) -> list[str]:
    return (["--config", args.config] if args.config else []) + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    """Train and save the judge in this process; print the summary."""
    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train
    from conj_train.train.machine import set_up_machine

    argv = _argv(args)
    set_up_machine(argv)
    result = run_train(*parse_train_args(argv))
    print(result.summary)
    return 0


def run_rm(args: argparse.Namespace) -> int:
    """Train and save the scalar reward model in this process; print the summary."""
    from conj_train.train.machine import set_up_machine
    from conj_train.train.reward import parse_reward_args, run_train_rm

    argv = _argv(args)
    set_up_machine(argv)
    result = run_train_rm(*parse_reward_args(argv))
    print(result.summary)
    return 0
