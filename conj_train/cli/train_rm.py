"""``conj train-rm``: the scalar Bradley-Terry reward model baseline (TRL's RewardTrainer).

The stage's one entry: ``conj train-rm``, ``python -m conj_train.cli.train_rm`` and
``accelerate launch ... -m conj_train.cli.train_rm --config R.yaml`` all parse here and run
:func:`train_rm`, which ``conj run`` calls too (with the recipe as a mapping).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from conj_train.cli.train import LAUNCH, set_up_training, training_argv


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``train-rm`` subcommand."""
    p = sub.add_parser(
        "train-rm",
        help="train the scalar Bradley-Terry reward model baseline on the same pairs",
        description="Train a sequence-classification reward model with TRL's RewardTrainer on the "
        "preference source (question + one answer per side). " + LAUNCH.format(module="train_rm"),
    )
    p.add_argument("--config", help="recipe YAML (e.g. recipes/demo/train_rm.yaml)")
    p.set_defaults(func=run, accepts_overrides=True)


def train_rm(argv: Sequence[str] = (), values: Mapping[str, Any] | None = None) -> Any:
    """Set up this process, build the arguments (``argv`` or the recipe as ``values``), train and
    save the reward model; returns the run's result."""
    from conj_train.train.reward import parse_reward_args, run_train_rm

    set_up_training(argv, values)
    return run_train_rm(*parse_reward_args(list(argv), values=values))


def run(args: argparse.Namespace) -> int:
    """Train and save the scalar reward model; the main process prints the summary."""
    from conj_train.cli.common import launcher_rank_world

    result = train_rm(training_argv(args))
    if launcher_rank_world()[0] == 0:
        print(result.summary)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``conj train-rm`` with ``argv`` (default: the command line); returns the exit code."""
    from conj_train.cli.common import stage_main

    return stage_main("train-rm", argv)


if __name__ == "__main__":
    sys.exit(main())
