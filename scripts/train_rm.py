"""Scalar baseline entry point: a Bradley-Terry reward model (TRL RewardTrainer) on the same pairs.

    accelerate launch --config_file accelerate_configs/zero3.yaml scripts/train_rm.py \
        --config recipes/demo/train_rm.yaml [--key value ...]

Any field of TRL's ``ScriptArguments``/``RewardConfig``/``ModelConfig`` (plus conj-train's additions in
``conj_train.train.reward``) can be set in the recipe or overridden on the command line. One process:
``conj train-rm --config R.yaml``.
"""

from __future__ import annotations

import os
import sys

from conj_train.errors import ConjError


def main(argv: list[str] | None = None) -> int:
    """Parse the recipe + overrides, train, save the reward model; returns the exit code."""
    try:
        from conj_train.train.machine import set_up_machine
        from conj_train.train.reward import parse_reward_args, run_train_rm

        set_up_machine(argv)  # before the arguments: building them starts the distributed state
        script_args, training_args, model_args = parse_reward_args(argv)
        result = run_train_rm(script_args, training_args, model_args)
    except ConjError as e:
        print(f"train-rm: error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(result.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
