"""Recipe loading: flat YAML files -> stage config dataclasses, with ``--key value`` overrides.

Recipes are flat, one per experiment (alignment-handbook style). Unknown keys are errors, not
silently ignored: a typo in an ablation must not quietly run the default.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from conj_train.errors import ConjError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class ShardedRunOptions:
    """Runtime options shared by the stages that generate with an engine (sampling, evaluation).

    None of them changes what is generated, so they stay out of a run's config hash: a different batch
    size or shard count resumes the same run.
    """

    batch_pairs: int = 8
    threads: int | None = None
    shard: str | None = None
    overwrite: bool = False
    progress: bool = True
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    merge_only: bool = False


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
    engine: str = "hf"
    dtype: str = "auto"
    trust_remote_code: bool = False
    # hf engine: 0 = one request per forward (a request's texts never depend on the others); above 0,
    # requests are packed up to this many rows x (prompt + new tokens): faster (bench/sample.py), and
    # texts then depend on the pack up to rounding, so it is part of the run's config.
    hf_batch_tokens: int = 0

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


RUNTIME_FIELDS = frozenset(f.name for f in dataclasses.fields(ShardedRunOptions)) - {
    "tensor_parallel_size", "max_model_len"}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing, unreadable or non-mapping file is a ConjError."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConjError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConjError(f"{p}: not UTF-8 text (byte {e.start}); save the recipe as UTF-8") from None
    except yaml.YAMLError as e:
        raise ConjError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConjError(f"{p}: a recipe must be a YAML mapping of key: value")
    return data


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Turn ``["--n", "4", "--hint_reading=code"]`` into ``{"n": 4, "hint_reading": "code"}``.

    Values are read as YAML scalars, so numbers, booleans, null and ``[a, b]`` lists keep their type.
    """
    import yaml

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
        try:
            out[key.replace("-", "_")] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key.replace("-", "_")] = raw
    return out


# Lower (and upper) bounds of numeric keys, by name, for every stage config that has the key. A
# value outside them would otherwise be read in a surprising way (max_pairs -5 = "all but 5") or fail
# deep inside a run.
BOUNDS: dict[str, tuple[float, float | None]] = {
    **dict.fromkeys(("batch_pairs", "max_new_tokens", "samples", "max_pairs", "tensor_parallel_size",
                     "threads", "max_model_len", "per_device_train_batch_size", "max_length",
                     "reliability_bins", "probability_batch_tokens", "rm_batch_size", "logging_steps",
                     "cut_tokens", "cut_trigger_chars", "forced_negative_tokens"), (1, None)),
    **dict.fromkeys(("n", "hint_samples", "top_k", "max_best_of_n", "max_pos_unknown", "max_hint",
                     "hf_batch_tokens", "temperature", "hint_temperature", "warmup_steps",
                     "weight_decay", "seed", "swap_seed", "verdict_seed"), (0, None)),
    **dict.fromkeys(("top_p", "hint_top_p", "gpu_memory_utilization"), (1e-9, 1)),
    "repetition_penalty": (1e-9, None),
    "learning_rate": (1e-12, None),
}


def _type_name(tp: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
             dict: "a mapping", list: "a list", type(None): "null"}
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


def check_types(cls: type, values: dict[str, Any], *, where: str) -> None:
    """Raise a ConjError naming the first key whose value has the wrong type or is out of bounds."""
    hints = typing.get_type_hints(cls)
    for key, value in values.items():
        tp = hints.get(key, Any)
        if not _has_type(value, tp):
            raise ConjError(f"{where}: {key} must be {_type_name(tp)}, got {value!r}"
                            + (" (quote it to pass a string)" if str in _flat_args(tp) else ""))
        if key in BOUNDS and isinstance(value, int | float) and not isinstance(value, bool):
            low, high = BOUNDS[key]
            if value < low or (high is not None and value > high):
                what = "> 0" if 0 < low < 1e-6 else f">= {low:g}"
                what += f" and <= {high:g}" if high is not None else ""
                none = " (or null)" if type(None) in _flat_args(tp) else ""
                raise ConjError(f"{where}: {key} must be {what}{none}, got {value!r}")


def _flat_args(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def build_config(cls: type[T], values: dict[str, Any], *, where: str = "config") -> T:
    """Instantiate dataclass ``cls`` from ``values``; unknown keys or wrongly typed values raise a ConjError."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(key, sorted(names), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConjError(f"unknown key {key!r} in {where}{hint}")
    check_types(cls, values, where=where)
    try:
        cfg = cls(**values)
    except TypeError as e:
        raise ConjError(f"{where}: {e}") from e
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        validate()
    return cfg


def load_config(cls: type[T], path: str | Path | None, overrides: Sequence[str] = (),
                *, section: str | None = None) -> T:
    """Load a recipe (optionally one ``section:`` of it) into ``cls`` and apply CLI overrides."""
    values: dict[str, Any] = {}
    where = "command-line options"
    if path is not None:
        values = read_yaml(path)
        if section is not None:
            values = values.get(section) or {}
            if not isinstance(values, dict):
                raise ConjError(f"{path}: section {section!r} must be a mapping")
        where = f"{path}" + (f" [{section}]" if section else "")
    values = {**values, **parse_overrides(overrides)}
    return build_config(cls, values, where=where)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict (for manifests and hashes)."""
    return dataclasses.asdict(cfg)
