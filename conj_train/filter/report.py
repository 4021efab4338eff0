"""The filter's report: every input pair and judgment accounted for, as JSON, Markdown, a PNG and
the console summary.

Apart from :mod:`conj_train.filter.run` (which reads, pairs and writes the dataset) because the report is
a pure function of the pair outcomes and judgment counts, with its own identities to test
(:func:`build_report`), and because plotting pulls in matplotlib, which the stage itself does not need.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from conj_train.filter.pairs import PROFILES, Pair, PairOutcome
from conj_train.filter.rules import CATEGORIES, JUDGMENT_KINDS, PAIR_TYPES


def _share(n: int, total: int) -> float:
    return round(n / total, 4) if total else 0.0


def _labels(pairs: list[Pair]) -> dict[str, int]:
    c = Counter(p.label for p in pairs)
    return {"label_1": c[1], "label_2": c[2]}


def build_report(prompts: dict[str, dict], outcomes: list[PairOutcome], judgment_counts: Counter,
                 before: dict[str, list[Pair]], after: dict[str, list[Pair]]) -> dict[str, Any]:
    """Every input pair and judgment accounted for.

    Identities (checked by the tests): the classes sum to ``judgments_read``;
    ``input_pairs_with_pairs + lost == input_pairs``; the lost reasons sum to ``lost``; the per-input
    histogram sums to ``input_pairs``; the pair types sum to ``pairs_total`` = train + validation.
    A pair id whose pairs were all removed by balancing is lost with reason ``balanced_out``.
    """
    by_kind = {k: {c: judgment_counts[(k, c)] for c in CATEGORIES} for k in JUDGMENT_KINDS}
    by_class = {c: sum(by_kind[k][c] for k in JUDGMENT_KINDS) for c in CATEGORIES}
    final = [p for ps in after.values() for p in ps]
    per_input = Counter(p.pair_id for p in final)
    lost_reasons: Counter[str] = Counter()
    for o in outcomes:
        if not per_input[o.pair_id]:
            lost_reasons[o.lost_reason or "balanced_out"] += 1
    profiles = Counter(o.profile for o in outcomes)
    n_inputs = len(prompts)
    dropped: Counter[str] = Counter()
    for o in outcomes:
        dropped.update(o.dropped)
    dropped["balance"] = sum(map(len, before.values())) - len(final)
    histogram = Counter(per_input[pid] for pid in prompts)
    most = max(histogram, default=0)
    pairs_by_type = Counter(p.pair_type for p in final)
    lost = sum(lost_reasons.values())
    return {
        "input_pairs": n_inputs,
        "judgments_read": sum(by_class.values()),
        "judgments_by_class": by_class,
        "judgments_by_kind": by_kind,
        "unparseable_reasons": dict(sorted((k.split(":", 1)[1], v) for k, v in judgment_counts.items()
                                           if isinstance(k, str) and k.startswith("reason:"))),
        "finish_length": judgment_counts["finish_length"],
        "length_rule": {k.split(":", 1)[1]: v for k, v in sorted(judgment_counts.items(), key=str)
                        if isinstance(k, str) and k.startswith("length_rule:")},
        "duplicates_removed": sum(o.duplicates for o in outcomes),
        "pairs_dropped": dict(sorted(dropped.items())),
        "pairs_total": len(final),
        "pairs_by_type": {t: pairs_by_type[t] for t in PAIR_TYPES},
        "pairs_unparseable_chosen": sum(p.chosen.category != "positive" for p in final),
        "pairs_per_input_pair": {str(k): histogram[k] for k in range(most + 1)},
        "mean_pairs_per_input_pair": round(len(final) / n_inputs, 4) if n_inputs else 0.0,
        "input_pairs_with_pairs": n_inputs - lost,
        "lost": lost,
        "lost_share": _share(lost, n_inputs),
        "lost_reasons": dict(lost_reasons.most_common()),
        "repeated_profile": {p: profiles[p] for p in PROFILES},
        "repeated_profile_share": {p: _share(profiles[p], n_inputs) for p in PROFILES},
        "hint_status": dict(Counter(o.hint_status for o in outcomes).most_common()),
        "label_balance": {
            "before": {s: _labels(ps) for s, ps in before.items()},
            "after": {s: _labels(ps) for s, ps in after.items()},
        },
        "splits": {s: {"pairs": len(ps), "input_pairs": len({p.pair_id for p in ps})} for s, ps in after.items()},
    }


def report_markdown(report: dict[str, Any]) -> str:
    """A short Markdown summary of ``report``."""
    n = report["input_pairs"]
    lines = [
        "# Filter report",
        "",
        f"{n} input pairs, {report['judgments_read']} judgments -> **{report['pairs_total']} DPO pairs** "
        f"(train {report['splits']['train']['pairs']}, validation {report['splits']['validation']['pairs']}); "
        f"lost {report['lost']} input pairs ({report['lost_share']:.1%}).",
        "",
        "| judgments | positive | negative | unparseable |",
        "|---|---:|---:|---:|",
    ]
    for kind, c in report["judgments_by_kind"].items():
        lines.append(f"| {kind} | {c['positive']} | {c['negative']} | {c['unparseable']} |")
    lines += ["", "| pair type | pairs |", "|---|---:|"]
    lines += [f"| {t} | {v} |" for t, v in report["pairs_by_type"].items()]
    lines += ["", "| input pairs | count | share |", "|---|---:|---:|"]
    lines += [f"| {k} pair(s) | {v} | {_share(v, n):.1%} |" for k, v in report["pairs_per_input_pair"].items()]
    lines += [f"| lost: {k} | {v} | {_share(v, n):.1%} |" for k, v in report["lost_reasons"].items()]
    lines += [f"| repeated {k} | {v} | {_share(v, n):.1%} |" for k, v in report["repeated_profile"].items()]
    lines += ["", "| other | count |", "|---|---:|"]
    lines += [f"| unparseable: {k} | {v} |" for k, v in report["unparseable_reasons"].items()]
    lines += [f"| length rule: {k} | {v} |" for k, v in report["length_rule"].items()]
    lines += [f"| pairs dropped: {k} | {v} |" for k, v in report["pairs_dropped"].items()]
    lines.append(f"| duplicate texts removed | {report['duplicates_removed']} |")
    lines.append(f"| pairs with unparseable chosen | {report['pairs_unparseable_chosen']} |")
    for when in ("before", "after"):
        b = report["label_balance"][when]
        lines.append(f"| labels 1/2 {when} balancing | "
                     + ", ".join(f"{s} {v['label_1']}/{v['label_2']}" for s, v in b.items()) + " |")
    return "\n".join(lines) + "\n"


def write_report_png(report: dict[str, Any], path: Path) -> None:
    """Bar charts: judgments by kind and class, pairs by type, pairs per input pair, lost reasons."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    ax = axes[0][0]
    kinds = list(report["judgments_by_kind"])
    width = 0.27
    for i, c in enumerate(CATEGORIES):
        xs = [k + (i - 1) * width for k in range(len(kinds))]
        ax.bar(xs, [report["judgments_by_kind"][k][c] for k in kinds], width, label=c)
    ax.set_xticks(range(len(kinds)), kinds)
    ax.set_title("judgments by kind and class")
    ax.legend()
    panels = (
        (axes[0][1], report["pairs_by_type"], "DPO pairs by type"),
        (axes[1][0], report["pairs_per_input_pair"], "DPO pairs per input pair"),
        (axes[1][1], report["lost_reasons"] or {"none": 0}, "lost input pairs by reason"),
    )
    for ax, data, title in panels:
        ax.bar(range(len(data)), list(data.values()), color="tab:blue")
        ax.set_xticks(range(len(data)), list(data), rotation=20, ha="right", fontsize=8)
        ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)


def format_summary(report: dict[str, Any], out: Path) -> str:
    """A few human lines about a finished run."""
    types = ", ".join(f"{t} {v}" for t, v in report["pairs_by_type"].items())
    top = ", ".join(f"{k} {v}" for k, v in list(report["lost_reasons"].items())[:3])
    unp, dropped = report["pairs_unparseable_chosen"], report["pairs_dropped"].get("unparseable_chosen", 0)
    lines = []
    if unp:
        lines.append(f"WARNING: {unp} of {report['pairs_total']} pairs train an unparseable chosen judgment "
                     "(allow_unparseable_chosen; preset code keeps them as the original does)")
    if dropped:
        lines.append(f"dropped {dropped} pairs whose chosen judgment is unparseable")
    return "\n".join([
        *lines,
        f"{report['input_pairs']} input pairs, {report['judgments_read']} judgments -> "
        f"{report['pairs_total']} DPO pairs (train {report['splits']['train']['pairs']}, "
        f"validation {report['splits']['validation']['pairs']})",
        f"pairs by type: {types}",
        f"lost input pairs: {report['lost']} ({report['lost_share']:.1%})" + (f": {top}" if top else ""),
        f"dataset: {out / 'dataset'}; report: {out / 'report.md'}",
    ])


def tracker_metrics(report: dict[str, Any]) -> dict[str, float | int]:
    """The report's headline numbers as flat tracker keys: pairs by type, the label balance per split
    (after balancing: the rows the judge trains on), judgments by class, what was lost."""
    out: dict[str, float | int] = {
        "filter/input_pairs": report["input_pairs"], "filter/judgments": report["judgments_read"],
        "filter/pairs_total": report["pairs_total"], "filter/lost": report["lost"],
        "filter/lost_share": report["lost_share"],
        "filter/mean_pairs_per_input_pair": report["mean_pairs_per_input_pair"],
    }
    out.update({f"filter/pairs/{t}": n for t, n in report["pairs_by_type"].items()})
    out.update({f"filter/judgments/{c}": n for c, n in report["judgments_by_class"].items()})
    for split, labels in report["label_balance"]["after"].items():
        n = labels["label_1"] + labels["label_2"]
        out[f"filter/balance/{split}/label_1"] = labels["label_1"]
        out[f"filter/balance/{split}/label_2"] = labels["label_2"]
        out[f"filter/balance/{split}/label_1_share"] = _share(labels["label_1"], n)
    return out
