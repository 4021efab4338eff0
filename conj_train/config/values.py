"""Recipe values: reading YAML recipes and command-line strings, type and bound checks, key hints.

:func:`read_yaml` reads a recipe into a mapping, :func:`yaml_value` types a command-line string the
YAML way, :func:`check_types` checks a value against a field's annotation and :data:`BOUNDS`,
:func:`unknown_key_error` words an unknown key with :func:`did_you_mean`'s hint, and
:func:`add_settings` declares a stage config's settings as command-line options. The parser
(:mod:`conj_train.config.parser`), the training stages (TRL's parser, :mod:`conj_train.train.args`),
the pipeline runner and ``conj CMD --help`` use them, so every stage words a bad key or value alike.
Only the standard library (and PyYAML) is imported here: ``--help`` must not load transformers.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import math
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError

# Keys renamed when every stage took TRL's input names: an old recipe's key gets the new name as its hint.
RENAMED = {"model": "model_name_or_path", "base_model": "model_name_or_path", "dataset": "dataset_name",
           "sample_dir": "dataset_name", "samples": "n", "output": "output_dir"}


# A recipe is a few hundred values; YAML aliases can make 400 bytes stand for billions of them (an
# "alias bomb"), which a later walk over the values (type checks, hashing) would take forever on.
MAX_YAML_VALUES = 100_000
MAX_RECIPE_BYTES = 10_000_000


def _expanded_size(node: Any, memo: dict[int, int], limit: int) -> int:
    """How many values ``node`` stands for once every alias is expanded (stops early past ``limit``)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = limit + 1  # a node reached again while it is counted: a recursive alias
    size = 1
    children = node.value if isinstance(node.value, list) else []
    for child in children:
        for sub in child if isinstance(child, tuple) else (child,):  # a mapping's (key, value) pairs
            size += _expanded_size(sub, memo, limit)
            if size > limit:
                memo[key] = size
                return size
    memo[key] = size
    return size


def safe_load_bounded(text: str) -> Any:
    """``yaml.safe_load`` of ``text``, refusing (ConjError) a document whose aliases expand past
    :data:`MAX_YAML_VALUES` values or that refers to itself."""
    import yaml

    class _BoundedLoader(yaml.SafeLoader):
        def construct_document(self, node: Any) -> Any:
            if _expanded_size(node, {}, MAX_YAML_VALUES) > MAX_YAML_VALUES:
                raise ConjError(f"more than {MAX_YAML_VALUES:,} values once its aliases are expanded (or an "
                                "alias refers to itself); write the values out")
            return super().construct_document(node)

    loader = _BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable, oversized or non-mapping file is a ConjError."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConjError(f"config file not found: {p}")
    if p.stat().st_size > MAX_RECIPE_BYTES:
        raise ConjError(f"{p}: a recipe of {p.stat().st_size:,} bytes (more than {MAX_RECIPE_BYTES:,}); is it a recipe?")
    try:
        data = safe_load_bounded(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConjError(f"{p}: not UTF-8 text (byte {e.start}); save the recipe as UTF-8") from None
    except ConjError as e:
        raise ConjError(f"{p}: {e}") from None
    except yaml.YAMLError as e:
        raise ConjError(f"{p}: not valid YAML ({str(e).splitlines()[0][:200]})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConjError(f"{p}: a recipe must be a YAML mapping of key: value")
    return data


def yaml_value(raw: str) -> Any:
    """A command-line string read as a YAML scalar or flow list (``4``, ``true``, ``null``, ``[a, b]``).

    An empty argument (``--system_prompt ""``) is the empty string, not null: YAML reads "" as null,
    which would silently turn "an empty system turn" into "the chat template's default one"."""
    import yaml

    if raw == "":
        return ""

    try:
        return safe_load_bounded(raw)
    except yaml.YAMLError:
        return raw


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["--sample.n", "4", "--x=code"]`` into ``{"sample.n": 4, "x": "code"}`` (pipeline overrides).

    Values are typed by :func:`yaml_value`; a key without a value is ``true``. Stage options go
    through :class:`ConjParser`, which knows the keys; this reads the dotted ``--STAGE.KEY`` ones.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(items):
        item = items[i]
        if not item.startswith("--") or item == "--":
            raise ConjError(f"expected --key value, got {item!r}")
        key = item[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        elif i + 1 < len(items) and not items[i + 1].startswith("--"):
            raw = items[i + 1]
            i += 2
        else:
            raw = "true"
            i += 1
        out[key.replace("-", "_")] = yaml_value(raw)
    return out


# Lower (and upper) bounds of numeric keys, by name, for every stage config that has the key. A
# value outside them would otherwise be read in a surprising way (max_pairs -5 = "all but 5") or fail
# deep inside a run.
BOUNDS: dict[str, tuple[float, float | None]] = {
    **dict.fromkeys(("batch_pairs", "max_new_tokens", "max_pairs", "tensor_parallel_size",
                     "threads", "max_model_len", "per_device_train_batch_size", "max_length",
                     "reliability_bins", "probability_batch_tokens", "rm_batch_size", "logging_steps",
                     "cut_tokens", "cut_trigger_chars", "forced_negative_tokens", "max_concurrency"), (1, None)),
    **dict.fromkeys(("n", "hint_samples", "top_k", "max_best_of_n", "max_pos_unknown", "max_hint",
                     "hf_batch_tokens", "temperature", "hint_temperature", "warmup_steps",
                     "weight_decay", "seed", "swap_seed", "verdict_seed", "request_retries"), (0, None)),
    "request_timeout": (1e-9, None),
    **dict.fromkeys(("top_p", "hint_top_p", "gpu_memory_utilization"), (1e-9, 1)),
    "repetition_penalty": (1e-9, None),
    "learning_rate": (1e-12, None),
}


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             dict: "a mapping", list: "a list", tuple: "a list", type(None): "null"}
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return names.get(origin or tp, getattr(tp, "__name__", str(tp)))


def _has_type(value: Any, tp: Any) -> bool:
    """Whether a YAML value fits a field's annotation (bool is not a number; int is a float)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is tuple:  # tuple[str, ...]: a YAML list (or "a,b"), made a tuple by ConjParser
        item = typing.get_args(tp)[0]
        return (item is str and isinstance(value, str)) or (
            isinstance(value, list | tuple) and all(_has_type(v, item) for v in value))
    if origin is list or tp is list:
        args = typing.get_args(tp)
        if args == (str,) and isinstance(value, str):
            return True  # "a,b": split by the stage's validate()
        return isinstance(value, list) and all(_has_type(v, args[0]) for v in value) if args else isinstance(
            value, list)
    if origin is dict or tp is dict:
        args = typing.get_args(tp)
        return isinstance(value, dict) and (not args or all(
            _has_type(k, args[0]) and _has_type(v, args[1]) for k, v in value.items()))
    return True  # a type this check does not know: the dataclass's own validate() decides


def _is_text(value: str) -> bool:
    """Whether ``value`` can be written as UTF-8 (a lone surrogate from ``"\\ud800"`` in YAML cannot)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_types(cls: type, values: dict[str, Any], *, where: str) -> None:
    """Raise a ConjError naming the first key whose value has the wrong type or is out of bounds."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        tp = hints.get(key, Any)
        if not _has_type(value, tp):
            raise ConjError(f"{where}: {key} must be {_type_name(tp)}, got {value!r}"
                            + (" (quote it to pass a string)" if str in flat_args(tp) else ""))
        if isinstance(value, str) and not _is_text(value):
            raise ConjError(f"{where}: {key} is not valid text (a lone surrogate such as \\ud800)")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConjError(f"{where}: {key} must be a finite number, got {value!r}")
        if key in BOUNDS and isinstance(value, int | float) and not isinstance(value, bool):
            low, high = BOUNDS[key]
            if value < low or (high is not None and value > high):
                what = "> 0" if 0 < low < 1e-6 else f">= {low:g}"
                what += f" and <= {high:g}" if high is not None else ""
                none = " (or null)" if type(None) in flat_args(tp) else ""
                raise ConjError(f"{where}: {key} must be {what}{none}, got {value!r}")


def flat_args(tp: Any) -> tuple[Any, ...]:
    """The members of a union annotation, or ``(tp,)``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def did_you_mean(key: str, names: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` with a renamed key's new name or the closest known key, or ""."""
    names = sorted(names)
    new = RENAMED.get(key)
    close = [new] if new in names else difflib.get_close_matches(key, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_key_error(key: str, names: Iterable[str], where: str) -> ConjError:
    """The error for an unknown key in ``where``, with :func:`did_you_mean`'s hint."""
    return ConjError(f"unknown key {key!r} in {where}{did_you_mean(key, names)}")


def reject_leftover_args(rest: Iterable[str], names: Iterable[str]) -> None:
    """Refuse what an argument parser left over: an unknown ``--key`` (with the hint) or a stray value."""
    for item in rest:
        if item.startswith("--") and item != "--":
            raise unknown_key_error(item[2:].split("=", 1)[0].replace("-", "_"), names, "command-line options")
        raise ConjError(f"expected --key value, got {item!r}")


# Short command-line spellings of the input names (``conj sample --model M --output DIR``); recipes
# and dataclasses use the long name only.
CLI_ALIASES = {"model_name_or_path": ("model",), "dataset_name": ("dataset",), "output_dir": ("output",)}


class _YamlList(argparse.Action):
    """Store a YAML-typed value of a field that takes a list: ``--model a --model b`` collects both."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if self.dest in vars(namespace):
            old = getattr(namespace, self.dest)
            values = [*(old if isinstance(old, list) else [old]), *(values if isinstance(values, list) else [values])]
        setattr(namespace, self.dest, values)


def _takes_list(tp: Any) -> bool:
    return any(a is list or typing.get_origin(a) in (list, tuple) for a in flat_args(tp))


def add_settings(parser: argparse.ArgumentParser, cls: type, *, nested: str | None = None,
                 settings: dict[str, tuple[type, str | None]] | None = None,
                 ) -> dict[str, tuple[type, str | None]]:
    """Declare every setting of stage config ``cls`` as ``--name`` options of ``parser``.

    One argument group per part that defines settings (its ``--help`` section), nested parts
    included; values are typed by :func:`yaml_value` and left unset unless given. Returns setting
    name -> (the part whose annotation types it, the nested field holding it or None); ``settings``
    (filled in place) holds those declared before, for a nested part.
    """
    settings = {} if settings is None else settings
    hints = typing.get_type_hints(cls)
    groups: dict[type, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):  # a nested part: its settings are keys of their own
            add_settings(parser, tp, nested=f.name, settings=settings)  # type: ignore[arg-type]
            continue
        if f.name in settings:
            raise TypeError(f"{cls.__name__}: two settings named {f.name!r}")
        owner = next(c for c in cls.__mro__ if f.name in inspect.get_annotations(c))
        settings[f.name] = (owner, nested)
        if owner not in groups:
            groups[owner] = parser.add_argument_group(owner.__name__, (owner.__doc__ or "").split("\n")[0])
        spellings = {f.name, f.name.replace("_", "-"), *CLI_ALIASES.get(f.name, ())}
        groups[owner].add_argument(
            *(f"--{s}" for s in sorted(spellings, key=lambda s: (s != f.name, s))), dest=f.name,
            type=yaml_value, nargs="?", const=True, default=argparse.SUPPRESS, metavar="VALUE",
            action=_YamlList if _takes_list(tp) else "store",  # a scalar given twice: the last wins
            help=setting_help(f))
    return settings


def setting_help(f: dataclasses.Field) -> str | None:
    """A setting's ``--help`` line: its ``metadata["help"]`` text, then its default.

    ``%`` is doubled: argparse formats help strings with ``%`` (``5%`` would break ``--help``)."""
    text = f.metadata.get("help", "")
    if f.default is not dataclasses.MISSING:
        text = f"{text} (default {f.default!r})".strip()
    return text.replace("%", "%%") or None
