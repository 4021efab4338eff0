"""User-facing errors.

Anything raised as :class:`ConjError` is a problem with the user's input or environment (a missing
file, an unknown format, a bad config key). The CLI prints it as one line and exits with code 2;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConjError(Exception):
    """A user error: printed as one line by the CLI, exit code 2."""

    exit_code = 2


def loading_errors() -> tuple[type[BaseException], ...]:
    """What ``from_pretrained`` raises for a missing, broken or foreign model folder (not a bug here):
    OSError (no file), ValueError (unknown or remote-code config), SafetensorError (truncated weights)."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:
        pass
    return tuple(errors)
