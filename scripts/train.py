"""Stage 3 entry point: train the Con-J judge with DPO (+ SFT) on the filter stage's pairs.

    accelerate launch --config_file accelerate_configs/zero3.yaml scripts/train.py \
        --config recipes/con-j-qwen2-7b/train.yaml [--key value ...]

Any field of TRL's ``ScriptArguments``/``DPOConfig``/``ModelConfig`` (plus conj-train's additions in
``conj_train.train.args``) can be set in the recipe or overridden on the command line. One process:
``python scripts/train.py --config R.yaml`` or ``conj train --config R.yaml``.
"""

from __future__ import annotations

import os
import sys

from conj_train.errors import ConjError


def main(argv: list[str] | None = None) -> int:
    """Parse the recipe + overrides, train, save the judge; returns the exit code."""
    try:
        from conj_train.train.args import parse_train_args
        from conj_train.train.dpo import run_train
        from conj_train.train.machine import set_up_machine

        set_up_machine(argv)  # before the arguments: building them starts the distributed state
        script_args, training_args, model_args = parse_train_args(argv)
        result = run_train(script_args, training_args, model_args)
    except ConjError as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0":
        print(result.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
