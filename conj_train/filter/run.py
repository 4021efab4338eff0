"""Stage 2: label-agreement filtering of sampled judgments into a DPO preference dataset.

Reads a finished sampling run (``manifest.json``, ``prompts/shard-*.jsonl``,
``judgments/shard-*.jsonl``), classifies every judgment against its pair's label, builds
contrastive pairs per pair id (:mod:`conj_train.filter.rules`), splits them by pair id and writes
``output_dir``::

    dataset/            datasets.DatasetDict (train, validation), TRL's conversational preference format
    train.jsonl         the same rows, for people to open
    validation.jsonl
    report.json         every input pair and judgment accounted for (see build_report)
    report.md, report.png
    manifest.json       config, hashes, counts, versions; written last, atomically

Rows: ``prompt`` = [system turn if sampling used a ``system_prompt``, user turn with the judge
prompt], ``chosen`` / ``rejected`` = one assistant turn each with a judgment text, plus the provenance
columns ``pair_id``, ``pair_type``, ``label``, ``chosen_judgment_id``, ``rejected_judgment_id``.
The DPO prompt is always the plain judge prompt, also for hint judgments (Con-J trains the judge to
produce the hinted judgment without the hint).

All judgments are held in memory, grouped by pair id (about 1 GB per million judgments of ~500
characters). A rerun with the same config and input is a no-op; a different one is refused unless
``overwrite``.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conj_train.config import PUBLISH_FIELDS, PublishOptions, config_to_dict, settings_hash
from conj_train.errors import ConjError
from conj_train.filter.pairs import Pair, balance_by_label, build_pairs, split_of
from conj_train.filter.report import (
    build_report,
    format_summary,
    report_markdown,
    tracker_metrics,
    write_report_png,
)
from conj_train.filter.rules import LengthRule, PairRules, SampledJudgment
from conj_train.filter.swap import swapped_row
from conj_train.io import (
    atomic_write_json,
    atomic_write_text,
    file_hash,
    library_versions,
    read_json,
    write_jsonl,
)
from conj_train.prompts.templates import get_template
from conj_train.runs import (
    check_output_dir,
    check_separate,
    finished_output,
    folder_lock,
    remove_outputs,
    run_fingerprint,
)
from conj_train.sample.files import read_judgments, read_prompts, read_sample_manifest
from conj_train.tokens import LazyTokenizer
from conj_train.trackers import log_stage

SPLITS = ("train", "validation")
# Fields that do not change the output: excluded from the config hash (the input is hashed by content).
_RUNTIME_FIELDS = {"dataset_name", "output_dir", "overwrite", *PUBLISH_FIELDS}
_OUTPUTS = ("manifest.json", "dataset", "train.jsonl", "validation.jsonl", "report.json", "report.md",
            "report.png")


@dataclass
class FilterConfig(PublishOptions):
    """Configuration of the filter stage; defaults reproduce the released code (``code`` preset).

    Its pair-building and length rules are the core's own dataclasses (:class:`PairRules`,
    :class:`LengthRule`), nested here and parsed from the same flat recipe keys (``preset``,
    ``max_best_of_n``, ..., ``seed``; ``length_rule``, ``cut_tokens``, ...). The input is a finished
    ``conj sample`` folder, named ``dataset_name`` like every stage's input (the data set the
    judgments are filtered from). ``report_to`` logs the pairs by type and the label balance;
    ``push_to_hub`` uploads the pair dataset with its card (:mod:`conj_train.filter.hub`).
    """

    dataset_name: str = field(default="", metadata={
        "help": "The finished `conj sample` folder to filter (required; hashed by content, not by name)."})
    output_dir: str = field(default="", metadata={"help": "The folder to write (required; not hashed)."})
    rules: PairRules = field(default_factory=PairRules)
    length: LengthRule = field(default_factory=LengthRule)
    tokenizer: str | None = field(default=None, metadata={
        "help": "Tokenizer of the length rule; null: the sampling run's model."})
    trust_remote_code: bool = field(default=False, metadata={
        "help": "Run the tokenizer repo's own code (transformers' trust_remote_code); only for repos you trust."})
    balance: bool = field(default=False, metadata={
        "help": "Beyond the original: downsample the majority label so chosen judgments say 1 and 2 "
                "equally often (seeded by seed)."})
    # Ablation "no rationale": each parsed judgment becomes {"<verdict key>": v}; unparseable ones stay.
    verdict_only: bool = field(default=False, metadata={
        "help": "Ablation 'no rationale': each parsed judgment reduced to its verdict object."})
    # Beyond the original: every pair also with its answers swapped (filter/swap.py), so DPO sees each
    # contrast in both slot orders and cannot learn a position prior from it.
    swap_orders: bool = field(default=False, metadata={
        "help": "Beyond the original: every pair also with its answers swapped (verdicts remapped), "
                "against a slot-order prior."})
    validation_share: float = field(default=0.05, metadata={
        "help": "Share of pair ids in the validation split, [0, 1) (by a hash of the pair id)."})
    overwrite: bool = field(default=False, metadata={
        "help": "Replace an earlier filter run of another config or input in output_dir, instead of refusing."})

    def validate(self) -> None:
        """Check values before any file is read."""
        for name in ("dataset_name", "output_dir"):
            if not getattr(self, name):
                raise ConjError(f"filter: '{name}' is required")
        self.rules.validate()
        self.length.validate()
        self.check_publish("filter")
        share = self.validation_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
            raise ConjError(f"filter: validation_share must be in [0, 1), got {share!r}")

    def output_hash(self) -> str:
        """Hash of every setting that changes the output (``swap_orders`` only when on, so the folders
        written before the option existed keep their hash)."""
        return settings_hash(self, exclude=_RUNTIME_FIELDS | ({"swap_orders"} if not self.swap_orders else set()))


@dataclass
class FilterResult:
    """What a filter run did; ``skipped`` when an identical earlier run made it a no-op."""

    output_dir: Path
    counts: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    summary: str = ""


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: classifying builds millions of small tuples, and its
    repeated full scans would cost about a third of the stage's time; nothing here forms cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# --- output ------------------------------------------------------------------------------------


def pair_row(pair: Pair, prompt: list[dict[str, str]], verdict_key: str | None = None) -> dict[str, Any]:
    """One dataset row in TRL's conversational preference format, with provenance columns.

    With ``verdict_key``, each judgment that has a verdict is written as ``{verdict_key: verdict}``
    alone (the "no rationale" ablation)."""
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": judgment_text(pair.chosen, verdict_key)}],
        "rejected": [{"role": "assistant", "content": judgment_text(pair.rejected, verdict_key)}],
        "pair_id": pair.pair_id,
        "pair_type": pair.pair_type,
        "label": pair.label,
        "chosen_judgment_id": pair.chosen.judgment_id,
        "rejected_judgment_id": pair.rejected.judgment_id,
    }


def judgment_text(judgment: SampledJudgment, verdict_key: str | None = None) -> str:
    """The judgment's text, or ``{verdict_key: verdict}`` when a key is given and it has a verdict."""
    if verdict_key is None or judgment.verdict is None:
        return judgment.text
    return json.dumps({verdict_key: judgment.verdict}, ensure_ascii=False)


def _features() -> Any:
    from datasets import Features, List, Value

    msgs = List({"role": Value("string"), "content": Value("string")})
    text = Value("string")
    return Features({"prompt": msgs, "chosen": msgs, "rejected": msgs, "pair_id": text, "pair_type": text,
                     "label": Value("int64"), "chosen_judgment_id": text, "rejected_judgment_id": text})


def _save_dataset(out: Path, rows: dict[str, list[dict]]) -> None:
    from datasets import Dataset, DatasetDict
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    features = _features()
    dd = DatasetDict({
        split: Dataset.from_dict({k: [r[k] for r in split_rows] for k in features}, features=features)
        for split, split_rows in rows.items()
    })
    tmp = out / ".dataset.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    quiet = not are_progress_bars_disabled()
    if quiet:  # a progress bar per split is noise next to the summary
        disable_progress_bars()
    try:
        # An empty split saved with the default sharding writes no data file and then fails to
        # load (datasets 5.2), so empty splits get one (empty) shard.
        dd.save_to_disk(str(tmp), num_shards={s: 1 for s, ds in dd.items() if ds.num_rows == 0})
    finally:
        if quiet:
            enable_progress_bars()
    shutil.rmtree(out / "dataset", ignore_errors=True)
    tmp.rename(out / "dataset")


def _check_output(out: Path, cfg: FilterConfig, in_hash: str) -> dict | None:
    """The earlier manifest if this exact run is already done; refuse a different one unless overwrite."""
    done = finished_output(out, config_hash=cfg.output_hash(), same_input=lambda old: old.get("hash") == in_hash,
                           overwrite=cfg.overwrite, what="a filter run")
    if done is None:
        remove_outputs(out, (*_OUTPUTS, ".dataset.tmp"))  # only what this stage writes
    return done


def add_swapped_rows(rows: list[dict], pairs: list[Pair], prompts: dict[str, dict], template: Any) -> dict[str, int]:
    """Append each row again with its answers swapped (``swap_orders``); counts of swapped and
    unswappable rows (a prompt the template does not reproduce byte for byte is left as it is)."""
    counts = {"swapped": 0, "unswappable": 0}
    for row, pair in zip(list(rows), pairs, strict=True):
        verdicts = (pair.chosen.verdict, pair.rejected.verdict)
        swapped = swapped_row(row, prompts[pair.pair_id], template, verdicts)
        if swapped is None:
            counts["unswappable"] += 1
        else:
            rows.append(swapped)
            counts["swapped"] += 1
    return counts


# --- the stage ---------------------------------------------------------------------------------


def _rationale_key(sample_cfg: dict) -> str:
    """The rationale key of the template the judgments were sampled with (the length rule reads only
    it, as the original reads only ``原因``); a user template file is read again for it."""
    return get_template(sample_cfg.get("template") or "conj-zh").rationale_key


def run_filter(cfg: FilterConfig) -> FilterResult:
    """Run stage 2 on the sampling run ``cfg.dataset_name``; write the dataset, report and manifest to ``cfg.output_dir``."""
    cfg.validate()
    t0 = time.perf_counter()
    sample_dir, out = Path(cfg.dataset_name), check_output_dir(cfg.output_dir)
    check_separate(out, [sample_dir, cfg.tokenizer])
    with folder_lock(out, "filter", what="a filter run"):  # one filter run writes this folder at a time
        return _filter(cfg, sample_dir, out, t0)


def _filter(cfg: FilterConfig, sample_dir: Path, out: Path, t0: float) -> FilterResult:
    sample_manifest = read_sample_manifest(sample_dir)
    in_hash = run_fingerprint(sample_dir, ("prompts", "judgments"))  # manifest + both record sets
    done = _check_output(out, cfg, in_hash)
    if done is not None:
        summary = f"{out}: already filtered with this config and input; nothing to do"
        if cfg.push_to_hub:  # a finished run can be pushed by rerunning it with push_to_hub
            summary += "\n" + _push(cfg, out, read_json(out / "report.json"), sample_manifest)
        return FilterResult(out, done.get("counts", {}), skipped=True, summary=summary)

    sample_cfg = sample_manifest.get("config", {})
    tok_name = cfg.tokenizer or sample_cfg.get("model_name_or_path") or sample_cfg.get("model", "")
    tokenizer = LazyTokenizer(tok_name, cfg.trust_remote_code or bool(sample_cfg.get("trust_remote_code")),
                              purpose="filter: the length rule")
    judgment_counts: Counter = Counter()
    rules = cfg.rules
    with gc_paused():
        prompts = read_prompts(sample_dir)
        expected = sample_manifest.get("counts", {})
        if "pairs" in expected and len(prompts) != expected["pairs"]:
            raise ConjError(f"{sample_dir}: {len(prompts)} prompts on disk but the sampling manifest lists "
                            f"{expected['pairs']} pairs; the prompts files changed after sampling")
        grouped = read_judgments(sample_dir, prompts, tokenizer=tokenizer, length_rule=cfg.length,
                                 counts=judgment_counts, expected=expected.get("judgments"),
                                 rationale_key=_rationale_key(sample_cfg))
        outcomes = [build_pairs(pid, prompts[pid]["label"], grouped.get(pid, []), rules)
                    for pid in sorted(prompts)]
    by_split: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for o in outcomes:
        by_split[split_of(o.pair_id, cfg.validation_share)].extend(o.pairs)
    before = {s: list(ps) for s, ps in by_split.items()}
    if cfg.balance:
        by_split = {s: balance_by_label(ps, cfg.rules.seed)[0] for s, ps in by_split.items()}

    template = get_template(sample_cfg.get("template") or "conj-zh")
    verdict_key = template.verdict_key if cfg.verdict_only else None
    # The DPO prompt is what the judge was sampled from, as sampling wrote it (system turn included).
    rows = {s: [pair_row(p, prompts[p.pair_id]["messages"], verdict_key) for p in ps]
            for s, ps in by_split.items()}
    report = build_report(prompts, outcomes, judgment_counts, before, by_split)
    if cfg.swap_orders:
        report["swap_orders"] = {s: add_swapped_rows(rows[s], ps, prompts, template) for s, ps in by_split.items()}
    out.mkdir(parents=True, exist_ok=True)
    _save_dataset(out, rows)
    for split, split_rows in rows.items():
        write_jsonl(out / f"{split}.jsonl", split_rows)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", report_markdown(report))
    write_report_png(report, out / "report.png")
    counts = {"input_pairs": report["input_pairs"], "judgments": report["judgments_read"],
              "pairs": report["pairs_total"], "train": len(rows["train"]),
              "validation": len(rows["validation"]), "lost": report["lost"],
              **({"swap_orders": report["swap_orders"]} if cfg.swap_orders else {})}
    atomic_write_json(out / "manifest.json", {
        "stage": "filter",
        "config_hash": cfg.output_hash(),
        "config": config_to_dict(cfg),
        "input": {"sample_dir": str(sample_dir), "hash": in_hash,
                  "manifest_hash": file_hash(sample_dir / "manifest.json"),
                  "sample_config_hash": sample_manifest.get("config_hash")},
        "tokenizer": {"name": tok_name, "used": tokenizer.loaded},
        "counts": counts,
        "seconds": round(time.perf_counter() - t0, 2),
        "complete": True,
        "versions": library_versions(),
    })
    summary = format_summary(report, out)
    log_stage(cfg.report_to, stage="filter", output_dir=out, config=config_to_dict(cfg),
              metrics=tracker_metrics(report),
              tables={"filter/pairs_by_type": [{"pair_type": t, "pairs": n}
                                               for t, n in report["pairs_by_type"].items()]})
    if cfg.push_to_hub:
        summary += "\n" + _push(cfg, out, report, sample_manifest)
    return FilterResult(out, counts, summary=summary)


def _push(cfg: FilterConfig, out: Path, report: dict[str, Any], sample_manifest: dict[str, Any]) -> str:
    from conj_train.filter.hub import push_pairs

    url = push_pairs(out, report, config_to_dict(cfg), sample_manifest.get("config", {}),
                     repo_id=str(cfg.hub_repo_id), private=cfg.hub_private)
    return f"pushed the pair dataset to {url}"
