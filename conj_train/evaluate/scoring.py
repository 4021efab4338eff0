"""Re-scoring evaluation records: per-pair results, the project's metrics, the benchmarks' official
ones (RewardBench 2 regroups its rows' pairs by ``row``; LLMBar adds its table's subset means),
RewardBench sections, and the row accounting of each data set.

Apart from :mod:`conj_train.evaluate.run` (which runs models and writes records) because scoring needs
no model: these are pure functions of the records and shard manifests, so a merged run can be
re-scored, and ``bench/benchmark_rows.py`` checks them, without loading anything. ``model_kind`` is
``judge`` (a generative judge, one record per order) or ``rm`` (a scalar reward model, one record
per pair whose swapped order is its mirror image).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from conj_train.evaluate.benchmarks import benchmark_for
from conj_train.evaluate.metrics import OrderResult, PairResult, pair_metrics
from conj_train.evaluate.official_metrics import (
    REWARDBENCH_PRIOR_SETS,
    rewardbench_accuracy,
    rewardbench_count_check,
    rewardbench_sections,
)


def pairs_from_records(
    records: Iterable[dict], model_kind: str = "judge", both_orders: bool = True
) -> list[PairResult]:
    """Per-pair results from evaluation records (a reward model's mirror order added when both)."""
    groups: dict[tuple[str, str], dict[bool, dict]] = defaultdict(dict)
    for r in records:
        groups[(r["dataset"], r["pair_id"])][bool(r["swapped"])] = r
    pairs = []
    for (_, pid), recs in groups.items():
        first = recs.get(False)
        if first is None:
            continue
        a = OrderResult(
            first["label"], first["verdict"], first.get("probability"), first.get("transfer_verdict")
        )
        if model_kind == "rm":
            r1, r2 = first.get("reward_1"), first.get("reward_2")
            tie = r1 is not None and r1 == r2  # the model itself rates the answers equal
            a = OrderResult(a.label, a.verdict, a.p_slot1, tie=tie)
            b = None
            if both_orders:
                v, p = first["verdict"], first.get("probability")
                b = OrderResult(3 - a.label, None if v is None else 3 - v, None if p is None else 1 - p, tie=tie)
        else:
            s = recs.get(True)
            b = (
                None
                if s is None
                else OrderResult(s["label"], s["verdict"], s.get("probability"), s.get("transfer_verdict"))
            )
        cell = first.get("cell")
        rewards = None
        if model_kind == "rm" and first.get("reward_1") is not None and first.get("reward_2") is not None:
            r1, r2 = float(first["reward_1"]), float(first["reward_2"])
            rewards = (r1, r2) if first["label"] == 1 else (r2, r1)
        row = first.get("row")
        pairs.append(PairResult(
            pid, a, b, first.get("chosen_chars", 0), first.get("rejected_chars", 0),
            gold_tie=bool(first.get("tie")), scalar=model_kind == "rm", subset=str(first.get("subset") or ""),
            cell=None if cell is None else (int(cell[0]), int(cell[1])),
            row=None if row is None else str(row), row_pairs=int(first.get("row_pairs") or 0), rewards=rewards,
        ))
    return pairs


def _official(fmt: str, pairs: list[PairResult]) -> dict[str, Any] | None:
    """The benchmark's own metric for these pairs, named, or None for a format without one."""
    bench = benchmark_for(fmt)
    if bench is None or bench.metric is None:
        return None
    values = bench.metric(pairs)
    if values is None:
        return None
    return {"benchmark": bench.name, "headline": list(bench.headline), **values}


def _rewardbench(subsets: dict[str, list[PairResult]], project: dict[str, Any],
                 prior: dict[str, float | None]) -> dict[str, Any] | None:
    """RewardBench sections: ``official`` (RewardBench's per-row rule), plus the project's 0.5 variants."""
    official = {s: rewardbench_accuracy(ps) for s, ps in subsets.items()}
    rb = {"official": rewardbench_sections({**prior, **official})}
    if rb["official"] is None:
        return None
    rb.update({key: rewardbench_sections({s: m[key] for s, m in project.items()})
               for key in ("accuracy", "accuracy_avg")})
    rb["counts"] = rewardbench_count_check({s: len(ps) for s, ps in subsets.items()})
    return rb


def score_records(records: list[dict], model_kind: str, both_orders: bool, bins: int = 10) -> dict[str, Any]:
    """Metrics per data set: the project's (``overall`` and per ``subsets``, tie-labelled pairs left
    out), the benchmark's own (``official``), RewardBench sections where subsets match, and ``rows``
    (pairs scored, ties among them)."""
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_ds[r["dataset"]].append(r)
    pairs_of = {ds: pairs_from_records(recs, model_kind, both_orders) for ds, recs in by_ds.items()}
    # RewardBench's Prior Sets are a separate Hub data set: take their subsets from any data set.
    prior = {p.subset: None for ps in pairs_of.values() for p in ps if p.subset in REWARDBENCH_PRIOR_SETS}
    for s in prior:
        prior[s] = rewardbench_accuracy([p for ps in pairs_of.values() for p in ps if p.subset == s])
    out: dict[str, Any] = {}
    for ds, recs in by_ds.items():
        pairs = pairs_of[ds]
        fmt = next((r.get("format") for r in recs if r.get("format")), "") or ""
        scored = [p for p in pairs if not p.gold_tie]
        subsets: dict[str, list[PairResult]] = defaultdict(list)
        for p in pairs:
            subsets[p.subset].append(p)
        entry: dict[str, Any] = {
            "rows": {"pairs_scored": len(pairs), "ties": len(pairs) - len(scored), "format": fmt},
            "overall": pair_metrics(scored, bins),
        }
        official = _official(fmt, pairs)
        if official is not None:
            entry["official"] = official
        if len(subsets) > 1 or (subsets and "" not in subsets):
            entry["subsets"] = {s: pair_metrics([p for p in ps if not p.gold_tie], bins)
                                for s, ps in sorted(subsets.items())}
            bench = benchmark_for(fmt)
            if bench is not None and bench.per_subset:
                for s, ps in subsets.items():
                    sub_official = _official(fmt, ps)
                    if sub_official is not None:
                        entry["subsets"][s]["official"] = sub_official
                if bench.table is not None and "official" in entry:
                    entry["official"].update(bench.table(
                        {s: m["official"] for s, m in entry["subsets"].items() if "official" in m}))
            rb = _rewardbench(dict(subsets), entry["subsets"], prior)
            if rb is not None:
                entry["rewardbench"] = rb
        out[ds] = entry
    return out


def row_accounting(info: dict[str, Any]) -> dict[str, Any]:
    """Per data set: rows read, used and skipped by reason, pairs built, kept rows that training
    ingestion would skip, and pairs left out by ``longer`` / ``max_pairs`` (from the shard manifests)."""
    out = {}
    for name, d in info.items():
        ing = d.get("ingest") or {}
        not_selected = d.get("not_selected") or {}
        out[name] = {
            "path": d.get("path"),
            "format": d.get("format") or ing.get("format"),
            "split": d.get("split"),
            "mode": ing.get("mode"),
            "rows_read": ing.get("rows_read"),
            "rows_used": ing.get("rows_used"),
            "skipped": ing.get("skipped") or {},
            "pairs_built": ing.get("pairs", ing.get("rows_used")),
            "kept": ing.get("kept") or {},
            "not_selected": {k: v for k, v in not_selected.items() if v},
            "pairs_selected": d.get("pairs"),
        }
    return out
