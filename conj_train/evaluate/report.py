"""Stage 4's report: the comparison table, ``summary.md``, the console summary and the charts.

Pure functions of the merged ``metrics.json`` content (:func:`conj_train.evaluate.run.merge_eval`, scored
by :mod:`conj_train.evaluate.scoring`), kept apart from the evaluation loop so the report can be
regenerated from a finished run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_COMPARE_COLUMNS = (
    ("accuracy", "Acc (random order)"),
    ("accuracy_avg", "Acc (avg of orders)"),
    ("accuracy_strict", "Strict"),
    ("consistency", "Consistency"),
    ("parse_failure_rate", "Parse fail"),
    ("brier", "Brier"),
)


def _get(m: dict, key: str) -> Any:
    return m["probability"]["brier"] if key == "brier" else m.get(key)


def official_headline(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The benchmark's own headline numbers for one data set entry of ``metrics.json``, or None."""
    off = entry.get("official")
    if off:
        head = {"benchmark": off["benchmark"], **{k: off.get(k) for k in off["headline"] if k in off}}
        if off.get("complete") is False:  # e.g. RM-Bench without its math domain
            head["incomplete"] = ", ".join(off.get("missing") or []) + " missing"
        return head
    rb = (entry.get("rewardbench") or {}).get("official")
    if rb:
        head = {"benchmark": "RewardBench", "overall": rb["overall"]}
        if not rb.get("complete"):
            head["incomplete"] = ", ".join(s for s, v in rb["sections"].items() if v["missing"]) + " not complete"
        return head
    return None


def _incomplete(off: dict[str, Any]) -> str:
    """`` (INCOMPLETE: ...)`` for an official result that misses part of its benchmark, else ''.

    Printed beside the numbers, not only in ``metrics.json``: an overall of three RM-Bench domains
    is not the overall the paper reports."""
    if off.get("incomplete"):
        return f" (INCOMPLETE: {off['incomplete']})"
    if off.get("complete") is False:
        return f" (INCOMPLETE: {', '.join(off.get('missing') or [])} missing)"
    return ""


def comparison_table(per_model: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (model, data set) with the headline numbers, for the side-by-side table."""
    rows = []
    for name, m in per_model.items():
        for ds, entry in m["datasets"].items():
            o = entry["overall"]
            row = {"model": name, "kind": m["kind"], "dataset": ds, "pairs": o["pairs"]}
            row.update({k: _get(o, k) for k, _ in _COMPARE_COLUMNS})
            if o.get("ci95"):
                row["ci95"] = o["ci95"]
            head = official_headline(entry)
            if head:
                row["official"] = head
            rb = entry.get("rewardbench", {}).get("official")
            if rb:
                row["rewardbench"] = {s: v["score"] for s, v in rb["sections"].items()} | {
                    "overall": rb["overall"]
                }
                if rb.get("overall_with_prior_sets") is not None:
                    row["rewardbench"]["overall (with prior sets)"] = rb["overall_with_prior_sets"]
            rows.append(row)
    return rows


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f}" if pct else f"{v:.3f}"


def _length_acc(bucket: dict) -> Any:
    return bucket["accuracy_avg"] if bucket["accuracy_avg"] is not None else bucket["accuracy"]


def _metric_row(label: str, m: dict) -> str:
    pb = m.get("position_bias") or {}
    lg = m["length"]
    cells = [
        label,
        str(m["pairs"]),
        _fmt(m["accuracy"]),
        _fmt(m["accuracy_avg"]),
        _fmt(m["accuracy_strict"]),
        _fmt(m["consistency"]),
        f"{_fmt(m['agree_accuracy'])} ({_fmt(m['agree_coverage'])})",
        _fmt(m["parse_failure_rate"]),
        f"{_fmt(pb.get('first'))} / {_fmt(pb.get('second'))}",
        f"{_fmt(_length_acc(lg['chosen_longer']))} / {_fmt(_length_acc(lg['chosen_shorter']))}",
        _fmt(m["probability"]["brier"], pct=False),
        _fmt(m["faithfulness"]["rate"]),
    ]
    return "| " + " | ".join(cells) + " |"


_HEADER = (
    "| group | pairs | acc (random) | acc (avg) | strict | consistency | acc if agree (coverage) "
    "| parse fail | inconsistent: slot 1 / slot 2 | acc chosen longer / shorter | Brier | faithful |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _official_cells(head: dict[str, Any] | None) -> str:
    if not head:
        return "–"
    return f"{head['benchmark']}{_incomplete(head)}: " + ", ".join(
        f"{k} {_fmt(v)}" for k, v in head.items() if k not in ("benchmark", "incomplete"))


def _rows_section(datasets: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """Every row read, per data set: used or skipped (by reason), and what was scored."""
    if not datasets:
        return []
    scored = {ds: entry["rows"] for m in metrics["models"].values() for ds, entry in m["datasets"].items()}
    lines = [
        "",
        "## Rows",
        "",
        f"Ingestion mode: {metrics.get('ingest_mode', 'eval')} (eval = the benchmark's own row set: "
        "ties, identical or empty answers and repeated pairs are scored, not dropped).",
        "",
        "| dataset | format | split | rows read | rows used | skipped (reason) | pairs built | kept that "
        "training would drop | not selected | pairs scored (ties) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds, d in datasets.items():
        def counts(c: dict) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "0"

        sc = scored.get(ds, {})
        lines.append("| " + " | ".join([
            ds, str(d.get("format") or "–"), str(d.get("split") or "–"), str(d.get("rows_read")),
            str(d.get("rows_used")), counts(d.get("skipped") or {}), str(d.get("pairs_built")),
            counts(d.get("kept") or {}), counts(d.get("not_selected") or {}),
            f"{sc.get('pairs_scored', '–')} ({sc.get('ties', 0)})",
        ]) + " |")
    return lines


def summary_markdown(metrics: dict[str, Any]) -> str:
    """``summary.md``: row accounting, comparison table with each benchmark's official metric, then
    per model and data set the full metric table."""
    lines = [
        "# Judge evaluation",
        "",
        f"Orders: {metrics['orders']} (random order seeded with swap_seed "
        f"{metrics['random_order']['swap_seed']}); "
        f"decoding: {metrics['decoding']} x{metrics['samples']}; parser: {metrics['parser']}; "
        f"template: {metrics['template']}.",
        "Percentages. The project's metrics score an unparseable verdict 0.5 and leave tie-labelled "
        "pairs out; *acc (avg)* averages both orders, *strict* needs both right; *faithful* is the "
        "rationale-transfer agreement. Length columns use the avg-of-orders accuracy when both orders "
        "ran. A reward model (kind rm) is order-invariant. *Official* is the benchmark's own metric, "
        "computed as its scoring code does (README, Benchmarks).",
    ]
    lines += _rows_section(metrics.get("datasets") or {}, metrics)
    lines += [
        "",
        "## Comparison",
        "",
        "| model | kind | dataset | pairs | " + " | ".join(t for _, t in _COMPARE_COLUMNS) + " | official |",
        "|---" * (5 + len(_COMPARE_COLUMNS)) + "|",
    ]
    for row in metrics["comparison"]:
        cells = [row["model"], row["kind"], row["dataset"], str(row["pairs"])]
        cells += [_fmt(row[k], pct=k != "brier") for k, _ in _COMPARE_COLUMNS]
        cells.append(_official_cells(row.get("official")))
        lines.append("| " + " | ".join(cells) + " |")
    rb_rows = [r for r in metrics["comparison"] if r.get("rewardbench")]
    if rb_rows:
        secs = list(rb_rows[0]["rewardbench"])
        lines += [
            "",
            "RewardBench sections (RewardBench's rule: random order, a reward model's tie scores 0, a "
            "judge's unparsed verdict 0.5; EXAMPLE_COUNTS weighting; overall = unweighted mean of the "
            "sections present, as the leaderboard now reports; with allenai/pref-test-sets scored too, "
            "the original leaderboard's 2:2:2:2:1 average with the prior sets):",
            "",
            "| model | dataset | " + " | ".join(secs) + " |",
            "|---" * (2 + len(secs)) + "|",
        ]
        lines += [
            "| " + " | ".join([r["model"], r["dataset"]] + [_fmt(r["rewardbench"][s]) for s in secs]) + " |"
            for r in rb_rows
        ]
        checked = {r["dataset"]: metrics["models"][r["model"]]["datasets"][r["dataset"]]["rewardbench"]
                   .get("counts") for r in rb_rows}
        for ds, c in checked.items():
            if c:
                bad = list(c["mismatches"].items())
                shown = ", ".join(f"{s} {got}/{want}" for s, (got, want) in bad[:4]) + (" ..." if len(bad) > 4 else "")
                lines.append(f"\n{ds}: {c['total']} pairs on RewardBench subsets, the `filtered` split has "
                             f"{c['expected_total']}; " + (f"{len(bad)} subsets differ (got/expected: {shown})."
                                                           if bad else "every subset count matches."))
    for name, m in metrics["models"].items():
        lines += ["", f"## {name} ({m['kind']}: {m['path']})"]
        for ds, entry in m["datasets"].items():
            lines += ["", f"### {ds}", "", _HEADER, _metric_row("**all**", entry["overall"])]
            subsets = entry.get("subsets", {})
            if len(subsets) > 1:
                lines += [_metric_row(s, sm) for s, sm in subsets.items()]
            o = entry["overall"]
            off = entry.get("official")
            if off:
                lines += ["", f"{off['benchmark']} (official){_incomplete(off)}: " + ", ".join(
                    f"{k} {_fmt(v)}" for k, v in off.items() if isinstance(v, float))]
                for group in ("domains", "categories", "groups", "subsets"):
                    for g, gv in (off.get(group) or {}).items():
                        lines.append(f"- {g}: " + ", ".join(
                            f"{k} {_fmt(v) if isinstance(v, float) else v}" for k, v in gv.items()))
                for sname, sm in subsets.items() if len(subsets) > 1 else ():  # benchmarks reporting each subset
                    if sm.get("official"):
                        lines.append(f"- {sname}: " + ", ".join(
                            f"{k} {_fmt(v)}" for k, v in sm["official"].items() if isinstance(v, float)))
            lines += [
                "",
                f"Judgments {o['judgments']}, parse failures {o['parse_failures']}; "
                f"P(verdict = slot 1) {_fmt(o['slot1_rate'])}; probability read for "
                f"{_fmt(o['probability']['coverage'])}% of judgments, "
                f"ECE {_fmt(o['probability']['ece'], False)}; "
                f"rationale transfer probed {o['faithfulness']['probed']}.",
            ]
    return "\n".join(lines) + "\n"


def console_summary(metrics: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    lines = []
    for row in metrics["comparison"]:
        official = row.get("official")
        lines.append(
            f"{row['model']} on {row['dataset']}: {row['pairs']} pairs, acc {_fmt(row['accuracy'])}, "
            f"avg {_fmt(row['accuracy_avg'])}, strict {_fmt(row['accuracy_strict'])}, "
            f"consistency {_fmt(row['consistency'])}, parse fail {_fmt(row['parse_failure_rate'])}"
            + (f"; official {_official_cells(official)}" if official else "")
        )
    return "\n".join(lines)


def write_charts(out: Path, metrics: dict[str, Any]) -> list[str]:
    """``accuracy.png`` (per model: data sets and subsets, random / avg / strict bars) and
    ``reliability.png`` (P(chosen better) calibration per model and data set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = metrics["models"]
    fig, axes = plt.subplots(len(models), 1, figsize=(10, 3.2 * len(models)), squeeze=False)
    for ax, (name, m) in zip(axes[:, 0], models.items(), strict=True):
        groups: list[tuple[str, dict]] = []
        for ds, entry in m["datasets"].items():
            groups.append((ds, entry["overall"]))
            subsets = entry.get("subsets", {})
            if len(subsets) > 1:
                groups += [(f"{ds}/{s}", sm) for s, sm in subsets.items()]
        width = 0.27
        for k, (key, label) in enumerate(
            (
                ("accuracy", "random order"),
                ("accuracy_avg", "avg of orders"),
                ("accuracy_strict", "strict (both)"),
            )
        ):
            vals = [100 * (g[1][key] or 0) for g in groups]
            ax.bar([i + (k - 1) * width for i in range(len(groups))], vals, width, label=label)
        ax.axhline(50, color="grey", lw=0.8, ls="--")
        ax.set_xticks(range(len(groups)), [g[0] for g in groups], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy %")
        ax.set_title(f"{name} ({m['kind']})")
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8, label="perfect calibration")
    for name, m in models.items():
        for ds, entry in m["datasets"].items():
            bins = [b for b in entry["overall"]["probability"]["reliability"] if b["count"]]
            ax.plot(
                [b["mean_p"] for b in bins],
                [b["observed"] for b in bins],
                marker="o",
                label=f"{name} / {ds} (Brier {_fmt(entry['overall']['probability']['brier'], False)})",
            )
    ax.set_xlabel("predicted P(answer better)")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("reliability (symmetrised pairs)")
    fig.tight_layout()
    fig.savefig(out / "reliability.png", dpi=110)
    plt.close(fig)
    return ["accuracy.png", "reliability.png"]


def tracker_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The comparison table for a tracker: flat ``eval/<model>/<dataset>/<metric>`` scalars (the
    project's headline metrics and the benchmark's official ones) and the table's rows."""
    flat: dict[str, float] = {}
    rows = []
    for row in metrics["comparison"]:
        prefix = f"eval/{row['model']}/{row['dataset']}"
        values = {k: row.get(k) for k in ("pairs", *(k for k, _ in _COMPARE_COLUMNS))}
        for k, v in (row.get("official") or {}).items():
            if k != "benchmark":
                values[f"official/{k}"] = v
        flat.update({f"{prefix}/{k}": v for k, v in values.items() if isinstance(v, int | float)})
        rows.append({"model": row["model"], "kind": row["kind"], "dataset": row["dataset"], **values})
    return flat, rows
