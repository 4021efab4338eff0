"""The judge's preference pairs, read from the filter stage's output and made ready for TRL.

Pairs whose tokenized prompt (+ judgment) exceeds ``max_length`` are removed here, each under one
counted reason, because TRL drops fully truncated prompts silently; :class:`SplitCounts` keeps the
account of every split. Every derived dataset is backed by Arrow files in ``<output_dir>/_data_cache``
(never in the filter's folder), which ``precompute_ref_log_probs`` needs when several processes share
the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conj_train.data.report import percentiles
from conj_train.errors import ConjError
from conj_train.io import read_json
from conj_train.train.args import TrainScriptArguments
from conj_train.train.machine import main_process_first

# Each removed pair is counted under the first of these it meets (in this order).
LENGTH_REASONS = ("prompt_too_long", "chosen_too_long", "rejected_too_long")
CACHE_DIR = "_data_cache"  # "_"-prefixed: Trainer.push_to_hub skips it
PAIR_COLUMNS = ("prompt", "chosen", "rejected")
_LEN_COLUMNS = ("_prompt_len", "_chosen_seq_len", "_rejected_seq_len")


@dataclass
class SplitCounts:
    """What happened to one split's pairs: ``read = not_selected + over_cap + sum(dropped) + used``."""

    read: int = 0
    not_selected: int = 0  # pair_type outside pair_types
    over_cap: int = 0  # beyond max_train_pairs / max_eval_pairs
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LENGTH_REASONS, 0))
    truncated: int = 0  # kept with the judgment's end cut (overlong="truncate")
    used: int = 0
    tokens: dict[str, int] = field(default_factory=dict)  # sequence-length percentiles of used pairs

    def check(self) -> None:
        """Assert the identity above (a bug, not a user error, if it fails)."""
        total = self.not_selected + self.over_cap + sum(self.dropped.values()) + self.used
        assert total == self.read, f"split counts do not add up: {asdict(self)}"


def resolve_dataset(path: str | None) -> tuple[Path, Path | None]:
    """(DatasetDict folder, filter report or None) for a filter output folder or a saved DatasetDict."""
    if not path:
        raise ConjError("dataset_name is required: the filter stage's output folder")
    p = Path(path)
    if (p / "dataset" / "dataset_dict.json").is_file():
        d = p / "dataset"
    elif (p / "dataset_dict.json").is_file():
        d = p
    else:
        raise ConjError(f"{p}: neither a filter output folder (dataset/dataset_dict.json) nor a DatasetDict "
                        "saved with save_to_disk")
    report = next((r for r in (d.parent / "report.json", d / "report.json") if r.is_file()), None)
    return d, report


def _ids(tokenizer: Any, messages: list[dict], **kwargs: Any) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)
    return list(out["input_ids"])


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def pair_lengths(example: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """The pair's turns as data (special-token strings made plain, :func:`conj_train.prompts.chat.plain_messages`)
    and their token lengths as TRL computes them: prompt (shared prefix) and prompt+chosen /
    prompt+rejected."""
    from conj_train.prompts.chat import plain_messages

    turns = {k: plain_messages(tokenizer, example[k]) for k in ("prompt", "chosen", "rejected")}
    prompt = _ids(tokenizer, turns["prompt"], add_generation_prompt=True)
    with_chosen = _ids(tokenizer, turns["prompt"] + turns["chosen"])
    with_rejected = _ids(tokenizer, turns["prompt"] + turns["rejected"])
    n_prompt = min(_common_prefix(prompt, with_chosen), _common_prefix(prompt, with_rejected))
    return {**turns, "_prompt_len": n_prompt, "_chosen_seq_len": len(with_chosen),
            "_rejected_seq_len": len(with_rejected)}


def length_reason(n_prompt: int, n_chosen: int, n_rejected: int, max_length: int | None,
                  overlong: str) -> tuple[str | None, bool]:
    """(drop reason or None, truncated) for one pair's token lengths."""
    if max_length is None:
        return None, False
    if n_prompt >= max_length:
        return "prompt_too_long", False
    too_long = [r for r, n in (("chosen_too_long", n_chosen), ("rejected_too_long", n_rejected))
                if n > max_length]
    if not too_long:
        return None, False
    return (None, True) if overlong == "truncate" else (too_long[0], False)


def prepare_split(ds: Any, tokenizer: Any, *, name: str, cache_dir: Path, max_length: int | None,
                  overlong: str, pair_types: Sequence[str] | None, cap: int | None,
                  num_proc: int | None = None) -> tuple[Any, SplitCounts]:
    """Select, cap and length-filter one split; returns a file-backed dataset and its counts."""
    from datasets.fingerprint import Hasher

    counts = SplitCounts(read=ds.num_rows)
    if pair_types:
        if "pair_type" not in ds.column_names:
            raise ConjError(f"pair_types is set but the {name} split has no pair_type column")
        wanted = set(pair_types)
        keep = [i for i, t in enumerate(ds["pair_type"]) if t in wanted]
        counts.not_selected = ds.num_rows - len(keep)
        ds = ds.select(keep)
    if cap is not None and ds.num_rows > cap:
        counts.over_cap = ds.num_rows - cap
        ds = ds.select(range(cap))
    if ds.num_rows == 0:
        counts.check()
        return ds, counts
    # The lengths' cache file lives in the run's folder, so every later map (TRL's tokenization, the
    # precomputed reference log-probs) writes there too, and processes share it by name.
    # "plain-1": the map also makes the turns plain text (a cache of older runs lacks that).
    key = Hasher.hash((ds._fingerprint, tokenizer.chat_template, tokenizer.name_or_path, len(tokenizer), "plain-1"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    with main_process_first():
        ds = ds.map(pair_lengths, fn_kwargs={"tokenizer": tokenizer}, desc=f"Measuring {name} pairs",
                    cache_file_name=str(cache_dir / f"{name}-lengths-{key}.arrow"), new_fingerprint=key,
                    num_proc=num_proc)
    lens = ds.select_columns(list(_LEN_COLUMNS)).to_dict()
    keep, seq_lens = [], []
    for i, (p, c, r) in enumerate(zip(*(lens[k] for k in _LEN_COLUMNS), strict=True)):
        reason, truncated = length_reason(p, c, r, max_length, overlong)
        if reason:
            counts.dropped[reason] += 1
            continue
        counts.truncated += truncated
        keep.append(i)
        seq_lens.append(max(c, r))
    if len(keep) < ds.num_rows:
        ds = ds.select(keep)
    counts.used = ds.num_rows
    counts.tokens = percentiles(seq_lens)
    counts.check()
    return ds.remove_columns(list(_LEN_COLUMNS)), counts


def load_pair_splits(script_args: TrainScriptArguments, tokenizer: Any, max_length: int | None,
                     cache_dir: Path, num_proc: int | None = None
                     ) -> tuple[Any, Any | None, dict[str, SplitCounts], dict | None]:
    """(train, eval or None, counts per split, filter report or None) ready for TRL."""
    from datasets import DatasetDict, load_from_disk

    ddir, report_path = resolve_dataset(script_args.dataset_name)
    dd = load_from_disk(str(ddir))
    if not isinstance(dd, DatasetDict):
        raise ConjError(f"{ddir}: expected a DatasetDict (splits {script_args.dataset_train_split!r}, "
                        f"{script_args.dataset_test_split!r}), found a single Dataset")
    if script_args.dataset_train_split not in dd:
        raise ConjError(f"{ddir}: no split {script_args.dataset_train_split!r} (has {', '.join(dd)})")
    for split, ds in dd.items():
        missing = [c for c in PAIR_COLUMNS if c not in ds.column_names]
        if missing:
            raise ConjError(f"{ddir} [{split}]: missing column(s) {', '.join(missing)}; expected TRL's "
                            "preference format (prompt, chosen, rejected)")
    common = {"tokenizer": tokenizer, "cache_dir": cache_dir, "max_length": max_length,
              "overlong": script_args.overlong, "pair_types": script_args.pair_types, "num_proc": num_proc}
    train, counts = prepare_split(dd[script_args.dataset_train_split], name="train",
                                  cap=script_args.max_train_pairs, **common)
    all_counts = {"train": counts}
    if counts.used == 0:
        raise ConjError(f"{ddir}: no training pairs left ({asdict(counts)})")
    eval_ds = None
    if script_args.dataset_test_split in dd and dd[script_args.dataset_test_split].num_rows:
        eval_ds, counts = prepare_split(dd[script_args.dataset_test_split], name="eval",
                                        cap=script_args.max_eval_pairs, **common)
        all_counts["eval"] = counts
        eval_ds = eval_ds if eval_ds.num_rows else None
    report = read_json(report_path) if report_path else None
    return train, eval_ds, all_counts, report

