"""Check: which pairs ``conj eval`` scores on benchmark files, without a model.

Builds the evaluation items exactly as ``conj eval`` does (same ingestion mode, splits, formats and
selection), prints per data set the rows read / used / skipped by reason, the pairs built, the rows
kept that training ingestion would drop, and the judge prompts per order; then scores a stand-in judge
that always answers "1" through the real metric code, so the official metric of each benchmark appears
as ``summary.md`` would show it. docs/benchmarks.md lists the official files and the counts this gives.

    PYTHONPATH=. .venv/bin/python bench/benchmark_rows.py --dataset faireval=PATH [--dataset ...] \\
        [--orders both] [--ingest_mode eval]
"""

from __future__ import annotations

import argparse
from collections import Counter

from conj_train.evaluate.report import official_headline
from conj_train.evaluate.run import EvalConfig, _load_items
from conj_train.evaluate.scoring import row_accounting, score_records


def main() -> None:
    """Print the row accounting and the stand-in judge's official metrics per data set."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", action="append", required=True, metavar="NAME=PATH")
    ap.add_argument("--orders", default="both", choices=("both", "random"))
    ap.add_argument("--ingest_mode", default="eval", choices=("eval", "train"))
    args = ap.parse_args()
    cfg = EvalConfig(model_name_or_path="none", dataset_name=args.dataset, output_dir="unused", orders=args.orders,
                     ingest_mode=args.ingest_mode)
    cfg.validate()
    items, info = _load_items(cfg)
    per_ds = Counter(it["dataset"] for it in items)
    for name, d in row_accounting(info).items():
        print(f"{name}: format {d['format']}, rows read {d['rows_read']}, used {d['rows_used']}, "
              f"skipped {d['skipped'] or 0}, pairs built {d['pairs_built']}, kept {d['kept'] or 0}, "
              f"prompts {per_ds[name]}")
    records = [{**it, "verdict": 1, "probability": None} for it in items]  # a judge that always says 1
    for name, entry in score_records(records, "judge", args.orders == "both").items():
        print(f"{name}: scored {entry['rows']['pairs_scored']} pairs ({entry['rows']['ties']} tie-labelled); "
              f"always-1 judge, official {official_headline(entry)}")


if __name__ == "__main__":
    main()
