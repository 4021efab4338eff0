"""Stage 1 entry point for data-parallel sampling (a shim of ``conj_train.cli.sample``, the package's).

    accelerate launch --multi_gpu --num_processes K scripts/sample.py --config recipes/demo/sample.yaml

The same as ``accelerate launch ... -m conj_train.cli.sample ...``, which works from an installed
package too. Each process samples the pairs whose stable id hashes to its rank and writes its own
shard; the last process to finish merges the shards. Single process: ``conj sample`` does the same.
"""

import sys

from conj_train.cli.sample import main

if __name__ == "__main__":
    sys.exit(main())
