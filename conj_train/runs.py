"""Run folders: output-path checks, the claim a folder carries from its first record, shard locks,
content fingerprints of inputs, sharding and seeds, done keys, and the checks before a merge.

Every stage that writes a run folder (sample, evaluate, filter, warmup) and the judge API use these
helpers, so the folder rules live in one place and no stage imports another for them.

A stage that writes records into a folder (sample, evaluate) or builds a folder (filter, warmup)
relies on three promises, all kept here:

* a folder holds the output of one config and one version of the input data: the shard's manifest
  (its *claim*) is written with both hashes before the first record, so even a run killed before it
  finished is never resumed under another config or other data;
* one process writes a shard at a time: :func:`shard_lock` takes an exclusive ``flock`` on
  ``locks/<shard>.lock`` (released by the kernel when the process dies, so kill -9 leaves no stale
  lock) and refuses a second run with one line;
* an input is known by its content: :func:`data_fingerprint` hashes a file's bytes (a folder's files),
  :func:`records_fingerprint` the canonical records a stage actually uses, :func:`run_fingerprint`
  a finished sharded run read as input by the next stage.

Sharded layout (sample, evaluate): ``<run>/manifests/shard-i-of-K.json`` (the claim, then the counts
with ``complete``) next to ``<run>/<records>/shard-i-of-K.jsonl``. A pair's shard is a hash of its
id (:func:`shard_of`) and every sample's seed a hash of (run seed, pair id, stream, index)
(:func:`derive_seed`), so outputs depend neither on the shard count nor on restarts. Both engine
stages follow one protocol with it, :class:`ShardRun`: lock the shard, claim it, resume by done keys,
mark it complete; the last shard to finish merges (:func:`all_shards_complete`, :func:`merge_world`).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError
from conj_train.ids import id_int
from conj_train.io import atomic_write_json, file_hash, iter_jsonl, read_json, stable_hash

LOCKS = "locks"
MAX_SHARDS = 65_536  # far above any launch; a count beyond it is a typo that would cost a loop per shard
MANIFESTS = "manifests"
_SHARD_STEM = re.compile(r"shard-\d{5,}-of-\d{5,}")


# --- shards and seeds ----------------------------------------------------------------------------


def parse_shard(spec: str) -> tuple[int, int]:
    """``"i/K"`` -> ``(i, K)`` with 0 <= i < K."""
    try:
        i_s, k_s = spec.split("/")
        i, k = int(i_s), int(k_s)
    except ValueError:
        raise ConjError(f"shard must look like i/K (e.g. 0/4), not {spec!r}") from None
    if not 0 <= i < k:
        raise ConjError(f"shard {spec!r}: need 0 <= i < K")
    if k > MAX_SHARDS:
        raise ConjError(f"shard {spec!r}: at most {MAX_SHARDS:,} shards")
    return i, k


def resolve_shard(spec: str | None, rank: int | None, world: int | None) -> tuple[int, int]:
    """This process's ``(rank, world)``: the ``shard`` setting, else the launcher's, else ``(0, 1)``."""
    if spec is not None:
        rank, world = parse_shard(spec)
    return rank or 0, world or 1


def shard_of(pair_id: str, num_shards: int) -> int:
    """The shard a pair belongs to: a hash of its stable id, so edits elsewhere do not move it."""
    return id_int(pair_id, bits=48) % num_shards


def shard_name(i: int, k: int) -> str:
    """File stem of shard ``i`` of ``k``."""
    return f"shard-{i:05d}-of-{k:05d}"


def derive_seed(run_seed: int, pair_id: str, stream: str, index: int) -> int:
    """The seed of one sample, a function of (run seed, pair id, stream, sample index) only.

    ``stream`` names what the seeds are for, so that two uses never share seeds: a judgment kind in
    sampling (``repeated``, ``hint_correct``, ``hint_wrong``), ``eval`` / ``eval-swapped`` in
    evaluation, ``judge`` in the judge API."""
    return id_int(run_seed, pair_id, stream, index, bits=60, sep="\x1f")  # < 2**60: fits every engine's seed type


# --- records already written ---------------------------------------------------------------------


def read_done(path: Path, key: Callable[[dict], Hashable]) -> tuple[set, list[dict]]:
    """The keys of the records already in ``path`` (a torn last line is ignored) and the records."""
    if not path.exists():
        return set(), []
    rows = list(iter_jsonl(path, drop_partial_last_line=True))
    return {key(r) for r in rows}, rows


def read_shard_records(run_dir: Path, sub: str, world: int, key: Callable[[dict], Hashable],
                       what: str = "record") -> list[dict]:
    """Every record of the ``world`` shards in ``run_dir/sub``; a key seen in two shards is a ConjError.

    A missing shard file (a shard that got no pairs) reads as empty."""
    rows: list[dict] = []
    seen: set = set()
    for i in range(world):
        path = run_dir / sub / f"{shard_name(i, world)}.jsonl"
        if not path.exists():
            continue
        for r in iter_jsonl(path, drop_partial_last_line=True):
            k = key(r)
            if k in seen:
                raise ConjError(f"{run_dir}: duplicate {what} {k} across shards")
            seen.add(k)
            rows.append(r)
    return rows


# --- shard manifests and merging -----------------------------------------------------------------


def shard_manifest_path(run_dir: Path, i: int, k: int) -> Path:
    """Where shard ``i`` of ``k`` keeps its manifest."""
    return run_dir / MANIFESTS / f"{shard_name(i, k)}.json"


def shard_complete(path: Path) -> bool:
    """Whether the shard manifest at ``path`` says the shard finished."""
    return path.exists() and bool(read_json(path).get("complete"))


def all_shards_complete(run_dirs: Iterable[Path], world: int) -> bool:
    """Whether every one of the ``world`` shards of every run folder in ``run_dirs`` finished."""
    return all(shard_complete(shard_manifest_path(d, i, world)) for d in run_dirs for i in range(world))


def shard_manifests(run_dir: Path) -> list[dict]:
    """Every shard manifest of ``run_dir``, in shard order."""
    mdir = run_dir / MANIFESTS
    return [read_json(p) for p in sorted(mdir.glob("shard-*.json"))] if mdir.is_dir() else []


def check_mergeable(where: Path, manifests: Sequence[dict], *, config_hash: str, what: str = "") -> int:
    """The shard count of ``manifests`` (one run's shards) after checking they can be merged.

    Refused with a ConjError: no shards, shards of several counts, an unfinished shard, a shard of
    another config, shards of different data. ``what`` names the run in messages (e.g. "model m")."""
    of = f" of {what}" if what else ""
    if not manifests:
        raise ConjError(f"{where}: no shard manifests{of} to merge")
    if any(m["config_hash"] != config_hash for m in manifests):
        raise ConjError(f"{where}: a shard{of} was written with a different config")
    if len({m.get("data_hash") for m in manifests}) > 1:
        raise ConjError(f"{where}: shards{of} were written from different versions of the data; rerun "
                        "them with --overwrite true")
    worlds = {int(m["shard"][1]) for m in manifests}
    if len(worlds) != 1:
        raise ConjError(f"{where}: shards of different shard counts {sorted(worlds)}; rerun with one count")
    world = worlds.pop()
    done = {int(m["shard"][0]) for m in manifests if m.get("complete")}
    missing = [i for i in range(world) if i not in done]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (f" ... ({len(missing):,} in all)" if len(missing) > 10 else "")
        raise ConjError(f"{where}: shards{of} not finished yet: [{shown}]")
    return world


def merge_world(where: Path, runs: Iterable[tuple[Path, str, str]]) -> int:
    """The one shard count of the sharded runs ``(run_dir, config_hash, what)`` merged together (one
    per model in evaluation), after :func:`check_mergeable` of each; runs of different counts are refused."""
    worlds = {check_mergeable(where, shard_manifests(run_dir), config_hash=config_hash, what=what)
              for run_dir, config_hash, what in runs}
    if len(worlds) != 1:
        raise ConjError(f"{where}: shards of different shard counts {sorted(worlds)}; rerun with one count")
    return worlds.pop()


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


def _resolved(path: Path) -> Path:
    """``path`` with its links resolved; a symlink loop (or a name the system refuses) is a ConjError."""
    try:
        return path.resolve()
    except (RuntimeError, OSError) as e:  # RuntimeError: pathlib's "Symlink loop" (Python < 3.13)
        raise ConjError(f"{path}: a symbolic link loop or an unusable path ({e})") from None


def check_output_dir(path: str | Path, *, what: str = "output_dir") -> Path:
    """``path`` as a folder this process can create or write into; otherwise a one-line ConjError."""
    p = Path(path).expanduser()
    _resolved(p)
    if p.exists() and not p.is_dir():
        raise ConjError(f"{what} {p} is a file, not a folder")
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise ConjError(f"{what} {p} is not writable")
    else:
        _writable_parent(p)
    return p


def check_output_file(path: str | Path, *, inputs: Sequence[str | Path] = ()) -> Path:
    """``path`` as a file this process can write, neither one of ``inputs`` nor inside an input folder
    (writing it would lose the input, or add the output to what is read)."""
    p = Path(path).expanduser()
    _resolved(p)
    if p.is_dir():
        raise ConjError(f"output {p} is a folder; give a file path")
    check_separate(p, inputs, what="output")  # the input itself, or a file inside an input folder
    if p.exists():
        if not os.access(p, os.W_OK):
            raise ConjError(f"output {p} is not writable")
    else:
        _writable_parent(p)
    return p


def check_separate(output: str | Path, inputs: Iterable[str | Path | None], *, what: str = "output_dir") -> None:
    """Refuse (one line) an output that is, lies inside or contains one of ``inputs``.

    A stage that writes where it reads would destroy its input (``--overwrite``), read its own
    records back as data, or leave a data folder unreadable; an input that is not a local path (a
    Hub id) cannot meet a local output and is skipped."""
    out = _resolved(Path(output).expanduser())
    for src in inputs:
        if src is None or str(src) == "":
            continue
        path = Path(src).expanduser()
        if not path.exists():
            continue
        s = _resolved(path)
        if out == s:
            raise ConjError(f"{what} {output} is the input {src}; choose another {what}")
        if s in out.parents:
            raise ConjError(f"{what} {output} is inside the input {src}; choose a {what} outside it")
        if out in s.parents:
            raise ConjError(f"{what} {output} contains the input {src}; choose a {what} that does not")


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


def shard_files(run_dir: Path, sub: str) -> list[Path]:
    """The ``shard-*.jsonl`` files of ``run_dir/sub``, in shard order (none if the folder is missing)."""
    return sorted((run_dir / sub).glob("shard-*.jsonl")) if (run_dir / sub).is_dir() else []


def run_fingerprint(run_dir: Path, subs: Sequence[str]) -> str:
    """Content hash of a finished sharded run used as input: its ``manifest.json`` and the shard files
    of each folder in ``subs`` (names + bytes)."""
    files = [run_dir / "manifest.json", *(p for sub in subs for p in shard_files(run_dir, sub))]
    return stable_hash([[str(p.relative_to(run_dir)), file_hash(p)] for p in files])


# --- single-output folders (filter, warmup) ------------------------------------------------------


def finished_output(out: Path, *, config_hash: str, same_input: Callable[[dict], bool], overwrite: bool,
                    what: str) -> dict | None:
    """The ``manifest.json`` of ``out`` when it holds this exact finished run (same config hash and
    input), else None; a folder holding another run is refused unless ``overwrite``.

    ``what`` names the run in the message (e.g. "a filter run")."""
    manifest = out / "manifest.json"
    if not manifest.is_file():
        return None
    old = read_json(manifest)
    if old.get("config_hash") == config_hash and same_input(old.get("input") or {}) and old.get("complete"):
        return old
    if not overwrite:
        raise ConjError(f"{out} holds {what} with a different config or input; pass --overwrite true to "
                        "replace it or choose a new output_dir")
    return None


def remove_outputs(out: Path, names: Iterable[str]) -> None:
    """Remove the files and folders ``names`` of ``out`` (only what a stage writes: ``out`` may hold
    other files)."""
    for name in names:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def remove_layout(out: Path, patterns: Iterable[str], *, keep: Iterable[str] = ()) -> list[str]:
    """Remove the entries of ``out`` whose names match one of ``patterns`` (shell-style: a stage's
    known layout), except the names in ``keep`` (what was there before the stage claimed ``out``).
    Anything else, a user's file above all, stays. Returns the names removed."""
    kept, pats, removed = set(keep), list(patterns), []
    if not out.is_dir():
        return removed
    for child in sorted(out.iterdir()):
        if child.name in kept or not any(fnmatch.fnmatchcase(child.name, p) for p in pats):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
        removed.append(child.name)
    return removed


# --- claims and locks ----------------------------------------------------------------------------


def claim_shard(run_dir: Path, manifest: Path, *, config_hash: str, data_hash: str, overwrite: bool,
                stage: str, extra: dict[str, Any] | None = None, records: Sequence[Path] = (),
                subs: Sequence[str] = ()) -> dict | None:
    """Make ``manifest`` (one shard's) claim ``run_dir`` for this config and data before any record.

    Returns the shard's manifest when this exact run already holds it (finished or not). A shard of
    another config or data, or records with no claim (an older layout, a foreign folder), are refused
    unless ``overwrite``, which clears them first (see :func:`_clear_for`): only the shard files of
    ``subs`` (the stage's record folders; the folders of ``records`` too) and ``manifests/``.
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
        _clear_for(run_dir, manifest.stem, (*subs, *(r.parent.name for r in records)))
    if manifest.exists() and not stale:
        own = read_json(manifest)
        if "data_hash" not in own:  # written before data hashes: adopt it for this data
            own["data_hash"] = data_hash
            atomic_write_json(manifest, own)
        return own
    atomic_write_json(manifest, {"stage": stage, **(extra or {}), "config_hash": config_hash,
                                 "data_hash": data_hash, "complete": False})
    return None


def _clear_for(run_dir: Path, name: str, subs: Sequence[str]) -> None:
    """Remove what a fresh shard ``name`` (``shard-i-of-K``) must not meet: its own files, the merged
    manifest and every shard file of another shard count, in the stage's own subfolders ``subs`` (and
    ``manifests/``) only: a file the stage did not write (a user's, an input) is never touched. Other
    shards of the same count are left to their own processes (under a launcher they run at the same
    time, and each checks and clears its own)."""
    suffix = name[name.rfind("-of-"):]
    (run_dir / "manifest.json").unlink(missing_ok=True)
    for sub in dict.fromkeys((*subs, MANIFESTS)):
        folder = run_dir / sub
        if sub == LOCKS or folder.is_symlink() or not folder.is_dir():
            continue  # locks/: this process holds one of them
        for f in folder.iterdir():
            stem = f.name.split(".", 1)[0]
            if not _SHARD_STEM.fullmatch(stem) or f.is_symlink() or not f.is_file():
                continue  # not a shard file this stage writes
            if stem != name and stem.endswith(suffix):
                continue  # a sibling shard of this count: its own process decides
            f.unlink()


@contextmanager
def folder_lock(run_dir: str | Path, name: str, *, folder: str = LOCKS, what: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock ``run_dir/folder/name.lock`` for the ``with`` block.

    A second process asking for the same lock gets a one-line ConjError at once instead of writing
    into the same folder. The lock dies with its process (kill -9 included): an ``flock``, released
    by the kernel. ``what`` names what is being written in the message (default ``name``).
    """
    import fcntl

    path = Path(run_dir) / folder / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a+")  # noqa: SIM115 (held for the block)
    try:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConjError(f"{run_dir}: another run is writing {what or name} (lock {path}); wait for it to "
                            "finish or choose another output_dir") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield
    finally:
        f.close()


@contextmanager
def _count_lock(run_dir: Path, world: str) -> Iterator[None]:
    """Hold a shared lock for shard count ``world`` of ``run_dir``; refuse while a run of another
    count holds its own (it would clear that run's files, or fail at merge)."""
    import fcntl

    locks = run_dir / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    f = open(locks / f"count-{world}.lock", "a+")  # noqa: SIM115 (held for the block)
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_SH)
        for other in locks.glob("count-*.lock"):
            if other.name == f"count-{world}.lock":
                continue
            with open(other, "a+") as g:
                try:
                    fcntl.flock(g.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    k = other.stem.removeprefix("count-")
                    raise ConjError(f"{run_dir}: a run with {int(k)} shards is writing here; use its shard count "
                                    "or wait for it to finish") from None
        yield
    finally:
        f.close()


@contextmanager
def shard_lock(run_dir: str | Path, name: str) -> Iterator[None]:
    """Hold an exclusive lock on shard ``name`` (``shard-i-of-K``) of ``run_dir`` for the ``with``
    block, and a shared one on its shard count K.

    A second process asking for the same shard gets a ConjError at once instead of writing every
    record a second time; a process of another shard count is refused while this one runs (it would
    clear this run's shard files). The locks die with their process (kill -9 included).
    """
    with folder_lock(run_dir, name):
        if _SHARD_STEM.fullmatch(name):
            with _count_lock(Path(run_dir), name[name.rfind("-of-") + 4:]):
                yield
        else:
            yield


# --- one shard of an engine stage ----------------------------------------------------------------


@dataclass(frozen=True)
class ShardRun:
    """Shard ``rank`` of ``world`` of a sharded run folder, as an engine stage (sample, evaluate) writes it.

    The protocol, the same in both stages::

        shard = ShardRun(run_dir, rank, world)
        with shard.locked():                      # one process per shard (shard_lock)
            finished = shard.claim(stage=..., config_hash=..., data_hash=..., overwrite=...)
            if finished: ...                      # this run already completed the shard: nothing to do
            done, _ = shard.done(key)             # resume: the keys of the records already written
            ... append the records of shard.mine(items) whose key is not done to shard.records ...
            shard.finish({... "complete": True})  # the shard's manifest, written last
        if all_shards_complete([run_dir], world): merge (merge_world checks the shards first)
    """

    run_dir: Path
    rank: int
    world: int
    records_dir: str = "judgments"

    @property
    def name(self) -> str:
        """The shard's file stem (``shard-i-of-K``)."""
        return shard_name(self.rank, self.world)

    @property
    def manifest(self) -> Path:
        """The shard's manifest: its claim, then its counts with ``complete``."""
        return shard_manifest_path(self.run_dir, self.rank, self.world)

    @property
    def records(self) -> Path:
        """The shard's records file (JSONL, appended to)."""
        return self.run_dir / self.records_dir / f"{self.name}.jsonl"

    @contextmanager
    def locked(self) -> Iterator[ShardRun]:
        """Hold the shard's lock (and a shared one on its shard count) for the ``with`` block."""
        with shard_lock(self.run_dir, self.name):
            yield self

    def claim(self, *, stage: str, config_hash: str, data_hash: str, overwrite: bool,
              extra: dict[str, Any] | None = None, subs: Sequence[str] = ()) -> dict | None:
        """Claim the folder for this config and data before any record (:func:`claim_shard`; ``extra``
        goes into the claim, then the shard). Returns the shard's manifest when this exact run already
        completed it, else None (a fresh or resumed shard)."""
        own = claim_shard(self.run_dir, self.manifest, config_hash=config_hash, data_hash=data_hash,
                          overwrite=overwrite, stage=stage, extra={**(extra or {}), "shard": [self.rank, self.world]},
                          records=[self.records], subs=subs)
        return own if own is not None and own.get("complete") else None

    def mine(self, items: Iterable[dict]) -> list[dict]:
        """The items (with a ``pair_id``) that belong to this shard, in their order."""
        return [it for it in items if shard_of(it["pair_id"], self.world) == self.rank]

    def done(self, key: Callable[[dict], Hashable]) -> tuple[set, list[dict]]:
        """The keys of the records already written to this shard, and the records (:func:`read_done`)."""
        return read_done(self.records, key)

    def finish(self, manifest: dict[str, Any]) -> None:
        """Write the shard's final manifest (its counts, ``complete``): the last file of the shard."""
        atomic_write_json(self.manifest, manifest)
