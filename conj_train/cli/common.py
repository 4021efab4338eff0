"""Helpers shared by CLI subcommands and ``scripts/*.py`` (light imports only)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def load_stage_config(cls: type[T], path: str | None, overrides: Sequence[str], *, section: str) -> T:
    """Load a stage config from a flat recipe, or from ``section`` of a pipeline recipe."""
    from conj_train.config import load_config, read_yaml

    use_section = None
    if path is not None and Path(path).is_file() and section in read_yaml(path):
        use_section = section
    return load_config(cls, path, overrides, section=use_section)


def accelerate_rank_world() -> tuple[int, int, Any]:
    """(rank, world size, PartialState) when launched by accelerate/torchrun, else (0, 1, None)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    from accelerate import PartialState

    state = PartialState()
    return state.process_index, state.num_processes, state
