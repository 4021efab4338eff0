"""Stage 3 entry point: train the Con-J judge with DPO (+ SFT) (a shim of ``conj_train.cli.train``).

    accelerate launch --config_file accelerate_configs/zero3.yaml scripts/train.py \
        --config recipes/con-j-qwen2-7b/train.yaml [--key value ...]

The same as ``accelerate launch ... -m conj_train.cli.train ...``, which works from an installed
package too. Any field of TRL's ``ScriptArguments``/``DPOConfig``/``ModelConfig`` (plus conj-train's
additions in ``conj_train.train.args``) can be set in the recipe or overridden on the command line.
One process: ``python scripts/train.py --config R.yaml`` or ``conj train --config R.yaml``.
"""

import sys

from conj_train.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
