"""Helpers shared by the CLI subcommands, which are the stages' entries (light imports only)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class _SettingsHelp(argparse.Action):
    """``-h/--help`` of a stage subcommand: its own options, then every recipe setting, by part."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, config: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0,
                         help="show this help, with every recipe setting, and exit")
        self.config = config

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> NoReturn:
        parser.print_help()
        print("\nrecipe settings (recipe keys, or --key value on the command line):\n")
        print(settings_help(self.config))
        parser.exit()


def add_settings_help(p: argparse.ArgumentParser, config: str) -> None:
    """Give a subcommand built with ``add_help=False`` a ``--help`` that lists the stage's settings.

    ``config`` is ``"module:Class"`` of the stage config, imported only when help is asked for.
    """
    p.add_argument("-h", "--help", action=_SettingsHelp, config=config)


def settings_help(config: str) -> str:
    """The settings of stage config ``"module:Class"`` as ``--help`` sections, one per part.

    Declared by :func:`conj_train.config.values.add_settings`, as the stage's parser declares them,
    on a plain argparse parser: no transformers import for a help text.
    """
    from conj_train.config.values import add_settings

    module, _, name = config.partition(":")
    cls = getattr(importlib.import_module(module), name)
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_settings(parser, cls)
    fmt = parser._get_formatter()
    for group in parser._action_groups:
        if group._group_actions:
            fmt.start_section(group.title)
            fmt.add_text(group.description)
            fmt.add_arguments(group._group_actions)
            fmt.end_section()
    return fmt.format_help().rstrip("\n")


def load_stage_config(cls: type[T], path: str | None, overrides: Sequence[str], *, section: str,
                      fixed: dict[str, Any] | None = None) -> T:
    """Load a stage config from a flat recipe, or from ``section`` of a pipeline recipe, then overrides.

    ``fixed`` values (named command-line options) win over both.
    """
    from conj_train.config.parser import load_config
    from conj_train.config.values import read_yaml

    use_section = None
    if path is not None and Path(path).is_file() and section in read_yaml(path):
        use_section = section
    return load_config(cls, path, overrides, section=use_section, fixed=fixed)


def stage_main(command: str, argv: Sequence[str] | None = None) -> int:
    """``conj COMMAND argv``: the one parser and run of a stage, for its module's ``main`` (what
    ``accelerate launch -m conj_train.cli.<stage>``, ``conj run``'s launcher and ``scripts/*.py``
    start). ``argv`` defaults to ``sys.argv[1:]``."""
    import sys

    from conj_train.cli import main

    return main([command, *(sys.argv[1:] if argv is None else argv)])


def print_rank_summary(text: str) -> None:
    """Print a stage's summary; under a launcher every process prints its own, marked with its rank."""
    rank, world = launcher_rank_world()
    print(f"[rank {rank}] {text}" if world > 1 else text, flush=True)


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
