"""Read raw rows from a local file, a folder, a ``save_to_disk`` folder, or the Hugging Face Hub.

JSON and JSON lines are read with the stdlib ``json`` module, not Arrow: real files mix value types
(PandaLM has JSON booleans where answers should be strings), which Arrow's schema inference rejects
and which we want to count as skipped rows instead.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError

DATA_SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet", ".csv")
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


@dataclass
class Table:
    """Rows of one file (or Hub split). ``groups[i]`` is row i's group (dict-of-lists key) or None."""

    name: str
    rows: list[Any]
    groups: list[str | None]


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in DATA_SUFFIXES if name.endswith(s)), "")


def _label(path: Path) -> str:
    """A file's name without its data suffix: LLMBar 'natural.json' -> 'natural'."""
    return path.name[: len(path.name) - len(_suffix(path))] or path.name


def _json_lines(text: str, path: Path) -> list[Any]:
    rows = []
    # "\n" only: str.splitlines also breaks at U+2028, U+0085... which JSON allows raw inside a string.
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ConjError(f"{path}: line {lineno} is not valid JSON ({e.msg})") from None
    return rows


def _read_json(path: Path, lines_first: bool) -> tuple[list[Any], list[str | None]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    if lines_first:
        data: Any = _json_lines(text, path)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = _json_lines(text, path)  # JSON-lines content in a .json file
    if isinstance(data, list):
        return data, [None] * len(data)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        rows, groups = [], []
        for key, part in data.items():  # e.g. EvalBiasBench: bias type -> rows
            rows.extend(part)
            groups.extend([str(key)] * len(part))
        return rows, groups
    raise ConjError(f"{path}: expected a JSON list of rows or a dict of lists, got {type(data).__name__}")


def read_file(path: Path) -> Table:
    """Read one data file into a :class:`Table`; ConjError on anything unreadable."""
    suffix = _suffix(path)
    try:
        if suffix in (".json", ".json.gz", ".jsonl", ".jsonl.gz"):
            rows, groups = _read_json(path, lines_first=suffix.startswith(".jsonl"))
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
            groups = [None] * len(rows)
        elif suffix == ".csv":
            with open(path, encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
            groups = [None] * len(rows)
        else:
            raise ConjError(f"{path}: unsupported file type (use one of {', '.join(DATA_SUFFIXES)})")
    except ConjError:
        raise
    except Exception as e:  # decoding, gzip, parquet and csv errors all mean "not readable data"
        raise ConjError(f"{path}: cannot read ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return Table(_label(path), rows, groups)


def _dataset_rows(ds: Any, name: str, split: str | None) -> Table:
    """Rows of a ``datasets`` Dataset, or of one split of a DatasetDict (default "train").

    A single Dataset ignores ``split``: the Hub loader has already applied it.
    """
    import datasets

    if isinstance(ds, datasets.DatasetDict | datasets.IterableDatasetDict):
        splits = list(ds.keys())
        chosen = split or ("train" if "train" in splits else None)
        if chosen not in splits:
            raise ConjError(f"{name}: choose a split with --split (available: {', '.join(splits)})")
        ds = ds[chosen]
    rows = [dict(r) for r in ds]
    return Table(name, rows, [None] * len(rows))


def _from_hub(source: str, config: str | None, split: str | None) -> Table:
    import datasets

    try:
        ds = datasets.load_dataset(source, config, split=split)
    except Exception as e:  # offline, unknown id, missing config/split: one line for the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ConjError(f"cannot load {source!r} from the Hugging Face Hub: {first}") from None
    return _dataset_rows(ds, source, split)


def looks_local(source: str) -> bool:
    """Whether ``source`` names a local file or folder (a data suffix, a path start, not a Hub id)."""
    return bool(_suffix(Path(source))) or source.startswith((".", "/", "~")) or not _HUB_ID.match(source)


def read_source(source: str, *, config: str | None = None, split: str | None = None) -> list[Table]:
    """Every table a source names: one file, the data files of a folder, a saved dataset, or a Hub id."""
    path = Path(source).expanduser()
    if path.is_file():
        tables = [read_file(path)]
    elif path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            import datasets

            try:
                ds = datasets.load_from_disk(str(path))
            except Exception as e:
                raise ConjError(f"{path}: cannot load the saved dataset ({str(e)[:200]})") from None
            tables = [_dataset_rows(ds, _label(path), split)]
        else:
            files = sorted(p for p in path.rglob("*") if p.is_file() and _suffix(p)
                           and not any(part.startswith(".") for part in p.relative_to(path).parts))
            if not files:
                raise ConjError(f"{path}: folder has no data files ({', '.join(DATA_SUFFIXES)})")
            tables = [read_file(p) for p in files]
            for p, t in zip(files, tables, strict=True):
                t.name = str(p.relative_to(path).with_name(_label(p)))
    elif looks_local(source):
        raise ConjError(f"{source}: no such file or folder")
    else:
        tables = [_from_hub(source, config, split)]
    if not any(t.rows for t in tables):
        raise ConjError(f"{source}: no rows")
    return tables
