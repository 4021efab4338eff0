"""Stage 4: evaluate judges (and scalar reward models) on preference sets, resumable and data-parallel.

Each model is a generative judge (run through :class:`conj_train.judge.Judge`: Con-J prompt,
``' {"原因":'`` prefill, lenient parser) or a scalar reward model (:class:`conj_train.judge.RewardModel`),
detected from ``config.architectures`` unless ``model_kind`` says. Every pair is judged in its seeded
random order (``chosen_slot(pair id, swap_seed)``, the one order RewardBench and Con-J run) and, with
``orders: both``, again with the answers swapped. A reward model scores each answer once; its swapped
"order" is the mirror image, so it is consistent by construction.

Layout of ``output_dir``::

    models/<name>/judgments/shard-00000-of-00001.jsonl   one record per (dataset, pair, order), fsynced
    models/<name>/manifests/shard-00000-of-00001.json    per-shard config hash and counts
    metrics.json     per data set the row accounting (``datasets``); per model, data set and subset
                     the project's metrics, the benchmark's official ones (``official``,
                     :mod:`conj_train.benchmarks`), RewardBench sections; the comparison table
    summary.md       the tables; accuracy.png, reliability.png the charts
    manifest.json    written last, when every shard of every model is complete

Data sets are read in ingestion mode ``eval`` (the benchmark's own row set, ties included) unless
``ingest_mode`` says ``train``.

A record holds the pair id, data set, subset, ``format``, ``tie`` (tie-labelled row), ``cell`` (RM-Bench
style pair), ``swapped``, ``label`` (slot of the chosen answer), the
judge's text (prefill included, as parsed), verdict, ``correct`` (1 / 0 / 0.5; None on a tie row), ``probability``
(P(slot 1 better)), ``p_chosen``, and the rationale-transfer verdict. Metrics are computed from the
records alone (:mod:`conj_train.metrics`), so a merged run can be re-scored without a model.
"""

from __future__ import annotations

import gc
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conj_train.benchmarks import benchmark_for, default_split
from conj_train.config import (
    INPUT_OLD_NAMES,
    RUNTIME_FIELDS,
    EngineOptions,
    JudgeInputOptions,
    ShardedRunOptions,
    config_to_dict,
    select_by_length,
    settings_hash,
)
from conj_train.data.records import INGEST_MODES
from conj_train.errors import ConjError
from conj_train.eval_report import comparison_table, console_summary, summary_markdown, write_charts
from conj_train.io import (
    JsonlAppender,
    atomic_write_json,
    atomic_write_text,
    iter_jsonl,
    library_versions,
    read_json,
)
from conj_train.judge import MODEL_KINDS, Judge, Judgment, RewardModel, detect_model_kind
from conj_train.metrics import (
    REWARDBENCH_PRIOR_SETS,
    OrderResult,
    PairResult,
    pair_metrics,
    rewardbench_accuracy,
    rewardbench_count_check,
    rewardbench_sections,
)
from conj_train.runs import check_output_dir, claim_shard, records_fingerprint, shard_lock
from conj_train.sample import derive_seed, parse_shard, shard_name, shard_of

ORDERS = ("both", "random")
# Settings that do not change any record: left out of the hash so a rerun can change them and resume.
_RUNTIME_FIELDS = RUNTIME_FIELDS | {
    "model_name_or_path", "output_dir", "reliability_bins", "probability_batch_tokens", "rm_batch_size"}


@dataclass
class EvalConfig(JudgeInputOptions, EngineOptions, ShardedRunOptions):
    """Configuration of the evaluation stage (one or several models, one or several data sets)."""

    # "path" or "name=path", or a list of them (``conj eval --model [NAME=]PATH``, repeatable).
    model_name_or_path: str | list[str] | None = None
    dataset_name: str | list[str] | None = None  # same form (``--dataset [NAME=]SOURCE``)
    output_dir: str = ""
    model_kind: str = "auto"  # auto | judge | rm (applies to every model)
    orders: str = "both"
    decoding: str = "greedy"
    n: int = 1  # judgments per order and pair (n > 1 needs decoding: sample)
    # Sampling settings (decoding: sample). Con-J's released eval script sampled with T 1.0, top-p 0.9
    # and repetition penalty 1.2 (recipes/con-j-qwen2-7b/eval_paper.yaml); the default here applies no
    # repetition penalty (1.0).
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int = 2021
    parser: str = "lenient"
    prefill: str | None = None  # the answer's forced start; None = the template's (' {"原因":')
    max_new_tokens: int = 512
    probability: bool = True
    transfer: bool = True
    transfer_model: str | None = None
    # "eval": every row of the benchmark that has a question, two answers and a label is scored (ties,
    # identical or empty answers and repeated pairs included); "train": the training-data cleaning rules.
    ingest_mode: str = "eval"
    # Per data set (by name): {split, format, config} overriding dataset_split / dataset_format /
    # dataset_config; a benchmark's Hub id without a split gets its official one (benchmarks.py).
    dataset_options: dict[str, dict[str, Any]] | None = None
    # Runtime only.
    reliability_bins: int = 10
    probability_batch_tokens: int = 16384
    rm_batch_size: int = 8

    def validate(self) -> None:
        """Check values that would otherwise fail deep inside a run."""
        from conj_train.verdicts import MODES

        if not self.output_dir:
            raise ConjError("eval: 'output_dir' is required (--output DIR)")
        self.model_specs()
        self.dataset_specs()
        checks = [
            ("orders", self.orders, ORDERS),
            ("decoding", self.decoding, ("greedy", "sample")),
            ("engine", self.engine, ("hf", "vllm")),
            ("parser", self.parser, MODES),
            ("model_kind", self.model_kind, ("auto", *MODEL_KINDS)),
            ("ingest_mode", self.ingest_mode, INGEST_MODES),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ConjError(f"eval: {name} must be one of {', '.join(allowed)}, not {value!r}")
        if self.n < 1 or (self.decoding == "greedy" and self.n != 1):
            raise ConjError(f"eval: n must be >= 1, and 1 with greedy decoding (got {self.n})")
        if self.max_new_tokens < 1 or self.batch_pairs < 1:
            raise ConjError("eval: max_new_tokens and batch_pairs must be >= 1")
        if self.shard is not None:
            parse_shard(self.shard)
        self._check_dataset_options()

    def _check_dataset_options(self) -> None:
        opts = self.dataset_options or {}
        if not isinstance(opts, dict):
            raise ConjError("eval: dataset_options must map data set names to {split, format, config}")
        names = {n for n, _ in self.dataset_specs()}
        for name, o in opts.items():
            if name not in names:
                raise ConjError(f"eval: dataset_options names {name!r}, which is not a data set "
                                f"({', '.join(sorted(names))})")
            bad = sorted(set(o or {}) - set(_DATASET_OPTION_KEYS)) if isinstance(o, dict) else ["(not a mapping)"]
            if bad:
                raise ConjError(f"eval: dataset_options[{name!r}] has {bad[0]!r}; allowed: "
                                f"{', '.join(_DATASET_OPTION_KEYS)}")

    def load_eval_records(self, name: str, source: str) -> tuple[list[dict], Any, dict[str, Any]]:
        """Records of data set ``name`` to score, its ingest report, and how they were selected.

        The rows are read in ``ingest_mode`` (default: the benchmark's own row set) with this data
        set's split / format / config (``dataset_options``, then the global keys, then the benchmark's
        official split); ``longer`` and ``max_pairs`` then select among them.
        """
        from conj_train.data import load_preferences

        opts = (self.dataset_options or {}).get(name) or {}
        split = opts.get("split", self.dataset_split) or default_split(source)
        res = load_preferences(source, format=opts.get("format", self.dataset_format),
                               config=opts.get("config", self.dataset_config), split=split,
                               field_map=self.field_map, multi_turn=self.multi_turn, mode=self.ingest_mode)
        by_length = select_by_length(res.records, self.longer, self.length_ratio, source=source)
        chosen = by_length[: self.max_pairs] if self.max_pairs else by_length
        selection = {"split": split, "not_selected": {"length": len(res.records) - len(by_length),
                                                      "max_pairs": len(by_length) - len(chosen)}}
        return chosen, res.report, selection

    def model_specs(self) -> list[tuple[str, str]]:
        """``(name, path)`` of every model, in the given order."""
        return _named_specs(self.model_name_or_path, "model")

    def dataset_specs(self) -> list[tuple[str, str]]:
        """``(name, path)`` of every data set, in the given order."""
        return _named_specs(self.dataset_name, "dataset")

    def output_hash(self, model_path: str, kind: str) -> str:
        """Hash of every setting that changes one model's records."""
        return settings_hash(self, exclude=_RUNTIME_FIELDS, old_names={**INPUT_OLD_NAMES, "n": "samples"},
                             model_path=model_path, kind=kind)


def _named_specs(value: Any, what: str) -> list[tuple[str, str]]:
    items = [value] if isinstance(value, str) else list(value or [])
    if not items:
        raise ConjError(f"eval: at least one {what} is required (--{what} PATH or NAME=PATH)")
    specs: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise ConjError(f"eval: {what} entries must be non-empty strings, got {item!r}")
        name, sep, path = item.partition("=")
        if not sep:
            path, name = item, _default_name(item)
        if not name or not path or "/" in name or name in (".", ".."):
            raise ConjError(f"eval: bad {what} {item!r}; use PATH or NAME=PATH")
        specs.append((name, path))
    names = [n for n, _ in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConjError(f"eval: two {what}s named {dup[0]!r}; name them NAME=PATH")
    return specs


_DATA_SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".parquet", ".csv")
_DATASET_OPTION_KEYS = ("split", "format", "config")


def _default_name(path: str) -> str:
    """The last path component without a data-file extension ("Qwen2.5-7B" keeps its dot)."""
    base = path.rstrip("/").rsplit("/", 1)[-1]
    for suffix in _DATA_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


@dataclass
class EvalResult:
    """What an evaluation run did (one shard, or the merged run)."""

    output_dir: Path
    counts: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    merged: bool = False
    summary: str = ""


# --------------------------------------------------------------------------------------------
# Items


def _load_items(cfg: EvalConfig) -> tuple[list[dict], dict[str, Any]]:
    """Judge-prompt items of every data set, tagged with data set, subset and answer lengths."""
    from conj_train.prompts import build_judge_prompts

    items: list[dict] = []
    info: dict[str, Any] = {}
    for name, path in cfg.dataset_specs():
        records, report, selection = cfg.load_eval_records(name, path)
        if not records:
            raise ConjError(f"eval: data set {name} ({path}) has no usable pairs")
        by_id = {r["id"]: r for r in records}
        for it in build_judge_prompts(
            records, template=cfg.template, seed=cfg.swap_seed, both_orders=cfg.orders == "both"
        ):
            rec = by_id[it["pair_id"]]
            meta = rec.get("meta") or {}
            it["dataset"] = name
            it["format"] = report.format
            # RM-Bench's "subset" field is finer than its domains (the source): keep the source there.
            subset = None if "cell" in meta else meta.get("subset")
            it["subset"] = str(subset or rec.get("source") or "")
            it["chosen_chars"], it["rejected_chars"] = len(rec["chosen"]), len(rec["rejected"])
            it["tie"] = bool(meta.get("tie"))
            it["cell"] = meta.get("cell")
            items.append(it)
        info[name] = {"path": path, "pairs": len(records), "format": report.format,
                      "ingest": report.to_dict(), **selection}
    return items, info


def _key(rec: dict) -> tuple[str, str, bool]:
    return rec["dataset"], rec["pair_id"], bool(rec["swapped"])


def _base_record(it: dict) -> dict:
    return {
        "dataset": it["dataset"],
        "pair_id": it["pair_id"],
        "subset": it["subset"],
        "swapped": it["swapped"],
        "label": it["label"],
        "chosen_chars": it["chosen_chars"],
        "rejected_chars": it["rejected_chars"],
        "format": it.get("format", ""),
        "tie": it.get("tie", False),
        "cell": it.get("cell"),
    }


def _score(verdict: int | None, label: int, tie: bool = False) -> float | None:
    """The project's per-order score; None on a tie-labelled row (no answer is the right one)."""
    if tie:
        return None
    return 0.5 if verdict is None else float(verdict == label)


def _judge_record(it: dict, j: Judgment) -> dict:
    rec = _base_record(it)
    p1 = j.p_slot1
    read = j.reads[0] if j.reads else None
    rec.update(
        {
            "text": j.texts[0] if j.texts else "",
            "verdict": j.verdict,
            "correct": _score(j.verdict, it["label"], it.get("tie", False)),
            "probability": p1,
            "p_chosen": None if p1 is None else (p1 if it["label"] == 1 else 1.0 - p1),
            "verdict_mass": None if read is None else read.mass,
            "rationale": j.rationale,
            "parse_reason": j.parse_reasons[0] if j.parse_reasons else None,
            "finish_reason": j.finish_reasons[0] if j.finish_reasons else None,
            "completion_tokens": sum(j.completion_tokens),
            "seed": j.seeds[0],
            "transfer_verdict": j.transfer_verdict,
            "transfer_probability": None if j.transfer is None else j.transfer.p_first,
            "skipped": j.skipped,
        }
    )
    if len(j.seeds) > 1:
        rec["samples"] = [
            {
                "text": t,
                "verdict": v,
                "probability": None if r is None else r.p_first,
                "finish_reason": f,
                "seed": s,
            }
            for t, v, r, f, s in zip(j.texts, j.verdicts, j.reads, j.finish_reasons, j.seeds, strict=False)
        ]
    return rec


# --------------------------------------------------------------------------------------------
# Running one model on one shard


def _done(path: Path) -> tuple[set[tuple[str, str, bool]], int]:
    if not path.exists():
        return set(), 0
    rows = list(iter_jsonl(path, drop_partial_last_line=True))
    return {_key(r) for r in rows}, len(rows)


def _device(cfg: EvalConfig) -> str | None:
    import os

    import torch

    # One GPU per process under accelerate/torchrun; LOCAL_RANK is unset for a single process.
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else None


def _make_judge(cfg: EvalConfig, path: str) -> Judge:
    opts = {
        "template": cfg.template,
        "parser": cfg.parser,
        "system_prompt": cfg.system_prompt,
        "max_new_tokens": cfg.max_new_tokens,
        "decoding": cfg.decoding,
        "samples": cfg.n,
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": cfg.top_k,
        "repetition_penalty": cfg.repetition_penalty,
        "seed": cfg.seed,
        "prefill": cfg.prefill,
    }
    if cfg.engine == "vllm":
        engine_options = {
            "tensor_parallel_size": cfg.tensor_parallel_size,
            "seed": cfg.seed,
            "gpu_memory_utilization": cfg.gpu_memory_utilization,
            "max_model_len": cfg.max_model_len,
        }
        return Judge.from_pretrained(
            path,
            "vllm",
            dtype=cfg.dtype,
            trust_remote_code=cfg.trust_remote_code,
            probability=cfg.probability,
            transfer_model=cfg.transfer_model,
            engine_options=engine_options,
            **opts,
        )
    return Judge.from_pretrained(
        path,
        "hf",
        dtype=cfg.dtype,
        device=_device(cfg),
        threads=cfg.threads,
        trust_remote_code=cfg.trust_remote_code,
        probability=cfg.probability,
        transfer_model=cfg.transfer_model,
        probability_batch_tokens=cfg.probability_batch_tokens,
        engine_options={"batch_tokens": cfg.hf_batch_tokens},
        **opts,
    )


def _judge_batches(cfg: EvalConfig, judge: Judge, todo: list[dict], sink: JsonlAppender, bar: Any) -> int:
    can_transfer = cfg.transfer and (judge.scorer is not None or judge.transfer_reader is not None)
    tokens = 0
    per_batch = cfg.batch_pairs * (2 if cfg.orders == "both" else 1)
    for start in range(0, len(todo), per_batch):
        batch = todo[start : start + per_batch]
        seeds = [
            [
                derive_seed(cfg.seed, it["pair_id"], "eval-swapped" if it["swapped"] else "eval", i)
                for i in range(cfg.n)
            ]
            for it in batch
        ]
        judged = judge.judge([it["prompt"] for it in batch], seeds, transfer=can_transfer)
        sink.write_batch(_judge_record(it, j) for it, j in zip(batch, judged, strict=True))
        tokens += sum(sum(j.completion_tokens) for j in judged)
        bar.update(len(batch))
    return tokens


def _rm_batches(cfg: EvalConfig, rm: RewardModel, todo: list[dict], sink: JsonlAppender, bar: Any) -> int:
    from conj_train.judge import sigmoid

    for start in range(0, len(todo), cfg.batch_pairs):
        batch = todo[start : start + cfg.batch_pairs]
        seqs = []
        for it in batch:
            ctx = it.get("context") or []
            seqs += [
                rm.encode(it["question"], it["answer1"], ctx),
                rm.encode(it["question"], it["answer2"], ctx),
            ]
        scores = rm.score_ids(seqs)
        rows = []
        for k, it in enumerate(batch):
            r1, r2 = scores[2 * k], scores[2 * k + 1]
            rec = _base_record(it)
            ok = r1 is not None and r2 is not None
            verdict = (1 if r1 > r2 else 2 if r2 > r1 else None) if ok else None  # type: ignore[operator]
            p1 = sigmoid(r1 - r2) if ok else None  # type: ignore[operator]
            label = it["label"]
            rec.update(
                {
                    "reward_1": r1,
                    "reward_2": r2,
                    "verdict": verdict,
                    "correct": _score(verdict, label, it.get("tie", False)),
                    "probability": p1,
                    "p_chosen": None if p1 is None else (p1 if label == 1 else 1 - p1),
                    "skipped": None if ok else "too_long",
                }
            )
            rows.append(rec)
        sink.write_batch(rows)
        bar.update(len(batch))
    return 0


def _run_model(
    cfg: EvalConfig, name: str, path: str, kind: str, items: list[dict], info: dict, rank: int, world: int
) -> dict:

    mdir = Path(cfg.output_dir) / "models" / name
    sname = shard_name(rank, world)
    with shard_lock(mdir, sname):
        return _run_model_shard(cfg, name, path, kind, items, info, rank, world, mdir, sname)


def _run_model_shard(
    cfg: EvalConfig, name: str, path: str, kind: str, items: list[dict], info: dict, rank: int, world: int,
    mdir: Path, sname: str,
) -> dict:
    from tqdm.auto import tqdm

    h = cfg.output_hash(path, kind)
    data_hash = records_fingerprint(f"{it['dataset']}\x1f{it['pair_id']}" for it in items)
    manifest = mdir / "manifests" / f"{sname}.json"
    jpath = mdir / "judgments" / f"{sname}.jsonl"
    # Claim the folder for this config and data first, so a killed run cannot be resumed under others.
    claim = claim_shard(mdir, manifest, config_hash=h, data_hash=data_hash, overwrite=cfg.overwrite,
                        stage="eval", extra={"model": name, "shard": [rank, world]}, records=[jpath])
    if claim is not None and claim.get("complete"):
        return claim["counts"]
    done, resumed = _done(jpath)
    # A reward model scores a pair once: its records are the first-order items only.
    mine = [
        it for it in items if shard_of(it["pair_id"], world) == rank and not (kind == "rm" and it["swapped"])
    ]
    todo = [it for it in mine if _key(it) not in done]
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        unit="prompt",
        desc=f"eval {name}",
        disable=not cfg.progress,
    )
    t0 = time.perf_counter()
    tokens = 0
    if todo:
        if kind == "rm":
            model: Any = RewardModel.from_pretrained(
                path,
                dtype=cfg.dtype,
                device=_device(cfg),
                threads=cfg.threads,
                trust_remote_code=cfg.trust_remote_code,
                batch_size=cfg.rm_batch_size,
            )
        else:
            model = _make_judge(cfg, path)
        with JsonlAppender(jpath) as sink:
            run = _rm_batches if kind == "rm" else _judge_batches
            tokens = run(cfg, model, todo, sink, bar)  # type: ignore[operator]
        del model
        _free_memory()
    bar.close()
    rows = list(iter_jsonl(jpath, drop_partial_last_line=True)) if jpath.exists() else []
    counts = {
        "records": len(rows),
        "parse_failures": sum(r["verdict"] is None for r in rows),
        "skipped": dict(Counter(r["skipped"] for r in rows if r.get("skipped"))),
        "generated_tokens": tokens,
        "seconds": round(time.perf_counter() - t0, 2),
        "resumed_from": resumed,
    }
    atomic_write_json(
        manifest,
        {
            "stage": "eval",
            "model": name,
            "path": path,
            "kind": kind,
            "shard": [rank, world],
            "config_hash": h,
            "data_hash": data_hash,
            "config": config_to_dict(cfg),
            "input": info,
            "counts": counts,
            "complete": True,
            "versions": library_versions(),
        },
    )
    return counts


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def _model_kinds(cfg: EvalConfig) -> list[tuple[str, str, str]]:
    out = []
    for name, path in cfg.model_specs():
        if cfg.model_kind == "auto":
            if (path.startswith((".", "/", "~")) or Path(path).exists()) and not Path(
                path
            ).expanduser().exists():
                raise ConjError(f"model path not found: {path}")
            kind = detect_model_kind(path, cfg.trust_remote_code)
        else:
            kind = cfg.model_kind
        out.append((name, path, kind))
    return out


def run_eval(
    cfg: EvalConfig, *, rank: int | None = None, world: int | None = None, merge: bool = True
) -> EvalResult:
    """Evaluate this process's shard (``cfg.shard``, or ``rank``/``world`` under accelerate) of every
    model; with ``merge``, score and report once every shard of every model is complete."""
    if cfg.shard is not None:
        rank, world = parse_shard(cfg.shard)
    rank, world = rank or 0, world or 1
    out = check_output_dir(cfg.output_dir)
    models = _model_kinds(cfg)
    if cfg.merge_only:
        return merge_eval(cfg, models)
    items, info = _load_items(cfg)
    counts = {
        name: _run_model(cfg, name, path, kind, items, info, rank, world) for name, path, kind in models
    }
    result = EvalResult(
        out,
        counts,
        summary=f"shard {rank}/{world} done: "
        + ", ".join(f"{n} {c['records']} records" for n, c in counts.items()),
    )
    if merge and _all_complete(out, [m[0] for m in models], world):
        merged = merge_eval(cfg, models)
        merged.summary = result.summary + "\n" + merged.summary
        return merged
    return result


def _all_complete(out: Path, names: Sequence[str], world: int) -> bool:
    paths = [
        out / "models" / n / "manifests" / f"{shard_name(i, world)}.json" for n in names for i in range(world)
    ]
    return all(p.exists() and read_json(p).get("complete") for p in paths)


# --------------------------------------------------------------------------------------------
# Merging and scoring


def _read_records(mdir: Path, world: int) -> list[dict]:
    rows: list[dict] = []
    seen: set = set()
    for i in range(world):
        path = mdir / "judgments" / f"{shard_name(i, world)}.jsonl"
        if not path.exists():  # a shard that got no pairs
            continue
        for r in iter_jsonl(path, drop_partial_last_line=True):
            if _key(r) in seen:
                raise ConjError(f"{mdir}: duplicate record {_key(r)} across shards")
            seen.add(_key(r))
            rows.append(r)
    return rows


def pairs_from_records(
    records: Iterable[dict], kind: str = "judge", both_orders: bool = True
) -> list[PairResult]:
    """Per-pair results from evaluation records (a reward model's mirror order added when both)."""
    groups: dict[tuple[str, str], dict[bool, dict]] = defaultdict(dict)
    for r in records:
        groups[(r["dataset"], r["pair_id"])][bool(r["swapped"])] = r
    pairs = []
    for (_, pid), recs in groups.items():
        first = recs.get(False)
        if first is None:
            continue
        a = OrderResult(
            first["label"], first["verdict"], first.get("probability"), first.get("transfer_verdict")
        )
        if kind == "rm":
            r1, r2 = first.get("reward_1"), first.get("reward_2")
            tie = r1 is not None and r1 == r2  # the model itself rates the answers equal
            a = OrderResult(a.label, a.verdict, a.p_slot1, tie=tie)
            b = None
            if both_orders:
                v, p = first["verdict"], first.get("probability")
                b = OrderResult(3 - a.label, None if v is None else 3 - v, None if p is None else 1 - p, tie=tie)
        else:
            s = recs.get(True)
            b = (
                None
                if s is None
                else OrderResult(s["label"], s["verdict"], s.get("probability"), s.get("transfer_verdict"))
            )
        cell = first.get("cell")
        pairs.append(PairResult(
            pid, a, b, first.get("chosen_chars", 0), first.get("rejected_chars", 0),
            gold_tie=bool(first.get("tie")), scalar=kind == "rm", subset=str(first.get("subset") or ""),
            cell=None if cell is None else (int(cell[0]), int(cell[1])),
        ))
    return pairs


def _official(fmt: str, pairs: list[PairResult]) -> dict[str, Any] | None:
    """The benchmark's own metric for these pairs, named, or None for a format without one."""
    bench = benchmark_for(fmt)
    if bench is None or bench.metric is None:
        return None
    values = bench.metric(pairs)
    if values is None:
        return None
    return {"benchmark": bench.name, "headline": list(bench.headline), **values}


def _rewardbench(subsets: dict[str, list[PairResult]], project: dict[str, Any],
                 prior: dict[str, float | None]) -> dict[str, Any] | None:
    """RewardBench sections: ``official`` (RewardBench's per-row rule), plus the project's 0.5 variants."""
    official = {s: rewardbench_accuracy(ps) for s, ps in subsets.items()}
    rb = {"official": rewardbench_sections({**prior, **official})}
    if rb["official"] is None:
        return None
    rb.update({key: rewardbench_sections({s: m[key] for s, m in project.items()})
               for key in ("accuracy", "accuracy_avg")})
    rb["counts"] = rewardbench_count_check({s: len(ps) for s, ps in subsets.items()})
    return rb


def score_records(records: list[dict], kind: str, both_orders: bool, bins: int = 10) -> dict[str, Any]:
    """Metrics per data set: the project's (``overall`` and per ``subsets``, tie-labelled pairs left
    out), the benchmark's own (``official``), RewardBench sections where subsets match, and ``rows``
    (pairs scored, ties among them)."""
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_ds[r["dataset"]].append(r)
    pairs_of = {ds: pairs_from_records(recs, kind, both_orders) for ds, recs in by_ds.items()}
    # RewardBench's Prior Sets are a separate Hub data set: take their subsets from any data set.
    prior = {p.subset: None for ps in pairs_of.values() for p in ps if p.subset in REWARDBENCH_PRIOR_SETS}
    for s in prior:
        prior[s] = rewardbench_accuracy([p for ps in pairs_of.values() for p in ps if p.subset == s])
    out: dict[str, Any] = {}
    for ds, recs in by_ds.items():
        pairs = pairs_of[ds]
        fmt = next((r.get("format") for r in recs if r.get("format")), "") or ""
        scored = [p for p in pairs if not p.gold_tie]
        subsets: dict[str, list[PairResult]] = defaultdict(list)
        for p in pairs:
            subsets[p.subset].append(p)
        entry: dict[str, Any] = {
            "rows": {"pairs_scored": len(pairs), "ties": len(pairs) - len(scored), "format": fmt},
            "overall": pair_metrics(scored, bins),
        }
        official = _official(fmt, pairs)
        if official is not None:
            entry["official"] = official
        if len(subsets) > 1 or (subsets and "" not in subsets):
            entry["subsets"] = {s: pair_metrics([p for p in ps if not p.gold_tie], bins)
                                for s, ps in sorted(subsets.items())}
            bench = benchmark_for(fmt)
            if bench is not None and bench.per_subset:
                for s, ps in subsets.items():
                    sub_official = _official(fmt, ps)
                    if sub_official is not None:
                        entry["subsets"][s]["official"] = sub_official
            rb = _rewardbench(dict(subsets), entry["subsets"], prior)
            if rb is not None:
                entry["rewardbench"] = rb
        out[ds] = entry
    return out


def row_accounting(info: dict[str, Any]) -> dict[str, Any]:
    """Per data set: rows read, used and skipped by reason, pairs built, kept rows that training
    ingestion would skip, and pairs left out by ``longer`` / ``max_pairs`` (from the shard manifests)."""
    out = {}
    for name, d in info.items():
        ing = d.get("ingest") or {}
        not_selected = d.get("not_selected") or {}
        out[name] = {
            "path": d.get("path"),
            "format": d.get("format") or ing.get("format"),
            "split": d.get("split"),
            "mode": ing.get("mode"),
            "rows_read": ing.get("rows_read"),
            "rows_used": ing.get("rows_used"),
            "skipped": ing.get("skipped") or {},
            "pairs_built": ing.get("pairs", ing.get("rows_used")),
            "kept": ing.get("kept") or {},
            "not_selected": {k: v for k, v in not_selected.items() if v},
            "pairs_selected": d.get("pairs"),
        }
    return out


def merge_eval(cfg: EvalConfig, models: list[tuple[str, str, str]] | None = None) -> EvalResult:
    """Check every shard, score all records, write ``metrics.json``, ``summary.md``, charts, manifest."""
    out = Path(cfg.output_dir)
    models = models or _model_kinds(cfg)
    worlds = set()
    for name, path, kind in models:
        mdir = out / "models" / name / "manifests"
        manifests = [read_json(p) for p in sorted(mdir.glob("shard-*.json"))] if mdir.is_dir() else []
        if not manifests:
            raise ConjError(f"{out}: model {name} has no finished shards to merge")
        if any(m["config_hash"] != cfg.output_hash(path, kind) for m in manifests):
            raise ConjError(f"{out}: a shard of model {name} was written with a different config")
        if len({m.get("data_hash") for m in manifests}) > 1:
            raise ConjError(f"{out}: shards of model {name} were judged on different versions of the data")
        worlds |= {m["shard"][1] for m in manifests}
    if len(worlds) != 1:
        raise ConjError(f"{out}: shards of different shard counts {sorted(worlds)}; rerun with one count")
    world = worlds.pop()
    if not _all_complete(out, [m[0] for m in models], world):
        raise ConjError(f"{out}: not every shard is finished yet")
    both = cfg.orders == "both"
    first_manifest = out / "models" / models[0][0] / "manifests" / f"{shard_name(0, world)}.json"
    accounting = row_accounting(read_json(first_manifest).get("input") or {})
    per_model: dict[str, Any] = {}
    for name, path, kind in models:
        records = _read_records(out / "models" / name, world)
        per_model[name] = {
            "path": path,
            "kind": kind,
            "records": len(records),
            "datasets": score_records(records, kind, both, cfg.reliability_bins),
        }
    metrics = {
        "orders": cfg.orders,
        "random_order": {
            "swap_seed": cfg.swap_seed,
            "rule": "chosen slot = 1 + (sha256(f'{seed}:{pair_id}')[0] & 1)",
        },
        "decoding": cfg.decoding,
        "samples": cfg.n,
        "parser": cfg.parser,
        "template": cfg.template,
        "ingest_mode": cfg.ingest_mode,
        "datasets": accounting,
        "models": per_model,
        "comparison": comparison_table(per_model),
    }
    atomic_write_json(out / "metrics.json", metrics)
    text = summary_markdown(metrics)
    atomic_write_text(out / "summary.md", text)
    charts = write_charts(out, metrics)
    atomic_write_json(
        out / "manifest.json",
        {
            "stage": "eval",
            "config": config_to_dict(cfg),
            "shards": world,
            "charts": charts,
            "models": {
                n: {
                    "path": p,
                    "kind": k,
                    "config_hash": cfg.output_hash(p, k),
                    "records": per_model[n]["records"],
                }
                for n, p, k in models
            },
            "complete": True,
            "versions": library_versions(),
        },
    )
    return EvalResult(
        out,
        {n: {"records": m["records"]} for n, m in per_model.items()},
        metrics,
        merged=True,
        summary=console_summary(metrics),
    )
