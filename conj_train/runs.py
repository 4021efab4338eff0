"""Run folders: output-path checks, the claim a folder carries from its first record, shard locks, and
content fingerprints of inputs.

A stage that writes records into a folder (sample, evaluate) or builds a folder (filter, warmup)
relies on three promises, all kept here:

* a folder holds the output of one config and one version of the input data: the shard's manifest
  (its *claim*) is written with both hashes before the first record, so even a run killed before it
  finished is never resumed under another config or other data;
* one process writes a shard at a time: :func:`shard_lock` takes an exclusive ``flock`` on
  ``locks/<shard>.lock`` (released by the kernel when the process dies, so kill -9 leaves no stale
  lock) and refuses a second run with one line;
* an input is known by its content: :func:`data_fingerprint` hashes a file's bytes (a folder's files),
  :func:`records_fingerprint` the canonical records a stage actually uses.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError
from conj_train.io import atomic_write_json, file_hash, read_json, stable_hash

LOCKS = "locks"


# --- output paths --------------------------------------------------------------------------------


def _writable_parent(path: Path) -> None:
    """Raise unless ``path``'s nearest existing ancestor is a writable folder."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConjError(f"{path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConjError(f"{path}: {parent} is not writable")


def check_output_dir(path: str | Path, *, what: str = "output_dir") -> Path:
    """``path`` as a folder this process can create or write into; otherwise a one-line ConjError."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConjError(f"{what} {p} is a file, not a folder")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConjError(f"{what} {p} is not writable")
    else:
        _writable_parent(p)
    return p


def check_output_file(path: str | Path, *, inputs: Sequence[str | Path] = ()) -> Path:
    """``path`` as a file this process can write, and none of ``inputs`` (writing it would lose them)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ConjError(f"output {p} is a folder; give a file path")
    for src in inputs:
        s = Path(src).expanduser()
        if s.exists() and p.exists() and s.resolve() == p.resolve():
            raise ConjError(f"output {p} is the input file; writing it would overwrite the input")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise ConjError(f"output {p} is not writable")
    else:
        _writable_parent(p)
    return p


# --- input fingerprints --------------------------------------------------------------------------


def data_fingerprint(source: str | Path) -> str:
    """A content hash of a data source: a file's bytes, a folder's files (names + bytes).

    Anything else (a Hub dataset id) is known by its name only. Cheap: one read of the bytes.
    """
    p = Path(source).expanduser()
    if p.is_file():
        return file_hash(p)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and LOCKS not in f.relative_to(p).parts)
        return stable_hash([[str(f.relative_to(p)), file_hash(f)] for f in files])
    return stable_hash(str(source))


def records_fingerprint(ids: Iterable[str]) -> str:
    """A content hash of the records a stage uses, from their ids (content hashes of each pair)."""
    return stable_hash(sorted(ids))


# --- claims and locks ----------------------------------------------------------------------------


def claim_shard(run_dir: Path, manifest: Path, *, config_hash: str, data_hash: str, overwrite: bool,
                stage: str, extra: dict[str, Any] | None = None, records: Sequence[Path] = ()) -> dict | None:
    """Make ``manifest`` (one shard's) claim ``run_dir`` for this config and data before any record.

    Returns the shard's manifest when this exact run already holds it (finished or not). A shard of
    another config or data, or records with no claim (an older layout, a foreign folder), are refused
    unless ``overwrite``, which clears them first (see :func:`_clear_for`).
    """
    merged = run_dir / "manifest.json"
    claims = [read_json(p) for p in (manifest, merged) if p.exists()]
    # data_hash missing: a claim written before data hashes existed, taken to be for this data.
    stale = any(c.get("config_hash") != config_hash or c.get("data_hash", data_hash) != data_hash
                for c in claims)
    orphan = not manifest.exists() and any(r.exists() and r.stat().st_size for r in records)
    if stale or orphan:
        if not overwrite:
            why = ("a different config or other input data" if stale
                   else "records without a manifest (claim)")
            raise ConjError(f"{run_dir} holds a {stage} run with {why}; pass --overwrite true to replace "
                            "it or choose a new output_dir")
        _clear_for(run_dir, manifest.stem)
    if manifest.exists() and not stale:
        own = read_json(manifest)
        if "data_hash" not in own:  # written before data hashes: adopt it for this data
            own["data_hash"] = data_hash
            atomic_write_json(manifest, own)
        return own
    atomic_write_json(manifest, {"stage": stage, **(extra or {}), "config_hash": config_hash,
                                 "data_hash": data_hash, "complete": False})
    return None


def _clear_for(run_dir: Path, name: str) -> None:
    """Remove what a fresh shard ``name`` (``shard-i-of-K``) must not meet: its own files, the merged
    manifest and every file of another shard count. Other shards of the same count are left to their
    own processes (under a launcher they run at the same time, and each checks and clears its own)."""
    import shutil

    suffix = name[name.rfind("-of-"):]
    (run_dir / "manifest.json").unlink(missing_ok=True)
    for sub in run_dir.iterdir():
        if not sub.is_dir() or sub.name == LOCKS:  # locks/: this process holds one of them
            continue
        for f in sub.iterdir():
            stem = f.name.split(".", 1)[0]
            if stem.startswith("shard-") and stem != name and stem.endswith(suffix):
                continue  # a sibling shard of this count: its own process decides
            shutil.rmtree(f) if f.is_dir() else f.unlink()


@contextmanager
def shard_lock(run_dir: str | Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on shard ``name`` of ``run_dir`` for the ``with`` block.

    A second process asking for the same shard gets a ConjError at once instead of writing every
    record a second time. The lock dies with its process (kill -9 included).
    """
    import fcntl

    path = Path(run_dir) / LOCKS / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 (held for the block)
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConjError(f"{run_dir}: another run is writing {name} (lock {path}); wait for it to "
                            "finish or choose another output_dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()
