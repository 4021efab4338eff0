"""``conj train``: stage 3, the Con-J judge trained with DPO (+ SFT).

The stage's one entry: ``conj train``, ``python -m conj_train.cli.train`` and
``accelerate launch --config_file accelerate_configs/zero3.yaml -m conj_train.cli.train --config R.yaml``
all parse here and run :func:`train`, which ``conj run`` calls too (with the recipe as a mapping).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

LAUNCH = ("Several GPUs / nodes: accelerate launch --config_file accelerate_configs/<x>.yaml "
          "-m conj_train.cli.{module} --config R.yaml [--key value ...] (or a launch: section in conj run)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    p = sub.add_parser(
        "train",
        help="train the judge with DPO (+SFT) on the filter stage's pairs",
        description="Train the Con-J judge with TRL's DPOTrainer. The recipe's keys are the fields of "
        "TRL's ScriptArguments, DPOConfig and ModelConfig (plus conj-train's: pair_types, overlong, "
        "max_train_pairs, global_batch_size, auto_resume); override any as --key value. "
        + LAUNCH.format(module="train"),
    )
    p.add_argument("--config", help="recipe YAML (e.g. recipes/demo/train.yaml)")
    p.set_defaults(func=run, accepts_overrides=True)


def training_argv(args: argparse.Namespace) -> list[str]:
    """The recipe and overrides of a training subcommand, as the argument list TRL's parser reads."""
    return (["--config", args.config] if args.config else []) + list(args.overrides)


def set_up_training(argv: Sequence[str], values: Mapping[str, Any] | None) -> None:
    """This process's machine set-up (:func:`conj_train.train.machine.set_up_machine`), before the
    arguments are built: building them starts the distributed state."""
    from conj_train.train.machine import asks_for_deepspeed, set_up_machine, uses_deepspeed

    deepspeed = uses_deepspeed() or asks_for_deepspeed(argv) or bool((values or {}).get("deepspeed"))
    set_up_machine(argv, deepspeed=deepspeed)


def train(argv: Sequence[str] = (), values: Mapping[str, Any] | None = None) -> Any:
    """Set up this process, build the arguments (``--config`` recipe and overrides in ``argv``, or
    the recipe as ``values``), train and save the judge; returns the run's result."""
    from conj_train.train.args import parse_train_args
    from conj_train.train.dpo import run_train

    set_up_training(argv, values)
    return run_train(*parse_train_args(list(argv), values=values))


def run(args: argparse.Namespace) -> int:
    """Train and save the judge; the main process prints the summary."""
    from conj_train.cli.common import launcher_rank_world

    result = train(training_argv(args))
    if launcher_rank_world()[0] == 0:
        print(result.summary)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``conj train`` with ``argv`` (default: the command line); returns the exit code."""
    from conj_train.cli.common import stage_main

    return stage_main("train", argv)


if __name__ == "__main__":
    sys.exit(main())
