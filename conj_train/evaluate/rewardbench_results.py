"""Evaluation results in RewardBench's own file format, written beside ``metrics.json``.

RewardBench's scripts (``scripts/run_generative.py``, ``run_rm.py``, ``run_v2.py``,
``run_generative_v2.py`` in allenai/reward-bench) save two JSON files per model through
``rewardbench.utils.save_to_hub`` (``json.dumps(..., indent=4, sort_keys=True)``), which its
leaderboard and results repositories read:

- ``eval-set/<model>.json``: ``{"model", "model_type", "chat_template", <subset>: score, ...}``, one
  score per subset present (accuracy; RewardBench 2's Ties its own score);
- ``eval-set-scores/<model>.json``: the per-row table as columns, ``{"id": [...], "subset": [...],
  "results": [...], "model", "model_type"}`` (RewardBench also keeps the answer texts there; these
  files leave them out: the texts are in the data set).

They are written under ``rewardbench/<data set>/`` (RewardBench) and ``rewardbench-2/<data set>/``
(RewardBench 2) for each model, named by the model's ``conj eval`` name; ``model`` holds its path.
Kept apart from :mod:`conj_train.evaluate.report` because this is another project's format, and
from :mod:`conj_train.evaluate.official_metrics` because it reads records and writes files.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from conj_train.evaluate.official_metrics import rewardbench2_metrics, rewardbench_score
from conj_train.evaluate.scoring import pairs_from_records

# RewardBench's ``model_type`` of each model kind (run_generative*.py / run_rm.py, run_v2.py).
MODEL_TYPES = {"judge": "Generative RM", "rm": "Seq. Classifier"}
FOLDERS = {"rewardbench": "rewardbench", "rewardbench2": "rewardbench-2"}


def rewardbench_result_files(
    name: str, path: str, model_kind: str, records: list[dict], both_orders: bool
) -> dict[str, dict[str, Any]]:
    """``{relative path: JSON content}`` of one model's RewardBench result files, one pair of files
    per data set in the ``rewardbench`` or ``rewardbench2`` format (none for other formats)."""
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_ds[r["dataset"]].append(r)
    head = {"model": path, "model_type": MODEL_TYPES[model_kind], "chat_template": None}
    files: dict[str, dict[str, Any]] = {}
    for ds, recs in sorted(by_ds.items()):
        fmt = next((r.get("format") for r in recs if r.get("format")), "")
        if fmt not in FOLDERS:
            continue
        pairs = pairs_from_records(recs, model_kind, both_orders)
        if fmt == "rewardbench":
            # RewardBench judges one random order per row: the first order here.
            ids = [p.row or p.pair_id for p in pairs]
            subsets = [p.subset for p in pairs]
            results: list[float | None] = [rewardbench_score(p) for p in pairs]
            per_subset: dict[str, list[float]] = defaultdict(list)
            for s, v in zip(subsets, results, strict=True):
                per_subset[s].append(v)  # type: ignore[arg-type]
            scores = {s: sum(v) / len(v) for s, v in per_subset.items()}
        else:
            official = rewardbench2_metrics(pairs) or {"subsets": {}, "row_results": {}}
            rows: dict[str, str] = {}
            for p in pairs:
                if p.row is not None:
                    rows.setdefault(p.row, p.subset)
            ids = list(rows)
            subsets = [rows[r] for r in ids]
            results = [official["row_results"].get(r) for r in ids]  # None: Ties, or an incomplete row
            scores = {s: v["score"] for s, v in official["subsets"].items()}
        base = f"{FOLDERS[fmt]}/{ds}"
        files[f"{base}/eval-set/{name}.json"] = {**head, **scores}
        files[f"{base}/eval-set-scores/{name}.json"] = {
            "id": ids, "subset": subsets, "results": results,
            "model": path, "model_type": MODEL_TYPES[model_kind],
        }
    return files
