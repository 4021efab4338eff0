"""The ``conj`` command line.

Each subcommand lives in its own module under ``conj_train.cli`` and exposes
``register(subparsers)``. Those modules import nothing heavy at top level (no torch, transformers,
trl, datasets): ``conj --help`` and ``conj CMD --help`` must answer in well under a second.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from conj_train import __version__
from conj_train.errors import ConjError

# Subcommand modules, in the order ``conj --help`` lists them.
COMMAND_MODULES = ("demo", "recipe", "tiny_model", "real_model", "data", "sample", "filter", "train", "train_rm",
                   "eval", "card", "run", "ablate")


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (``conj CMD: error: ...``) instead of the usage block
    and the error; ``--help`` still prints the usage. Subcommand parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {short_line(message)} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand registered."""
    parser = OneLineParser(
        prog="conj",
        description="Train generative LLM judges from preference data (Con-J).",
    )
    parser.add_argument("--version", action="version", version=f"conj-train {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"conj_train.cli.{name}").register(sub)
    return parser


MAX_ERROR_CHARS = 600


def short_line(message: str) -> str:
    """An error message as one line of at most about :data:`MAX_ERROR_CHARS` characters: a message
    built from user input (a path, a list of missing shards) must not flood the terminal. The middle
    goes: the start says where, the end usually says what is wrong."""
    line = " ".join(message.split())
    if len(line) <= MAX_ERROR_CHARS:
        return line
    half = MAX_ERROR_CHARS // 2 - 20
    return f"{line[:half]} ...({len(line) - 2 * half:,} chars)... {line[-half:]}"


def _printable_output() -> None:
    """Print any path: a file name that is not valid UTF-8 (lone surrogates in Python) is shown with
    backslash escapes instead of stopping the command with an encoding error."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        # A stream that cannot change (closed, or not a text file) is left as it is.
        if reconfigure is not None:
            with contextlib.suppress(OSError, ValueError):
                reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``conj`` console script; returns the exit code."""
    _printable_output()
    parser = build_parser()
    try:  # a usage error (one line, OneLineParser) or --help / --version: argparse's exit code
        args, extra = parser.parse_known_args(argv)
        if extra and not getattr(args, "accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    args.overrides = extra
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConjError as e:
        print(f"conj {args.command}: error: {short_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # the system refused a file operation (disk full, read-only, name too long...)
        where = f": {e.filename}" if e.filename else ""
        print(f"conj {args.command}: error: {short_line(f'{e.strerror or e}{where}')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
