"""Stage 2: label-agreement filtering of sampled judgments into a DPO preference dataset.

Reads a finished sampling run (``manifest.json``, ``prompts/shard-*.jsonl``,
``judgments/shard-*.jsonl``), classifies every judgment against its pair's label, builds
contrastive pairs per pair id (:mod:`conj_train.pairs`), splits them by pair id and writes
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

from conj_train.config import config_to_dict, settings_hash
from conj_train.errors import ConjError
from conj_train.io import (
    atomic_write_json,
    atomic_write_text,
    file_hash,
    iter_jsonl,
    library_versions,
    read_json,
    stable_hash,
    write_jsonl,
)
from conj_train.pairs import (
    CATEGORIES,
    JUDGMENT_KINDS,
    PAIR_TYPES,
    PROFILES,
    Judgment,
    LengthRule,
    Pair,
    PairOutcome,
    PairRules,
    balance_by_label,
    build_pairs,
    classify_judgments,
    split_of,
)
from conj_train.prompts import get_template
from conj_train.runs import check_output_dir

SPLITS = ("train", "validation")
# Fields that do not change the output: excluded from the config hash (the input is hashed by content).
_RUNTIME_FIELDS = {"dataset_name", "output_dir", "overwrite"}
_OUTPUTS = ("manifest.json", "dataset", "train.jsonl", "validation.jsonl", "report.json", "report.md",
            "report.png")
_JUDGMENT_FIELDS = ("judgment_id", "pair_id", "kind", "index", "text")
CLASSIFY_BATCH = 2048  # judgments classified together (one tokenizer call for their long hint outputs)


@dataclass
class FilterConfig:
    """Configuration of the filter stage; defaults reproduce the released code (``code`` preset).

    Its pair-building and length rules are the core's own dataclasses (:class:`PairRules`,
    :class:`LengthRule`), nested here and parsed from the same flat recipe keys (``preset``,
    ``max_best_of_n``, ..., ``seed``; ``length_rule``, ``cut_tokens``, ...). The input is a finished
    ``conj sample`` folder, named ``dataset_name`` like every stage's input (the data set the
    judgments are filtered from).
    """

    dataset_name: str = ""  # the `conj sample` output folder
    output_dir: str = ""
    rules: PairRules = field(default_factory=PairRules)
    length: LengthRule = field(default_factory=LengthRule)
    tokenizer: str | None = None  # for the length rule; default: the sampling run's model
    trust_remote_code: bool = False
    balance: bool = False  # beyond the original: downsample the majority label (seeded by ``seed``)
    # Ablation "no rationale": each parsed judgment becomes {"<verdict key>": v}; unparseable ones stay.
    verdict_only: bool = False
    validation_share: float = 0.05
    overwrite: bool = False

    def validate(self) -> None:
        """Check values before any file is read."""
        for name in ("dataset_name", "output_dir"):
            if not getattr(self, name):
                raise ConjError(f"filter: '{name}' is required")
        self.rules.validate()
        self.length.validate()
        share = self.validation_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
            raise ConjError(f"filter: validation_share must be in [0, 1), got {share!r}")

    def output_hash(self) -> str:
        """Hash of every setting that changes the output."""
        return settings_hash(self, exclude=_RUNTIME_FIELDS)


@dataclass
class FilterResult:
    """What a filter run did; ``skipped`` when an identical earlier run made it a no-op."""

    output_dir: Path
    counts: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False
    summary: str = ""


class LazyTokenizer:
    """Loads the judge's tokenizer on first use: most runs never trigger the length rule."""

    def __init__(self, name: str, trust_remote_code: bool = False) -> None:
        self.name = name
        self.trust_remote_code = trust_remote_code
        self._tok: Any = None

    @property
    def loaded(self) -> bool:
        """Whether the tokenizer was needed."""
        return self._tok is not None

    def _get(self) -> Any:
        if self._tok is None:
            from transformers import AutoTokenizer

            if not self.name:
                raise ConjError("filter: the length rule needs a tokenizer; set 'tokenizer'")
            looks_local = self.name.startswith((".", "/", "~"))
            if looks_local and not Path(self.name).expanduser().exists():
                raise ConjError(f"filter: tokenizer path not found: {self.name}")
            try:
                self._tok = AutoTokenizer.from_pretrained(self.name, trust_remote_code=self.trust_remote_code)
            except (OSError, ValueError) as e:
                raise ConjError(f"filter: cannot load tokenizer {self.name}: {str(e).splitlines()[0]}") from e
        return self._tok

    @property
    def backend_tokenizer(self) -> Any:
        """The fast tokenizer's Rust backend (None for a slow tokenizer)."""
        return getattr(self._get(), "backend_tokenizer", None)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``."""
        return self._get().encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``."""
        return self._get().decode(ids)


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


# --- reading the sampling run ------------------------------------------------------------------


def _shards(sample_dir: Path, sub: str) -> list[Path]:
    return sorted((sample_dir / sub).glob("shard-*.jsonl")) if (sample_dir / sub).is_dir() else []


def read_sample_manifest(sample_dir: Path) -> dict:
    """The merged manifest of a finished sampling run; a missing or incomplete run is a ConjError."""
    path = sample_dir / "manifest.json"
    if not path.is_file():
        raise ConjError(f"{sample_dir}: not a finished sampling run (no manifest.json); finish "
                        "`conj sample` first (all shards, then the merge)")
    manifest = read_json(path)
    if not manifest.get("complete"):
        raise ConjError(f"{path}: sampling run is not complete")
    if not _shards(sample_dir, "prompts"):
        raise ConjError(f"{sample_dir}/prompts: no shard-*.jsonl files")
    return manifest


def input_hash(sample_dir: Path) -> str:
    """Content hash of the sampling run's manifest, prompts and judgments."""
    files = [sample_dir / "manifest.json", *_shards(sample_dir, "prompts"), *_shards(sample_dir, "judgments")]
    return stable_hash([[str(p.relative_to(sample_dir)), file_hash(p)] for p in files])


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        for i, row in enumerate(iter_jsonl(path, drop_partial_last_line=True), 1):
            if not isinstance(row, dict):
                raise ConjError(f"{path}: row {i} is not a JSON object")
            yield i, row
    except ValueError as e:
        raise ConjError(str(e)) from e


def read_prompts(sample_dir: Path) -> dict[str, dict]:
    """pair id -> prompt row (``label``, ``prompt``, ...) of every pair the sampler was given."""
    prompts: dict[str, dict] = {}
    for path in _shards(sample_dir, "prompts"):
        for i, row in _rows(path):
            for key in ("pair_id", "label", "prompt"):
                if key not in row:
                    raise ConjError(f"{path}: row {i} has no field {key!r}")
            if row["label"] not in (1, 2):
                raise ConjError(f"{path}: row {i}: label must be 1 or 2, got {row['label']!r}")
            if row["pair_id"] in prompts:
                raise ConjError(f"{path}: row {i}: duplicate pair id {row['pair_id']!r}")
            prompts[row["pair_id"]] = row
    return prompts


def read_judgments(sample_dir: Path, prompts: dict[str, dict], *, tokenizer: Any,
                   length_rule: LengthRule, counts: Counter, expected: int | None = None
                   ) -> dict[str, list[Judgment]]:
    """Classify every judgment as it is read (texts are kept only in classified form).

    ``counts`` collects ``(kind, category)``, ``reason:<r>``, ``length_rule:<o>`` and
    ``finish_length`` tallies. ``expected``: the sampling manifest's judgment count; any other number
    on disk (a torn or emptied file) is a ConjError, not pairs "skipped by sampling".
    """
    grouped: dict[str, list[Judgment]] = {}
    seen: set[str] = set()
    batch: list[tuple[dict, int]] = []

    def flush() -> None:
        judgments = classify_judgments(batch, tokenizer=tokenizer, length_rule=length_rule)
        for (row, _), j in zip(batch, judgments, strict=True):
            grouped.setdefault(row["pair_id"], []).append(j)
            counts[(j.kind, j.category)] += 1
            counts["finish_length"] += row.get("finish_reason") == "length"
            if j.reason:
                counts[f"reason:{j.reason}"] += 1
            if j.length_rule:
                counts[f"length_rule:{j.length_rule}"] += 1
        batch.clear()

    for path in _shards(sample_dir, "judgments"):
        for i, row in _rows(path):
            missing = [k for k in _JUDGMENT_FIELDS if k not in row]
            if missing:
                raise ConjError(f"{path}: row {i} has no field {missing[0]!r}")
            pid, jid = row["pair_id"], row["judgment_id"]
            if pid not in prompts:
                raise ConjError(f"{path}: row {i}: judgment {jid!r} of unknown pair id {pid!r}")
            if row["kind"] not in JUDGMENT_KINDS:
                raise ConjError(f"{path}: row {i}: unknown kind {row['kind']!r}")
            if "label" in row and row["label"] != prompts[pid]["label"]:
                raise ConjError(f"{path}: row {i}: label {row['label']!r} differs from the prompt's "
                                f"{prompts[pid]['label']!r}")
            if not isinstance(row["text"], str):
                raise ConjError(f"{path}: row {i}: field 'text' must be a string")
            if not isinstance(row["index"], int) or isinstance(row["index"], bool):
                raise ConjError(f"{path}: row {i}: field 'index' must be an integer")
            if jid in seen:
                raise ConjError(f"{path}: row {i}: duplicate judgment id {jid!r}")
            seen.add(jid)
            batch.append((row, prompts[pid]["label"]))
            if len(batch) >= CLASSIFY_BATCH:
                flush()
    flush()
    if expected is not None and len(seen) != expected:
        raise ConjError(f"{sample_dir}: {len(seen)} judgments on disk but the sampling manifest lists "
                        f"{expected}; the judgments files changed or were cut after sampling (rerun "
                        "`conj sample` with --overwrite true)")
    return grouped


# --- output ------------------------------------------------------------------------------------


def prompt_messages(prompt: str, system_prompt: str | None) -> list[dict[str, str]]:
    """The DPO prompt: an optional system turn (as at sampling) and the judge prompt as the user turn."""
    msgs = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    msgs.append({"role": "user", "content": prompt})
    return msgs


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


def judgment_text(judgment: Judgment, verdict_key: str | None = None) -> str:
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
    manifest = out / "manifest.json"
    if manifest.exists():
        old = read_json(manifest)
        same = old.get("config_hash") == cfg.output_hash() and old.get("input", {}).get("hash") == in_hash
        if same:
            return old
        if not cfg.overwrite:
            raise ConjError(f"{out} holds a filter run with a different config or input; pass "
                            "--overwrite true to replace it or choose a new output_dir")
    # Remove only what this stage writes: output_dir may hold other files.
    for name in (*_OUTPUTS, ".dataset.tmp"):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    return None


# --- the stage ---------------------------------------------------------------------------------


def run_filter(cfg: FilterConfig) -> FilterResult:
    """Run stage 2 on the sampling run ``cfg.dataset_name``; write the dataset, report and manifest to ``cfg.output_dir``."""
    cfg.validate()
    t0 = time.perf_counter()
    sample_dir, out = Path(cfg.dataset_name), check_output_dir(cfg.output_dir)
    sample_manifest = read_sample_manifest(sample_dir)
    in_hash = input_hash(sample_dir)
    done = _check_output(out, cfg, in_hash)
    if done is not None:
        return FilterResult(out, done.get("counts", {}), skipped=True,
                            summary=f"{out}: already filtered with this config and input; nothing to do")

    sample_cfg = sample_manifest.get("config", {})
    tok_name = cfg.tokenizer or sample_cfg.get("model_name_or_path") or sample_cfg.get("model", "")
    tokenizer = LazyTokenizer(tok_name, cfg.trust_remote_code or bool(sample_cfg.get("trust_remote_code")))
    judgment_counts: Counter = Counter()
    rules = cfg.rules
    with gc_paused():
        prompts = read_prompts(sample_dir)
        expected = sample_manifest.get("counts", {})
        if "pairs" in expected and len(prompts) != expected["pairs"]:
            raise ConjError(f"{sample_dir}: {len(prompts)} prompts on disk but the sampling manifest lists "
                            f"{expected['pairs']} pairs; the prompts files changed after sampling")
        grouped = read_judgments(sample_dir, prompts, tokenizer=tokenizer, length_rule=cfg.length,
                                 counts=judgment_counts, expected=expected.get("judgments"))
        outcomes = [build_pairs(pid, prompts[pid]["label"], grouped.get(pid, []), rules)
                    for pid in sorted(prompts)]
    by_split: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for o in outcomes:
        by_split[split_of(o.pair_id, cfg.validation_share)].extend(o.pairs)
    before = {s: list(ps) for s, ps in by_split.items()}
    if cfg.balance:
        by_split = {s: balance_by_label(ps, cfg.rules.seed)[0] for s, ps in by_split.items()}

    system = sample_cfg.get("system_prompt")
    verdict_key = get_template(sample_cfg.get("template") or "conj-zh").verdict_key if cfg.verdict_only else None
    rows = {s: [pair_row(p, prompt_messages(prompts[p.pair_id]["prompt"], system), verdict_key) for p in ps]
            for s, ps in by_split.items()}
    report = build_report(prompts, outcomes, judgment_counts, before, by_split)
    out.mkdir(parents=True, exist_ok=True)
    _save_dataset(out, rows)
    for split, split_rows in rows.items():
        write_jsonl(out / f"{split}.jsonl", split_rows)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", report_markdown(report))
    write_report_png(report, out / "report.png")
    counts = {"input_pairs": report["input_pairs"], "judgments": report["judgments_read"],
              "pairs": report["pairs_total"], "train": len(rows["train"]),
              "validation": len(rows["validation"]), "lost": report["lost"]}
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
    return FilterResult(out, counts, summary=format_summary(report, out))


# --- report ------------------------------------------------------------------------------------


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
