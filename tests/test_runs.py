"""Run-folder helpers on hand-written folders: shards and seeds, done keys, merge checks, output checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conj_train.errors import ConjError
from conj_train.io import atomic_write_json, read_json
from conj_train.runs import (
    ShardRun,
    all_shards_complete,
    check_mergeable,
    derive_seed,
    finished_output,
    merge_world,
    parse_shard,
    read_done,
    read_shard_records,
    remove_outputs,
    resolve_shard,
    run_fingerprint,
    shard_manifest_path,
    shard_manifests,
    shard_name,
    shard_of,
)


def _key(r: dict) -> tuple[str, int]:
    return r["pair_id"], r["index"]


def _write(path: Path, rows: list[dict], torn: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + torn)
    return path


def _shard(run: Path, i: int, k: int, *, complete: bool = True, config_hash: str = "c",
           data_hash: str = "d") -> None:
    atomic_write_json(shard_manifest_path(run, i, k), {"shard": [i, k], "config_hash": config_hash,
                                                       "data_hash": data_hash, "complete": complete})


def test_shards_and_seeds() -> None:
    assert parse_shard("1/4") == (1, 4) and shard_name(1, 4) == "shard-00001-of-00004"
    for bad in ("4/4", "x", "1/2/3", "-1/2"):
        with pytest.raises(ConjError):
            parse_shard(bad)
    assert resolve_shard("2/3", 0, 1) == (2, 3) and resolve_shard(None, 1, 2) == (1, 2)
    assert resolve_shard(None, None, None) == (0, 1)
    counts = [sum(shard_of(f"p{i}", 4) == s for i in range(400)) for s in range(4)]
    assert sum(counts) == 400 and min(counts) > 60  # spread by the id's hash
    seeds = {derive_seed(7, "p", stream, i) for stream in ("repeated", "eval") for i in range(3)}
    assert len(seeds) == 6 and all(0 <= s < 2**60 for s in seeds)
    # Pinned: the first 15 hex digits of sha256("7\x1fp\x1feval\x1f0"). A seed that changed between
    # versions would silently give a resumed run different samples than the ones it already wrote.
    assert derive_seed(7, "p", "eval", 0) == 142136305930570055


def test_read_done_ignores_a_torn_last_line(tmp_path: Path) -> None:
    assert read_done(tmp_path / "missing.jsonl", _key) == (set(), [])
    path = _write(tmp_path / "j.jsonl", [{"pair_id": "a", "index": 0}, {"pair_id": "a", "index": 1}],
                  torn='{"pair_id": "b", "ind')
    done, rows = read_done(path, _key)
    assert done == {("a", 0), ("a", 1)} and len(rows) == 2


def test_shard_records_are_read_in_order_and_duplicates_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(run / "judgments" / f"{shard_name(0, 3)}.jsonl", [{"pair_id": "a", "index": 0}])
    _write(run / "judgments" / f"{shard_name(2, 3)}.jsonl", [{"pair_id": "b", "index": 0}])
    # Shard 1 got no pairs: no file.
    assert [r["pair_id"] for r in read_shard_records(run, "judgments", 3, _key)] == ["a", "b"]
    _write(run / "judgments" / f"{shard_name(1, 3)}.jsonl", [{"pair_id": "a", "index": 0}])
    with pytest.raises(ConjError, match=r"duplicate judgment \('a', 0\) across shards"):
        read_shard_records(run, "judgments", 3, _key, what="judgment")


def test_merge_checks(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(ConjError, match="no shard manifests of model m to merge"):
        check_mergeable(run, shard_manifests(run), config_hash="c", what="model m")
    _shard(run, 0, 2)
    _shard(run, 1, 2, complete=False)
    assert not all_shards_complete([run], 2)
    with pytest.raises(ConjError, match=r"not finished yet: \[1\]"):
        check_mergeable(run, shard_manifests(run), config_hash="c")
    _shard(run, 1, 2)
    assert all_shards_complete([run], 2) and not all_shards_complete([run, tmp_path / "other"], 2)
    assert check_mergeable(run, shard_manifests(run), config_hash="c") == 2
    with pytest.raises(ConjError, match="different config"):
        check_mergeable(run, shard_manifests(run), config_hash="other")
    _shard(run, 1, 2, data_hash="e")
    with pytest.raises(ConjError, match="different versions of the data"):
        check_mergeable(run, shard_manifests(run), config_hash="c")
    _shard(run, 1, 2)
    _shard(run, 0, 3)
    with pytest.raises(ConjError, match="different shard counts"):
        check_mergeable(run, shard_manifests(run), config_hash="c")


def test_a_shard_run_is_claimed_resumed_then_finished(tmp_path: Path) -> None:
    """The engine stages' protocol: claim before any record, resume by done keys, complete last."""
    shard = ShardRun(tmp_path / "run", 1, 2)
    claim = {"stage": "eval", "config_hash": "c", "data_hash": "d", "overwrite": False, "extra": {"model": "m"}}
    with shard.locked():
        assert shard.claim(**claim) is None  # a fresh shard: to do
    assert read_json(shard.manifest) == {"stage": "eval", "model": "m", "shard": [1, 2], "config_hash": "c",
                                         "data_hash": "d", "complete": False}
    _write(shard.records, [{"pair_id": "a", "index": 0}], torn='{"pair_id": "b"')  # killed mid-write
    assert shard.claim(**claim) is None and shard.done(_key)[0] == {("a", 0)}  # resumed, not redone
    with pytest.raises(ConjError, match="different config"):
        shard.claim(**{**claim, "config_hash": "other"})
    shard.finish({"config_hash": "c", "data_hash": "d", "counts": {"records": 1}, "complete": True})
    assert shard.claim(**claim)["counts"] == {"records": 1}  # finished: nothing to do
    items = [{"pair_id": f"p{i}"} for i in range(20)]
    assert shard.mine(items) == [it for it in items if shard_of(it["pair_id"], 2) == 1]


def test_merge_world_refuses_runs_of_different_shard_counts(tmp_path: Path) -> None:
    for i in range(2):
        _shard(tmp_path / "m1", i, 2)
        _shard(tmp_path / "m2", i, 2)
    assert merge_world(tmp_path, [(tmp_path / "m1", "c", "model m1"), (tmp_path / "m2", "c", "model m2")]) == 2
    (tmp_path / "m2" / "manifests").rename(tmp_path / "old")
    for i in range(3):
        _shard(tmp_path / "m2", i, 3)
    with pytest.raises(ConjError, match=r"different shard counts \[2, 3\]"):
        merge_world(tmp_path, [(tmp_path / "m1", "c", "model m1"), (tmp_path / "m2", "c", "model m2")])


def test_finished_output_and_remove_outputs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()

    def check(config_hash: str, hash_: str, overwrite: bool = False) -> dict | None:
        return finished_output(out, config_hash=config_hash, same_input=lambda i: i.get("hash") == hash_,
                               overwrite=overwrite, what="a filter run")

    assert check("c", "h") is None  # nothing there yet
    atomic_write_json(out / "manifest.json", {"config_hash": "c", "input": {"hash": "h"}, "complete": True})
    assert check("c", "h")["config_hash"] == "c"
    with pytest.raises(ConjError, match="holds a filter run with a different config or input"):
        check("c", "other")
    assert check("other", "h", overwrite=True) is None
    (out / "dataset").mkdir()
    (out / "keep.txt").write_text("mine")
    remove_outputs(out, ("manifest.json", "dataset", "absent"))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_run_fingerprint_follows_the_content(tmp_path: Path) -> None:
    run = tmp_path / "run"
    atomic_write_json(run / "manifest.json", {"complete": True})
    path = _write(run / "judgments" / f"{shard_name(0, 1)}.jsonl", [{"pair_id": "a", "index": 0}])
    first = run_fingerprint(run, ("prompts", "judgments"))
    (run / "locks").mkdir()
    (run / "notes.txt").write_text("not part of the run")
    assert run_fingerprint(run, ("prompts", "judgments")) == first
    _write(path, [{"pair_id": "a", "index": 1}])
    assert run_fingerprint(run, ("prompts", "judgments")) != first
    assert read_json(run / "manifest.json") == {"complete": True}
