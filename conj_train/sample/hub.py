"""The sampling run's judgments on the Hub: every judgment record and prompt record as JSON Lines,
the run's manifest, and a dataset card saying how they were sampled and how many parsed.

Two configs, ``judgments`` (one row per judgment) and ``prompts`` (one row per preference pair, with
its judge prompt and label), so ``load_dataset("<repo>", "judgments")`` reads them back; the records
are uploaded as written (hard-linked into the staging folder), not re-encoded.
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


def card_body(manifest: dict[str, Any], repo_id: str) -> str:
    """The Markdown body of the judgments' card."""
    c, n = manifest.get("config", {}), manifest.get("counts", {})
    rates = n.get("share_parseable_by_kind", {})
    lines = [
        "# Con-J sampled judgments", "",
        f"Judgments written by `{c.get('model_name_or_path', '?')}` for the preference pairs of "
        f"`{c.get('dataset_name', '?')}` with conj-train's sampling stage (Con-J, Ye et al., 2024): the "
        "input of the filter that builds contrastive DPO pairs.", "",
        "## How they were sampled", "",
        f"- `repeated`: {c.get('n', '?')} judgments per pair of the `{c.get('template', '?')}` judge prompt "
        f"(temperature {c.get('temperature', '?')}, top-p {c.get('top_p', '?')}, top-k {c.get('top_k', '?')}, "
        f"repetition penalty {c.get('repetition_penalty', '?')}, up to {c.get('max_new_tokens', '?')} new tokens, "
        f"prefill {c.get('prefill')!r}).",
        f"- `hint_correct` / `hint_wrong`: {c.get('hint_samples', '?')} judgment(s) each told the right / "
        f"wrong answer (hint reading `{c.get('hint_reading', '?')}`, temperature "
        f"{c.get('hint_temperature', '?')}, top-p {c.get('hint_top_p', '?')}; hints `{c.get('hint_when', '?')}`).",
        f"- Every judgment's seed derives from (run seed {c.get('seed', '?')}, pair id, kind, index).", "",
        "## Counts", "",
        f"{n.get('judgments', 0)} judgments for {n.get('pairs', 0)} pairs; "
        f"{n.get('share_parseable', 0):.1%} have a verdict the strict parser reads; "
        f"{n.get('share_length', 0):.1%} ended by length.", "",
        "| kind | judgments | parseable |", "|---|---:|---:|",
        *(f"| {k} | {v} | {rates.get(k, 0):.1%} |" for k, v in sorted(n.get("by_kind", {}).items())), "",
        "`manifest.json` holds the full configuration, the input accounting and the library versions.", "",
        "## Use", "", "```python", "from datasets import load_dataset", "",
        f'judgments = load_dataset("{repo_id}", "judgments", split="train")',
        f'prompts = load_dataset("{repo_id}", "prompts", split="train")', "```", "",
        "## Citation", "", "```bibtex", CITATION, "```",
    ]
    return "\n".join(lines)


def push_judgments(out: Path, manifest: dict[str, Any], *, repo_id: str, private: bool | None) -> str:
    """Upload the sampling folder ``out``'s records, manifest and card to ``repo_id``; returns its URL."""
    from huggingface_hub import DatasetCardData

    c = manifest.get("config", {})
    source = str(c.get("dataset_name") or "")
    lang = template_language(c.get("template"))
    with staging_folder(out) as stage:
        for folder in ("judgments", "prompts"):
            for f in sorted((out / folder).glob("shard-*.jsonl")):
                stage_file(f, stage / folder / f.name)
        stage_file(out / "manifest.json", stage / "manifest.json")
        data = DatasetCardData(
            language=[lang] if lang else None,
            task_categories=["text-generation"],
            tags=["con-j", "llm-judge", "judgments", "conj-train"],
            size_categories=[size_category(int(manifest.get("counts", {}).get("judgments", 0)))],
            source_datasets=[source] if looks_like_hub_id(source) else None,
            pretty_name="Con-J sampled judgments",
            configs=[{"config_name": name, "data_files": [{"split": "train", "path": f"{name}/shard-*.jsonl"}]}
                     for name in ("judgments", "prompts")],
        )
        dataset_card(data, card_body(manifest, repo_id)).save(stage / "README.md")
        return push_folder(stage, repo_id, private=private,
                           commit_message=f"conj-train sample: {manifest.get('counts', {}).get('judgments', 0)} judgments")
