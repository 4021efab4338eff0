"""Stage 4 entry point for data-parallel evaluation (a shim of ``conj_train.cli.eval``, the package's).

    accelerate launch --multi_gpu --num_processes K scripts/eval.py --config recipes/demo/eval.yaml

The same as ``accelerate launch ... -m conj_train.cli.eval ...``, which works from an installed
package too. Each process judges the pairs whose stable id hashes to its rank, for every model, and
writes its own shard; the last process to finish scores all shards and writes metrics.json,
summary.md and the charts. Single process: ``conj eval`` does the same.
"""

import sys

from conj_train.cli.eval import main

if __name__ == "__main__":
    sys.exit(main())
