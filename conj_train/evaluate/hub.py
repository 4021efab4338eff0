"""Evaluation results on the Hub, as RewardBench publishes its results: the metrics and summary of
the run, and every model's judgment records (one row per pair and order, with the judge's text), with a
dataset card holding the comparison table and how the judges were run.

One config per model (``load_dataset("<repo>", "<model>")`` reads its judgments); the top-level result
files (``metrics.json``, ``summary.md``, the charts) and RewardBench's own result files
(``rewardbench*/<data set>/eval-set*/<model>.json``, :mod:`conj_train.evaluate.rewardbench_results`)
are uploaded as they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conj_train.evaluate.rewardbench_results import FOLDERS
from conj_train.hub import CITATION, dataset_card, push_folder, stage_file, staging_folder

_RESULT_SUFFIXES = (".json", ".md", ".png")


def card_body(metrics: dict[str, Any], summary_md: str, repo_id: str) -> str:
    """The Markdown body of the results' card: how the judges were run, then ``summary.md``."""
    models = metrics["models"]
    first = next(iter(models), "model")
    lines = [
        "# conj-train evaluation results", "",
        f"Pairwise judgments of {len(models)} model(s) ({', '.join(f'`{n}`' for n in models)}) on "
        f"{', '.join(f'`{d}`' for d in metrics.get('datasets', {})) or 'the data sets below'}, written by "
        "conj-train's evaluation stage.", "",
        "## How the judges were run", "",
        f"- Orders: `{metrics['orders']}` (the random order is seeded per pair: "
        f"{metrics['random_order']['rule']}, seed {metrics['random_order']['swap_seed']}).",
        f"- Decoding `{metrics['decoding']}`, {metrics['samples']} sample(s) per order; prompt template "
        f"`{metrics['template']}`; verdict parser `{metrics['parser']}`; rows read in `{metrics['ingest_mode']}` "
        "mode.",
        "- `metrics.json` holds every metric (the project's and each benchmark's official one); each model's "
        "records are its config below.", "",
        "## Use", "", "```python", "from datasets import load_dataset", "",
        f'records = load_dataset("{repo_id}", "{first}", split="train")', "```", "",
        summary_md.replace("\n# ", "\n## ", 1).strip(), "",
        "## Citation", "", "```bibtex", CITATION, "```",
    ]
    return "\n".join(lines)


def push_results(out: Path, metrics: dict[str, Any], *, repo_id: str, private: bool | None) -> str:
    """Upload the evaluation folder ``out``'s results, judgments and card to ``repo_id``; returns its URL."""
    from huggingface_hub import DatasetCardData

    summary_md = (out / "summary.md").read_text(encoding="utf-8") if (out / "summary.md").is_file() else ""
    with staging_folder(out) as stage:
        for f in sorted(out.iterdir()):
            # README.md is the card written below: a hard link to a file of the same name would be
            # written through.
            if f.is_file() and f.suffix in _RESULT_SUFFIXES and not f.name.startswith(".") \
                    and f.name != "README.md":
                stage_file(f, stage / f.name)
        for folder in FOLDERS.values():  # RewardBench's own result files, where the run wrote them
            for f in sorted((out / folder).rglob("*.json")):
                stage_file(f, stage / f.relative_to(out))
        configs = []
        for name in metrics["models"]:
            for f in sorted((out / "models" / name / "judgments").glob("shard-*.jsonl")):
                stage_file(f, stage / "models" / name / "judgments" / f.name)
            configs.append({"config_name": name,
                            "data_files": [{"split": "train", "path": f"models/{name}/judgments/shard-*.jsonl"}]})
        data = DatasetCardData(tags=["conj-train", "llm-judge", "evaluation", "reward-model"],
                               pretty_name="conj-train evaluation results", configs=configs)
        dataset_card(data, card_body(metrics, summary_md, repo_id)).save(stage / "README.md")
        return push_folder(stage, repo_id, private=private,
                           commit_message=f"conj-train eval: {', '.join(metrics['models'])}")
