"""The filter's pair dataset on the Hub: the TRL preference rows as Parquet, the filter report, and a
dataset card saying how the pairs were built and how many of each type there are.

The upload layout is the one ``datasets``' own ``push_to_hub`` writes (``data/<split>-*.parquet`` and
the card's ``configs``), so ``load_dataset("<repo>")`` gives the same splits as the local
``dataset/`` folder; it is built here rather than with ``DatasetDict.push_to_hub`` because the card,
the report files and the data go up as one commit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conj_train.hub import (
    CITATION,
    dataset_card,
    looks_like_hub_id,
    push_folder,
    size_category,
    stage_file,
    staging_folder,
    template_language,
)


def card_body(report: dict[str, Any], filter_config: dict[str, Any], sample_config: dict[str, Any],
              repo_id: str) -> str:
    """The Markdown body of the pair dataset's card."""
    s, f = sample_config, filter_config
    splits = report["splits"]
    after = report["label_balance"]["after"]
    lines = [
        "# Con-J contrastive judgment pairs", "",
        f"DPO preference pairs of judgments for training a generative judge with Con-J "
        f"(Ye et al., 2024), built with conj-train from the preference data `{s.get('dataset_name', '?')}`.",
        "", "## How the pairs were built", "",
        f"1. **Sampling**: the judge `{s.get('model_name_or_path', '?')}` wrote {s.get('n', '?')} judgments "
        f"per preference pair with the `{s.get('template', '?')}` prompt (temperature {s.get('temperature', '?')}, "
        f"top-p {s.get('top_p', '?')}), and {s.get('hint_samples', '?')} judgment(s) each told the right and "
        f"the wrong answer (hint reading `{s.get('hint_reading', '?')}`, hints `{s.get('hint_when', '?')}`).",
        f"2. **Filtering**: every judgment's verdict was parsed and compared with the pair's label; "
        f"contrastive pairs (a judgment agreeing with the label as chosen, one disagreeing or unparseable "
        f"as rejected) were built by the `{f.get('preset', '?')}` preset (at most {f.get('max_best_of_n', '?')} "
        f"best-of-n pairs per input pair), length rule {'on' if f.get('length_rule') else 'off'}, label "
        f"balancing {'on' if f.get('balance') else 'off'}, validation share {f.get('validation_share', '?')} "
        "(split by input pair id).",
        "3. The prompt of every row is the plain judge prompt (also for hint judgments: the judge learns to "
        "write the hinted judgment without the hint).", "",
        "## Counts", "",
        f"{report['input_pairs']} input pairs, {report['judgments_read']} judgments -> "
        f"**{report['pairs_total']} pairs**; {report['lost']} input pairs gave none "
        f"({report['lost_share']:.1%}).", "",
        "| pair type | pairs |", "|---|---:|",
        *(f"| {t} | {n} |" for t, n in report["pairs_by_type"].items()), "",
        "| split | pairs | input pairs | chosen names answer 1 | chosen names answer 2 |",
        "|---|---:|---:|---:|---:|",
        *(f"| {name} | {sp['pairs']} | {sp['input_pairs']} | {after[name]['label_1']} | {after[name]['label_2']} |"
          for name, sp in splits.items()), "",
        "`report.json` / `report.md` hold the full accounting (judgments by kind and class, lost input pairs "
        "by reason, the length rule's effect).", "",
        "## Columns", "",
        "TRL's conversational preference format: `prompt` (system turn if sampling used one, then the judge "
        "prompt), `chosen` / `rejected` (one assistant turn each: a judgment), plus `pair_id`, `pair_type`, "
        "`label` (the slot of the better answer) and the two judgment ids.", "",
        "## Use", "", "```python", "from datasets import load_dataset", "",
        f'pairs = load_dataset("{repo_id}")', "```", "",
        "Train a judge on them with `conj train --dataset_name <folder>` (conj-train) or TRL's `DPOTrainer`.",
        "", "## Citation", "", "```bibtex", CITATION, "```",
    ]
    return "\n".join(lines)


def push_pairs(out: Path, report: dict[str, Any], filter_config: dict[str, Any],
               sample_config: dict[str, Any], *, repo_id: str, private: bool | None) -> str:
    """Upload the filter folder ``out``'s pair dataset, report and card to ``repo_id``; returns its URL."""
    from datasets import load_from_disk
    from huggingface_hub import DatasetCardData

    dd = load_from_disk(str(out / "dataset"))
    source = str(sample_config.get("dataset_name") or "")
    lang = template_language(sample_config.get("template"))
    with staging_folder(out) as stage:
        files = []
        for split, ds in dd.items():
            if ds.num_rows:  # an empty split has no file to load back from the Hub
                ds.to_parquet(str(stage / "data" / f"{split}-00000-of-00001.parquet"))
                files.append({"split": split, "path": f"data/{split}-*.parquet"})
        for name in ("report.json", "report.md"):
            stage_file(out / name, stage / name)
        data = DatasetCardData(
            language=[lang] if lang else None,
            task_categories=["text-generation"],
            tags=["con-j", "dpo", "preference", "llm-judge", "trl", "conj-train"],
            size_categories=[size_category(report["pairs_total"])],
            source_datasets=[source] if looks_like_hub_id(source) else None,
            pretty_name="Con-J contrastive judgment pairs",
            configs=[{"config_name": "default", "data_files": files}],
        )
        dataset_card(data, card_body(report, filter_config, sample_config, repo_id)).save(stage / "README.md")
        return push_folder(stage, repo_id, private=private,
                           commit_message=f"conj-train filter: {report['pairs_total']} judgment pairs")

