"""Stage 1 entry point for data-parallel sampling.

    accelerate launch --multi_gpu --num_processes K scripts/sample.py --config recipes/demo/sample.yaml

Each process samples the pairs whose stable id hashes to its rank and writes its own shard; the last
process to finish merges the shards. Single process: ``conj sample`` does the same.
"""

from __future__ import annotations

import argparse
import sys

from conj_train.cli.common import launcher_rank_world, load_stage_config, prepare_sharded_process
from conj_train.errors import ConjError


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config`` + overrides, sample this rank's shard, merge when all shards are done."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="recipe YAML")
    args, overrides = parser.parse_known_args(argv)
    rank, world = launcher_rank_world()
    try:
        from conj_train.sample.run import SampleConfig, run_sample

        cfg = load_stage_config(SampleConfig, args.config, overrides, section="sample")
        prepare_sharded_process(cfg, world)
        result = run_sample(cfg, rank=rank, world=world)
        print(f"[rank {rank}] {result.summary or result.counts}")
    except ConjError as e:
        print(f"sample: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
