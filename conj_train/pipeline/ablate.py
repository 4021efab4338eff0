"""``conj ablate``: run ablations of a base pipeline recipe and write one comparison table.

An ablation file is a small override of the base recipe::

    name: no-hint-pairs
    description: train on repeated-sampling pairs only
    overrides:
      filter.pair_types: [best_of_n, best_of_n_positive2unknown]

The base runs first under ``<output>/base``. Each ablation starts from a copy of the base run, so the
stage cache redoes only what its overrides change (e.g. a filter option reuses the base's warm-up and
sampling). The table reports, for the trained judge (and the base judge and scalar model for
reference), accuracy averaged over both orders, strict accuracy, consistency and parse failures on
each evaluation set.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conj_train.config.values import read_yaml
from conj_train.errors import ConjError
from conj_train.io import atomic_write_json, atomic_write_text, read_json

logger = logging.getLogger(__name__)

COLUMNS = (("accuracy_avg", "acc (avg of orders)"), ("accuracy_strict", "strict"),
           ("consistency", "consistency"), ("parse_failure_rate", "parse fail"))


@dataclass
class Ablation:
    """One ablation: a name, a line of description and ``stage.key`` overrides of the base recipe."""

    name: str
    description: str
    overrides: dict[str, Any]


def load_ablation(path: str | Path) -> Ablation:
    """Read an ablation file; unknown keys or a missing name are ConjErrors."""
    data = read_yaml(path)
    unknown = sorted(set(data) - {"name", "description", "overrides"})
    if unknown:
        raise ConjError(f"{path}: unknown key {unknown[0]!r} (expected name, description, overrides)")
    name = str(data.get("name") or Path(path).stem)
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ConjError(f"{path}: name {name!r} must be letters, digits, - or _")
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise ConjError(f"{path}: overrides must be a mapping of stage.key: value")
    return Ablation(name, str(data.get("description", "")), overrides)


def run_ablations(paths: list[str | Path], *, base: str | Path, output: str | Path) -> dict[str, Any]:
    """Run the base recipe and every ablation; write ``table.{md,json}`` and ``chart.png`` in ``output``."""
    from conj_train.pipeline.run import run_pipeline

    base_recipe = _resolve_base(base)
    ablations = [load_ablation(p) for p in paths]
    names = [a.name for a in ablations]
    if len(set(names)) != len(names) or "base" in names:
        raise ConjError("ablation names must be unique and not 'base'")
    out = Path(output)
    base_dir = out / "base"
    runs: dict[str, Path] = {}
    result = run_pipeline(base_recipe, overrides={"output_dir": str(base_dir)})
    runs["base"] = result.eval_dirs[-1]
    failed: dict[str, str] = {}
    for ab in ablations:
        target = out / ab.name
        if not target.exists():
            shutil.copytree(base_dir, target)
        overrides = {**ab.overrides, "output_dir": str(target)}
        try:
            res = run_pipeline(base_recipe, overrides=overrides)
        except ConjError as e:  # e.g. an ablation whose filter leaves no pairs: a result, not a crash
            logger.error("ablation %s failed: %s", ab.name, e)
            failed[ab.name] = str(e)
            continue
        runs[ab.name] = res.eval_dirs[-1]
    table = _table(runs, {a.name: a.description for a in ablations})
    table["failed"] = failed
    atomic_write_json(out / "table.json", table)
    atomic_write_text(out / "table.md", _markdown(table))
    _chart(table, out / "chart.png")
    return table


def _resolve_base(base: str | Path) -> Path:
    p = Path(base)
    if p.is_dir():
        p = p / "pipeline.yaml"
    if not p.is_file():
        raise ConjError(f"base pipeline recipe not found: {p}")
    return p


def _table(runs: dict[str, Path], descriptions: dict[str, str]) -> dict[str, Any]:
    rows = []
    for name, eval_dir in runs.items():
        metrics = read_json(eval_dir / "metrics.json")
        for row in metrics["comparison"]:
            rows.append({"ablation": name, "description": descriptions.get(name, "the base recipe"),
                         "model": row["model"], "dataset": row["dataset"], "pairs": row["pairs"],
                         **{k: row.get(k) for k, _ in COLUMNS},
                         "accuracy_avg_ci95": (row.get("ci95") or {}).get("accuracy_avg")})
    return {"columns": [k for k, _ in COLUMNS], "rows": rows}


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _markdown(table: dict[str, Any]) -> str:
    head = ("| ablation | model | data set | pairs | " + " | ".join(t for _, t in COLUMNS)
            + " | acc (avg) 95% interval |")
    lines = ["# Ablations", "", head, "|" + "---|" * (5 + len(COLUMNS))]
    for r in table["rows"]:
        ci = r.get("accuracy_avg_ci95")
        cells = [r["ablation"], r["model"], r["dataset"], str(r["pairs"]), *(_pct(r[k]) for k, _ in COLUMNS),
                 f"{_pct(ci[0])}-{_pct(ci[1])}" if ci else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *(f"- **{name}**: {desc}" for name, desc in
                    dict.fromkeys((r["ablation"], r["description"]) for r in table["rows"]))]
    lines += [f"- **{name}**: failed: {why}" for name, why in table.get("failed", {}).items()]
    return "\n".join(lines) + "\n"


def _chart(table: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table["rows"] if r["model"] == "conj"] or table["rows"]
    labels = [f"{r['ablation']}\n{r['dataset']}" for r in rows]
    values = [100 * (r["accuracy_avg"] or 0) for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 0.9 * len(rows)), 3.5))
    ax.bar(range(len(rows)), values, color="#4c72b0")
    ax.axhline(50, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("Con-J accuracy, avg of orders (%)")
    ax.set_ylim(0, 100)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
