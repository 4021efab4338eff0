"""Stage 4 entry point for data-parallel evaluation.

    accelerate launch --multi_gpu --num_processes K scripts/eval.py --config recipes/demo/eval.yaml

Each process judges the pairs whose stable id hashes to its rank, for every model, and writes its own
shard; the last process to finish scores all shards and writes metrics.json, summary.md and the
charts. Single process: ``conj eval`` does the same.
"""

from __future__ import annotations

import argparse
import sys

from conj_train.cli.common import launcher_rank_world, prepare_sharded_process
from conj_train.cli.eval import add_arguments, load_eval_config
from conj_train.errors import ConjError


def main(argv: list[str] | None = None) -> int:
    """Parse options + overrides, evaluate this rank's shard, merge when all shards are done."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    add_arguments(parser)
    args, overrides = parser.parse_known_args(argv)
    rank, world = launcher_rank_world()
    try:
        from conj_train.evaluate.run import run_eval

        cfg = load_eval_config(args, overrides)
        prepare_sharded_process(cfg, world)
        result = run_eval(cfg, rank=rank, world=world)
        print(f"[rank {rank}] {result.summary or result.counts}")
    except ConjError as e:
        print(f"eval: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
