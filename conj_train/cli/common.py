"""Helpers shared by CLI subcommands and ``scripts/*.py`` (light imports only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def load_stage_config(cls: type[T], path: str | None, overrides: Sequence[str], *, section: str,
                      fixed: dict[str, Any] | None = None) -> T:
    """Load a stage config from a flat recipe, or from ``section`` of a pipeline recipe, then overrides.

    ``fixed`` values (named command-line options) win over both.
    """
    from conj_train.config import load_config
    from conj_train.config_values import read_yaml

    use_section = None
    if path is not None and Path(path).is_file() and section in read_yaml(path):
        use_section = section
    return load_config(cls, path, overrides, section=use_section, fixed=fixed)


def launcher_rank_world() -> tuple[int, int]:
    """(rank, world size) from the variables accelerate launch / torchrun set, else (0, 1).

    Read from the environment rather than through ``accelerate.PartialState``: sampling processes
    never talk to each other (each writes its own shard, the last to finish merges), and creating a
    process group would bind CUDA devices before vLLM pins them.
    """
    import os

    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def prepare_sharded_process(cfg: Any, world: int) -> None:
    """Per-process set-up of an engine stage under a launcher: pin vLLM's GPUs, one CPU thread each.

    Processes sharing CPU cores slow each other several-fold with more than one thread each.
    """
    if cfg.engine == "vllm":
        from conj_train.engines.vllm import pin_local_devices

        pin_local_devices(cfg.tensor_parallel_size)
    if world > 1 and cfg.threads is None:
        import torch

        if not torch.cuda.is_available():
            cfg.threads = 1
