"""One config system for every stage: recipe YAML + ``--key value`` overrides -> stage dataclasses.

Built on transformers' :class:`~transformers.HfArgumentParser`, as TRL's ``TrlParser`` (train and
train-rm) is: a stage's settings are dataclass fields, a recipe is a flat YAML mapping of them
(alignment-handbook style), and any of them can be overridden on the command line. A stage config is
one dataclass made of parts, parsed together from the same flat keys, one name per setting:

* mixed-in parts the stage reads setting by setting (:class:`JudgeInputOptions`, :class:`EngineOptions`,
  :class:`ShardedRunOptions`);
* nested parts a core function takes whole (the filter's ``rules: PairRules`` and
  ``length: LengthRule``): their fields are recipe keys of their own, next to the stage's.

Every value, from YAML or from the command line, is typed the YAML way (``--n 4`` is an integer,
``--hint_reading=code`` a string, ``[a, b]`` a list, ``null`` None) and then checked against the
field's annotation and ``BOUNDS``: argparse cannot type ``Any``, ``dict`` or union fields, and one
check for both sources keeps their errors alike. Unknown keys are errors, not silently ignored (a
typo in an ablation must not quietly run the default); the error suggests the closest key, or the
new name of a renamed one. Reading and checking values is :mod:`conj_train.config_values`; this
module holds the shared option parts, the parser and the run-folder hash of a stage config.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from transformers import HfArgumentParser

from conj_train.config_values import check_types, flat_args, read_yaml, unknown_key_error, yaml_value
from conj_train.errors import ConjError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class ShardedRunOptions:
    """How a run of an engine stage (sampling, evaluation) is split and resumed.

    None of them changes what is generated, so they stay out of a run's config hash: a different batch
    size or shard count resumes the same run.
    """

    batch_pairs: int = 8
    shard: str | None = None
    overwrite: bool = False
    progress: bool = True
    merge_only: bool = False


@dataclass
class EngineOptions:
    """The generation engine of the stages that prompt a judge (sampling, evaluation) and its settings."""

    engine: str = "hf"
    dtype: str = "auto"
    trust_remote_code: bool = False
    # hf engine: 0 = one request per forward (a request's texts never depend on the others); above 0,
    # requests are packed up to this many rows x (prompt + new tokens): faster (bench/sample.py), and
    # texts then depend on the pack up to rounding, so it is part of the run's config.
    hf_batch_tokens: int = 0
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    threads: int | None = None


@dataclass
class JudgeInputOptions:
    """How the stages that prompt a judge (sampling, evaluation) read pairs and render prompts."""

    dataset_format: str | None = None
    dataset_config: str | None = None
    dataset_split: str | None = None
    field_map: dict[str, str] | None = None
    multi_turn: str = "context"
    max_pairs: int | None = None
    # Length-bias tests: keep only pairs whose `longer` answer ("chosen" or "rejected") has more than
    # `length_ratio` times the other's characters.
    longer: str | None = None
    length_ratio: float = 2.0
    template: str = "conj-zh"
    system_prompt: str | None = None
    swap_seed: int = 2021

    def load_records(self, source: str) -> tuple[list[dict], Any]:
        """Canonical records of ``source`` (the first ``max_pairs`` used rows) and the ingest report."""
        from conj_train.data import load_preferences

        res = load_preferences(source, format=self.dataset_format, config=self.dataset_config,
                               split=self.dataset_split, field_map=self.field_map, multi_turn=self.multi_turn)
        records = select_by_length(res.records, self.longer, self.length_ratio, source=source)
        records = records[: self.max_pairs] if self.max_pairs else records
        return records, res.report


def select_by_length(records: list[dict], longer: str | None, ratio: float, *, source: str = "data") -> list[dict]:
    """The records whose ``longer`` answer has more than ``ratio`` x the other's characters (all if None)."""
    if longer is None:
        return records
    if longer not in ("chosen", "rejected"):
        raise ConjError(f"longer must be 'chosen' or 'rejected', not {longer!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or ratio < 1:
        raise ConjError(f"length_ratio must be a number >= 1, got {ratio!r}")
    other = "rejected" if longer == "chosen" else "chosen"
    kept = [r for r in records if len(r[longer]) > ratio * len(r[other])]
    if not kept:
        raise ConjError(f"{source}: no pair has a {longer} answer over {ratio}x longer than the {other} one")
    logger.info("%s: %d of %d pairs have a %s answer over %sx longer", source, len(kept), len(records), longer, ratio)
    return kept


# Settings of the engine stages that do not change what is generated (out of their config hash).
RUNTIME_FIELDS = frozenset({f.name for f in dataclasses.fields(ShardedRunOptions)}
                           | {"threads", "gpu_memory_utilization"})

# The old names of the input fields in the config hashes of sample and warm-up run folders.
INPUT_OLD_NAMES = {"model_name_or_path": "model", "dataset_name": "dataset"}
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


class ConjParser(HfArgumentParser):
    """HfArgumentParser for a stage config dataclass and its nested parts, with YAML-typed values.

    ``ConjParser(SampleConfig).parse("recipe.yaml", ["--n", "4"])`` reads the recipe, applies the
    overrides and returns a checked ``SampleConfig``. Each setting is one ``--name`` option (grouped
    by the part that defines it in ``--help``); values are read by :func:`yaml_value` and checked by
    :func:`check_types` whatever their source. Bad input of any kind is a one-line ConjError.
    """

    def __init__(self, cls: type, **kwargs: Any) -> None:
        self.stage_cls = cls
        # setting name -> (the part whose annotation types it, the nested field holding it or None)
        self.settings: dict[str, tuple[type, str | None]] = {}
        kwargs.setdefault("allow_abbrev", False)  # "--model" must never abbreviate "--model_kind"
        kwargs.setdefault("add_help", False)
        super().__init__([cls], **kwargs)

    def error(self, message: str) -> typing.NoReturn:  # argparse would print usage and exit
        """Raise argparse's complaint as a ConjError (one line, exit 2)."""
        raise ConjError(message)

    def _add_dataclass_arguments(self, dtype: type, nested: str | None = None) -> None:
        hints = typing.get_type_hints(dtype)
        groups: dict[type, Any] = {}
        for f in dataclasses.fields(dtype):
            if not f.init:
                continue
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):  # a nested part: its settings are keys of their own
                self._add_dataclass_arguments(tp, nested=f.name)  # type: ignore[arg-type]
                continue
            if f.name in self.settings:
                raise TypeError(f"{self.stage_cls.__name__}: two settings named {f.name!r}")
            owner = next(c for c in dtype.__mro__ if f.name in inspect.get_annotations(c))
            self.settings[f.name] = (owner, nested)
            if owner not in groups:
                groups[owner] = self.add_argument_group(owner.__name__, (owner.__doc__ or "").split("\n")[0])
            spellings = {f.name, f.name.replace("_", "-"), *CLI_ALIASES.get(f.name, ())}
            groups[owner].add_argument(
                *(f"--{s}" for s in sorted(spellings, key=lambda s: (s != f.name, s))), dest=f.name,
                type=yaml_value, nargs="?", const=True, default=argparse.SUPPRESS,
                action=_YamlList if _takes_list(tp) else "store",  # a scalar given twice: the last wins
                help=f.metadata.get("help", f"(default {f.default!r})" if f.default is not dataclasses.MISSING
                                    else None))

    def parse_cli(self, argv: Sequence[str]) -> dict[str, Any]:
        """The settings given as ``--key value`` / ``--key=value`` / ``--flag`` (true)."""
        namespace, rest = self.parse_known_args(list(argv))
        for item in rest:
            if item.startswith("--") and item != "--":
                raise unknown_key_error(item[2:].split("=", 1)[0].replace("-", "_"), self.settings,
                                        "command-line options")
            raise ConjError(f"expected --key value, got {item!r}")
        return vars(namespace)

    def build(self, values: dict[str, Any], *, where: str = "config") -> Any:
        """The stage config of ``values`` (flat settings); unknown keys or bad values raise a ConjError."""
        unknown = sorted(set(values) - set(self.settings))
        if unknown:
            raise unknown_key_error(unknown[0], self.settings, where)
        for key, value in values.items():
            check_types(self.settings[key][0], {key: value}, where=where)
        top: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {}
        hints = typing.get_type_hints(self.stage_cls)
        for f in dataclasses.fields(self.stage_cls):
            if dataclasses.is_dataclass(hints[f.name]):
                nested[f.name] = {}
        for key, value in values.items():
            owner, holder = self.settings[key]
            if typing.get_origin(typing.get_type_hints(owner)[key]) is tuple:
                value = tuple(v.strip() for v in value.split(",") if v.strip()) if isinstance(value, str) else tuple(value)
            (nested[holder] if holder else top)[key] = value
        try:
            parts = {name: hints[name](**kw) for name, kw in nested.items()}
            cfg = self.stage_cls(**top, **parts)
        except (TypeError, ValueError) as e:
            raise ConjError(f"{where}: {e}") from e
        validate = getattr(cfg, "validate", None)
        if validate is not None:
            validate()
        return cfg

    def parse(self, path: str | Path | None = None, argv: Sequence[str] = (), *, section: str | None = None,
              fixed: dict[str, Any] | None = None) -> Any:
        """Recipe ``path`` (or its ``section:``), then ``argv`` overrides, then ``fixed`` values."""
        values: dict[str, Any] = {}
        where = "command-line options"
        if path is not None:
            values = read_yaml(path)
            if section is not None:
                values = values.get(section) or {}
                if not isinstance(values, dict):
                    raise ConjError(f"{path}: section {section!r} must be a mapping")
            where = f"{path}" + (f" [{section}]" if section else "")
        values = {**values, **self.parse_cli(argv), **(fixed or {})}
        return self.build(values, where=where)


def build_config(cls: type[T], values: dict[str, Any], *, where: str = "config") -> T:
    """Instantiate stage config ``cls`` from flat ``values``; unknown keys or bad values raise a ConjError."""
    return ConjParser(cls).build(values, where=where)


def load_config(cls: type[T], path: str | Path | None, overrides: Sequence[str] = (),
                *, section: str | None = None, fixed: dict[str, Any] | None = None) -> T:
    """Load a recipe (optionally one ``section:`` of it) into ``cls`` and apply CLI overrides."""
    return ConjParser(cls).parse(path, overrides, section=section, fixed=fixed)


def settings_hash(cfg: Any, *, exclude: Iterable[str], old_names: dict[str, str] | None = None,
                  **extra: Any) -> str:
    """Hash of ``cfg``'s settings not in ``exclude`` (plus ``extra``): a run folder's config claim.

    ``old_names`` maps renamed fields to the names they were hashed under before, so a run folder
    written before a rename still resumes under the same settings.
    """
    from conj_train.io import stable_hash

    skip, old = set(exclude), old_names or {}
    d = {old.get(k, k): v for k, v in config_to_dict(cfg).items() if k not in skip}
    return stable_hash({**d, **extra})


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A stage config as one flat dict of its settings, nested parts included (manifests and hashes)."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(cfg).items():
        if dataclasses.is_dataclass(getattr(cfg, key)):
            out.update(value)
        else:
            out[key] = value
    return out
