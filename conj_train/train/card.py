"""The model card (``README.md``) of a trained judge or scalar reward model, and the trainer mixin
that writes it wherever the Trainer writes a card (the final folder, checkpoints, pushes).

:func:`card_info` gathers what the card shows as plain data (base model, objective, the
hyper-parameters that matter, data counts, filter summary, final metrics, versions, and how the
training data was made: template, source, pushed pair dataset); :func:`model_card` renders it on
``huggingface_hub``'s ``ModelCardData`` / ``ModelCard`` (``base_model``, ``datasets``, ``license``,
``language``, ``pipeline_tag``, ``model-index``), with a usage snippet that runs as written and the
Con-J citation. :func:`add_eval_results` writes ``conj eval``'s results into a finished card as
model-index entries (``conj run`` does after its eval stage).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from conj_train.errors import ConjError
from conj_train.io import atomic_write_text, library_versions
from conj_train.train.pair_data import SplitCounts
from conj_train.train.tracking import DPO_PANELS


def objective(training_args: Any) -> str:
    """The loss in words, e.g. ``sigmoid DPO (beta 0.1) + 0.001 x SFT (chosen NLL)``."""
    types = list(training_args.loss_type)
    weights = list(training_args.loss_weights or [1.0] * len(types))
    parts = []
    for t, w in zip(types, weights, strict=True):
        name = {"sigmoid": f"sigmoid DPO (beta {training_args.beta})",
                "sft": "SFT (token-mean NLL of the chosen judgment)"}.get(t, t)
        parts.append(name if w == 1 else f"{w:g} x {name}")
    return " + ".join(parts) + "; log-probs summed over judgment tokens"


def filter_summary(report: dict | None) -> dict | None:
    """The filter report's headline counts (shown in the card and report.json), or None."""
    if not report:
        return None
    keys = ("input_pairs", "input_pairs_with_pairs", "lost", "pairs_total", "pairs_by_type", "splits",
            "judgments_read", "judgments_by_class")
    return {k: report[k] for k in keys if k in report}


_CARD_KEYS = ("learning_rate", "lr_scheduler_type", "warmup_steps", "adam_beta1",
              "adam_beta2", "weight_decay", "max_grad_norm", "num_train_epochs", "max_steps",
              "per_device_train_batch_size", "gradient_accumulation_steps", "global_batch_size", "beta",
              "loss_type", "loss_weights", "max_length", "overlong", "precompute_ref_log_probs",
              "bf16", "gradient_checkpointing", "seed", "use_peft", "lora_r", "lora_alpha",
              "load_in_4bit", "max_train_pairs", "pair_types", "center_rewards_coefficient")


def card_info(kind: str, model_args: Any, training_args: Any, config: dict[str, Any],
              counts: dict[str, SplitCounts], filter_report: dict | None,
              metrics: dict[str, float]) -> dict[str, Any]:
    """Everything :func:`model_card` shows, as plain data."""
    from conj_train.hub import looks_like_hub_id

    source = str(config.get("dataset_name") or "")
    # A judge's data is a filter folder (its setup says how it was made); a reward model's may be a
    # Hub data set itself.
    setup = judge_setup(source) or ({"source": source} if looks_like_hub_id(source) else {})
    hub_id = getattr(training_args, "hub_model_id", None) if getattr(training_args, "push_to_hub", False) else None
    return {
        "kind": kind,
        "base_model": model_args.model_name_or_path,
        # Where the snippet loads the model from: the Hub repo it is pushed to (when named in full),
        # else this folder.
        "model_id": hub_id if hub_id and "/" in hub_id else str(Path(training_args.output_dir).resolve()),
        "objective": objective(training_args) if kind == "judge" else
        "Bradley-Terry: -log sigmoid(r(chosen) - r(rejected)), scalar head on the last token",
        "hyperparameters": {k: config[k] for k in _CARD_KEYS if config.get(k) is not None
                            and (config.get("use_peft") or not k.startswith(("lora_", "load_in_")))},
        "world_size": training_args.world_size,
        "data": {s: asdict(c) for s, c in counts.items()},
        "filter": filter_summary(filter_report),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and _card_metric(k)},
        "versions": library_versions(),
        "setup": setup,
        "license": config.get("card_license") or base_model_license(model_args.model_name_or_path),
        # A judge speaks its template's language; a reward model reads whatever its data holds.
        "language": config.get("card_language") or (_languages(setup.get("template")) if kind == "judge" else None),
    }


def judge_setup(dataset_name: str | None) -> dict[str, Any]:
    """How the judge's training data was made, read from the filter folder and the sampling run behind
    it: the prompt template, the system prompt, the preference source and the pushed pair dataset.
    Empty where the training data is not a filter folder (e.g. a DatasetDict of its own)."""
    from conj_train.io import read_json

    folder = Path(dataset_name) if dataset_name else None
    filter_manifest = folder / "manifest.json" if folder else None
    if filter_manifest is None or not filter_manifest.is_file():
        return {}
    fm = read_json(filter_manifest)
    out: dict[str, Any] = {}
    fc = fm.get("config") or {}
    if fc.get("push_to_hub") and fc.get("hub_repo_id"):
        out["pairs_repo"] = fc["hub_repo_id"]
    sample_manifest = Path((fm.get("input") or {}).get("sample_dir") or "") / "manifest.json"
    if sample_manifest.is_file():
        sc = read_json(sample_manifest).get("config") or {}
        out.update({k: sc.get(k) for k in ("template", "system_prompt") if sc.get(k) is not None})
        out["source"] = sc.get("dataset_name")
    return out


def base_model_license(base: str) -> str | None:
    """The license named in a local base model's own card, or None (a Hub id is not fetched)."""
    readme = Path(base) / "README.md"
    if not readme.is_file():
        return None
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(readme).data.license
    except ValueError:  # a README without valid metadata
        return None


def _languages(template: str | None) -> list[str] | None:
    from conj_train.hub import template_language

    lang = template_language(template)
    return [lang] if lang else None


def _card_metric(key: str) -> bool:
    return any(w in key for w in ("loss", "accurac", "margin")) or key in ("epoch", "train_runtime")


def _table(rows: dict[str, Any]) -> str:
    return "\n".join(["| key | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows.items())])


def usage_snippet(card: dict[str, Any]) -> str:
    """Python that loads this model and judges one pair, runnable as written (``pip install conj-train``)."""
    model_id = card.get("model_id") or "PATH"
    if card["kind"] != "judge":
        return "\n".join([
            "from conj_train.inference.reward_model import RewardModel", "",
            f"rm = RewardModel.from_pretrained({model_id!r})",
            'r1, r2 = rm.score_pair("What is the capital of France?", "Paris.", "Lyon.")',
            "print(r1, r2)  # the higher reward is the better answer",
        ])
    setup = card.get("setup") or {}
    options = [f"template={setup.get('template') or 'conj-zh'!r}"]
    if setup.get("system_prompt") is not None:
        options.append(f"system_prompt={setup['system_prompt']!r}")
    return "\n".join([
        "from conj_train.inference.judge import Judge", "",
        f"judge = Judge.from_pretrained({model_id!r}, {', '.join(options)})",
        'verdict = judge.compare("What is the capital of France?", "Paris.", "Lyon.")',
        "print(verdict.better)  # 1 or 2: the better answer (None: no verdict could be read)",
        "print(verdict.probability)  # P(answer 1 is better), read from the verdict token's logits",
        "print(verdict.rationale)",
    ])


def card_data(card: dict[str, Any]) -> Any:
    """The card's metadata as ``huggingface_hub.ModelCardData`` (front matter and model-index)."""
    from huggingface_hub import ModelCardData

    from conj_train.hub import looks_like_hub_id

    judge = card["kind"] == "judge"
    setup = card.get("setup") or {}
    datasets = [d for d in (setup.get("pairs_repo"), setup.get("source")) if d and looks_like_hub_id(str(d))]
    base = card["base_model"]
    return ModelCardData(
        base_model=base if looks_like_hub_id(base) else None,
        datasets=datasets or None,
        license=card.get("license"),
        language=card.get("language"),
        library_name="transformers",
        pipeline_tag="text-generation" if judge else "text-classification",
        tags=["con-j", "llm-judge", "generative-judge", "dpo", "trl", "conj-train"] if judge
        else ["reward-model", "trl", "conj-train"],
        model_name=Path(str(card.get("model_id") or "judge")).name,
        eval_results=card.get("eval_results") or None,
    )


EVAL_HEADING = "## Evaluation"


def model_card(card: dict[str, Any]) -> str:
    """The README.md of a trained judge (or scalar reward model): metadata, usage, evaluation,
    training details, versions and the Con-J citation."""
    from huggingface_hub import ModelCard

    from conj_train.hub import CITATION

    judge = card["kind"] == "judge"
    title = "Con-J generative judge" if judge else "Scalar reward model (Bradley-Terry baseline)"
    what = ("A generative pairwise judge trained with Con-J (Ye et al., 2024): it writes a rationale and "
            "names the better of two answers, learned by DPO on its own contrastive judgments."
            if judge else "A scalar reward model, conj-train's Bradley-Terry baseline for a Con-J judge.")
    lines = [f"# {title}", "", what, "",
             f"Trained from `{card['base_model']}` with conj-train "
             f"({card['world_size']} process(es), {card.get('step', 0)} optimizer steps).", "",
             "## Usage", "", "```python", usage_snippet(card), "```", ""]
    if judge:
        lines += ["`Judge` renders the judge prompt (the template the judge was trained with) through the chat "
                  "template, starts the answer as Con-J's evaluation does and parses the JSON verdict; "
                  "`judge.compare(q, a1, a2, both_orders=True)` judges both orders.", ""]
    lines += [eval_section(card.get("eval_results") or []), "",
              "## Training", "", "### Objective", "", card["objective"], "", "### Hyper-parameters", "",
              _table(card["hyperparameters"]), "", "### Data", ""]
    for split, c in card["data"].items():
        dropped = {k: v for k, v in c["dropped"].items() if v}
        lines.append(f"- {split}: {c['used']} pairs used of {c['read']} read"
                     + (f"; dropped {dropped}" if dropped else "")
                     + (f"; {c['truncated']} truncated" if c["truncated"] else "")
                     + (f"; token lengths {c['tokens']}" if c.get("tokens") else ""))
    if card.get("filter"):
        f = card["filter"]
        lines += ["", "Filter stage (contrastive judgment pairs):", "",
                  _table({k: v for k, v in f.items() if k != "splits"})]
    lines += ["", "### Final metrics", ""]
    lines.append(_table({k: round(v, 6) for k, v in card["metrics"].items()}) if card["metrics"]
                 else "(training in progress)")
    lines += ["", "## Versions", "", _table(card["versions"]), "",
              "## Citation", "", "```bibtex", CITATION, "```", ""]
    data = card_data(card)
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)))


def eval_section(results: list[Any]) -> str:
    """The card's evaluation section: one row per data set and metric of the model-index entries."""
    if not results:
        return (f"{EVAL_HEADING}\n\nNot evaluated yet. `conj run` fills this in after its eval stage; for a "
                "`conj eval` of your own, `conj_train.train.card.add_eval_results(model_dir, eval_dir, name)`.")
    rows = [f"| {r.dataset_name} | {r.dataset_split or ''} | {r.metric_name or r.metric_type} | "
            f"{100 * r.metric_value:.2f} |" for r in results]
    return "\n".join([EVAL_HEADING, "", "Scored by `conj eval` (values in %; the metadata holds them as "
                      "fractions).", "", "| data set | split | metric | value |", "|---|---|---|---:|", *rows])


# (metrics.json key of a data set's overall entry, metric type, metric name)
_EVAL_METRICS = (
    ("accuracy", "accuracy", "Accuracy (one random order)"),
    ("accuracy_avg", "accuracy", "Accuracy (mean of both orders)"),
    ("consistency", "consistency", "Consistency across orders"),
)


def eval_results(metrics: dict[str, Any], model_name: str) -> list[Any]:
    """``huggingface_hub.EvalResult`` entries of one model from ``conj eval``'s ``metrics.json``: its
    accuracy and consistency per data set, and each benchmark's official headline numbers."""
    from huggingface_hub import EvalResult

    from conj_train.hub import looks_like_hub_id

    model = metrics["models"].get(model_name)
    if model is None:
        raise ConjError(f"metrics.json has no model {model_name!r} (models: {', '.join(metrics['models'])})")
    out = []
    for ds, entry in model["datasets"].items():
        acct = (metrics.get("datasets") or {}).get(ds) or {}
        path = str(acct.get("path") or ds)
        where = {"task_type": "text-generation", "task_name": "Pairwise preference judgment",
                 "dataset_type": path if looks_like_hub_id(path) else ds, "dataset_name": ds,
                 "dataset_split": acct.get("split")}
        for key, mtype, name in _EVAL_METRICS:
            value = entry["overall"].get(key)
            if isinstance(value, int | float):
                out.append(EvalResult(metric_type=mtype, metric_value=float(value), metric_name=name, **where))
        official = entry.get("official")
        if official:
            for key in official.get("headline", []):
                value = official.get(key)
                if isinstance(value, int | float):
                    out.append(EvalResult(metric_type="accuracy", metric_value=float(value),
                                          metric_name=f"{official['benchmark']} {key} (official)", **where))
    return out


def add_eval_results(model_dir: str | Path, eval_dir: str | Path, model_name: str) -> list[Any]:
    """Write model ``model_name``'s results of the evaluation run ``eval_dir`` into the card of the
    model folder ``model_dir``: model-index entries in the metadata and the evaluation section.

    Results of other data sets already in the card are kept; those of a data set evaluated again are
    replaced. Returns the card's results.
    """
    from huggingface_hub import ModelCard

    from conj_train.io import read_json

    readme = Path(model_dir) / "README.md"
    if not readme.is_file():
        raise ConjError(f"{model_dir}: no README.md model card to add results to")
    new = eval_results(read_json(Path(eval_dir) / "metrics.json"), model_name)
    card = ModelCard.load(readme)
    names = {r.dataset_name for r in new}
    results = [r for r in (card.data.eval_results or []) if r.dataset_name not in names] + new
    card.data.eval_results = results
    card.data.model_name = card.data.model_name or Path(model_dir).resolve().name
    text = card.text
    start = text.find(EVAL_HEADING)
    end = text.find("\n## ", start + len(EVAL_HEADING)) if start >= 0 else -1
    section = eval_section(results)
    card.text = (text[:start] + section + ("\n" + text[end:] if end >= 0 else "\n") if start >= 0
                 else text.rstrip() + "\n\n" + section + "\n")
    atomic_write_text(readme, str(card))
    return results


class ConjCardMixin:
    """Trainer mixin: the model card (also written with checkpoints and on push) is conj-train's."""

    card: dict[str, Any] | None = None
    panels: tuple[tuple[str, str, str], ...] = DPO_PANELS

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None) -> None:
        """Write the card to ``output_dir/README.md`` (main process only)."""
        if not self.is_world_process_zero() or self.card is None:  # type: ignore[attr-defined]
            return
        card = dict(self.card, step=self.state.global_step)  # type: ignore[attr-defined]
        out = Path(self.args.output_dir)  # type: ignore[attr-defined]
        atomic_write_text(out / "README.md", model_card(card))

