"""Scalar baseline entry point: a Bradley-Terry reward model (TRL RewardTrainer) on the same pairs
(a shim of ``conj_train.cli.train_rm``).

    accelerate launch --config_file accelerate_configs/zero3.yaml scripts/train_rm.py \
        --config recipes/demo/train_rm.yaml [--key value ...]

The same as ``accelerate launch ... -m conj_train.cli.train_rm ...``, which works from an installed
package too. Any field of TRL's ``ScriptArguments``/``RewardConfig``/``ModelConfig`` (plus
conj-train's additions in ``conj_train.train.reward``) can be set in the recipe or overridden on the
command line. One process: ``conj train-rm --config R.yaml``.
"""

import sys

from conj_train.cli.train_rm import main

if __name__ == "__main__":
    sys.exit(main())
