"""Stage 4: evaluate judges (and scalar reward models) on preference sets, resumable and data-parallel.

Each model is a generative judge (run through :class:`conj_train.inference.judge.Judge`: Con-J prompt,
``' {"原因":'`` prefill, lenient parser) or a scalar reward model (:class:`conj_train.inference.reward_model.RewardModel`),
detected from ``config.architectures`` unless ``model_kind`` says. Every pair is judged in its seeded
random order (``chosen_slot(pair id, swap_seed)``, the one order RewardBench and Con-J run) and, with
``orders: both``, again with the answers swapped. A reward model scores each answer once; its swapped
"order" is the mirror image, so it is consistent by construction.

Layout of ``output_dir``::

    models/<name>/judgments/shard-00000-of-00001.jsonl   one record per (dataset, pair, order), fsynced
    models/<name>/manifests/shard-00000-of-00001.json    per-shard config hash and counts
    metrics.json     per data set the row accounting (``datasets``); per model, data set and subset
                     the project's metrics, the benchmark's official ones (``official``,
                     :mod:`conj_train.evaluate.benchmarks`), RewardBench sections; the comparison table
    summary.md       the tables; accuracy.png, reliability.png the charts
    rewardbench/<data set>/eval-set/<model>.json (and eval-set-scores/; rewardbench-2/ for
                     RewardBench 2)  the results in RewardBench's own format
                     (:mod:`conj_train.evaluate.rewardbench_results`)
    manifest.json    written last, when every shard of every model is complete

Data sets are read in ingestion mode ``eval`` (the benchmark's own row set, ties included) unless
``ingest_mode`` says ``train``.

A record holds the pair id, data set, subset, ``format``, ``tie`` (tie-labelled row), ``cell`` (RM-Bench
style pair; RewardBench 2's correct / wrong answer), ``row`` and ``row_pairs`` (RewardBench 2: the row's
id and how many pairs it has), ``swapped``, ``label`` (slot of the chosen answer), the
judge's text (prefill included, as parsed), verdict, ``correct`` (1 / 0 / 0.5; None on a tie row), ``probability``
(P(slot 1 better)), ``p_chosen``, and the rationale-transfer verdict. Metrics are computed from the
records alone (:mod:`conj_train.evaluate.metrics`), so a merged run can be re-scored without a model.

This module holds the config, the items, the shard runs and the merge; the records themselves are
written by :mod:`conj_train.evaluate.records`, re-scored by :mod:`conj_train.evaluate.scoring` and reported
by :mod:`conj_train.evaluate.report`.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conj_train.config import (
    config_to_dict,
)
from conj_train.errors import ConjError
from conj_train.evaluate.config import EvalConfig
from conj_train.evaluate.records import (
    device_for,
    free_memory,
    judge_batches,
    make_judge,
    record_key,
    rm_batches,
)
from conj_train.evaluate.report import (
    comparison_table,
    console_summary,
    summary_markdown,
    tracker_metrics,
    write_charts,
)
from conj_train.evaluate.rewardbench_results import rewardbench_result_files
from conj_train.evaluate.scoring import row_accounting, score_records
from conj_train.inference.loading import check_model_size
from conj_train.inference.reward_model import RewardModel, detect_model_kind
from conj_train.io import (
    JsonlAppender,
    atomic_write_json,
    atomic_write_text,
    library_versions,
    read_json,
)
from conj_train.runs import (
    ShardRun,
    all_shards_complete,
    check_output_dir,
    check_separate,
    merge_world,
    read_shard_records,
    records_fingerprint,
    resolve_shard,
    shard_manifest_path,
)
from conj_train.trackers import log_stage


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
    from conj_train.prompts.build import build_judge_prompts

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
            if meta.get("original_id") not in (None, "None"):  # the benchmark's own row id (RewardBench's results)
                it["row"] = meta["original_id"]
            if "row_pairs" in meta:  # one of several pairs of a benchmark row (RewardBench 2)
                it["row_pairs"] = meta["row_pairs"]
                it.setdefault("row", f"row-{meta['row']}")  # a file without ids: its row number
            items.append(it)
        info[name] = {"path": path, "pairs": len(records), "format": report.format,
                      "ingest": report.to_dict(), **selection}
    return items, info


# --------------------------------------------------------------------------------------------
# Running one model on one shard


def _run_model(
    cfg: EvalConfig, name: str, path: str, model_kind: str, items: list[dict], info: dict, rank: int,
    world: int,
) -> dict:
    shard = ShardRun(Path(cfg.output_dir) / "models" / name, rank, world)
    with shard.locked():
        return _run_model_shard(cfg, name, path, model_kind, items, info, shard)


def _run_model_shard(
    cfg: EvalConfig, name: str, path: str, model_kind: str, items: list[dict], info: dict, shard: ShardRun,
) -> dict:
    from tqdm.auto import tqdm

    h = cfg.output_hash(path, model_kind)
    data_hash = records_fingerprint(f"{it['dataset']}\x1f{it['pair_id']}" for it in items)
    # Claim the folder for this config and data first, so a killed run cannot be resumed under others.
    finished = shard.claim(stage="eval", config_hash=h, data_hash=data_hash, overwrite=cfg.overwrite,
                           extra={"model": name})
    if finished is not None:
        return finished["counts"]
    done, existing = shard.done(record_key)
    # A reward model scores a pair once: its records are the first-order items only.
    mine = [it for it in shard.mine(items) if not (model_kind == "rm" and it["swapped"])]
    todo = [it for it in mine if record_key(it) not in done]
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
        if model_kind == "rm":
            model: Any = RewardModel.from_pretrained(
                path,
                dtype=cfg.dtype,
                device=device_for(cfg),
                threads=cfg.threads,
                trust_remote_code=cfg.trust_remote_code,
                batch_size=cfg.rm_batch_size,
            )
        else:
            model = make_judge(cfg, path)
        with JsonlAppender(shard.records) as sink:
            run = rm_batches if model_kind == "rm" else judge_batches
            tokens = run(cfg, model, todo, sink, bar)  # type: ignore[operator]
        del model
        free_memory()
    bar.close()
    _, rows = shard.done(record_key)
    counts = {
        "records": len(rows),
        "parse_failures": sum(r["verdict"] is None for r in rows),
        "skipped": dict(Counter(r["skipped"] for r in rows if r.get("skipped"))),
        "generated_tokens": tokens,
        "seconds": round(time.perf_counter() - t0, 2),
        "resumed_from": len(existing),
    }
    shard.finish(
        {
            "stage": "eval",
            "model": name,
            "path": path,
            "kind": model_kind,
            "shard": [shard.rank, shard.world],
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


def _model_kinds(cfg: EvalConfig) -> list[tuple[str, str, str]]:
    out = []
    for name, path in cfg.model_specs():
        if cfg.model_kind == "auto":
            if (path.startswith((".", "/", "~")) or Path(path).exists()) and not Path(
                path
            ).expanduser().exists():
                raise ConjError(f"model path not found: {path}")
            model_kind = detect_model_kind(path, cfg.trust_remote_code)
        else:
            model_kind = cfg.model_kind
        out.append((name, path, model_kind))
    return out


def run_eval(
    cfg: EvalConfig, *, rank: int | None = None, world: int | None = None, merge: bool = True
) -> EvalResult:
    """Evaluate this process's shard (``cfg.shard``, or ``rank``/``world`` under accelerate) of every
    model; with ``merge``, score and report once every shard of every model is complete."""
    rank, world = resolve_shard(cfg.shard, rank, world)
    out = check_output_dir(cfg.output_dir)
    check_separate(out, [p for _, p in (*cfg.dataset_specs(), *cfg.model_specs())])
    for _, model_path in cfg.model_specs():  # every model's sizes before the first one loads
        check_model_size(model_path)
    models = _model_kinds(cfg)
    if cfg.merge_only:
        return merge_eval(cfg, models)
    items, info = _load_items(cfg)
    counts = {
        name: _run_model(cfg, name, path, model_kind, items, info, rank, world)
        for name, path, model_kind in models
    }
    result = EvalResult(
        out,
        counts,
        summary=f"shard {rank}/{world} done: "
        + ", ".join(f"{n} {c['records']} records" for n, c in counts.items()),
    )
    if merge and all_shards_complete([out / "models" / m[0] for m in models], world):
        merged = merge_eval(cfg, models)
        merged.summary = result.summary + "\n" + merged.summary
        return merged
    return result


# --------------------------------------------------------------------------------------------
# Merging and scoring


def merge_eval(cfg: EvalConfig, models: list[tuple[str, str, str]] | None = None) -> EvalResult:
    """Check every shard, score all records, write ``metrics.json``, ``summary.md``, charts, manifest."""
    out = Path(cfg.output_dir)
    models = models or _model_kinds(cfg)
    world = merge_world(out, [(out / "models" / name, cfg.output_hash(path, model_kind), f"model {name}")
                              for name, path, model_kind in models])
    both = cfg.orders == "both"
    first_manifest = shard_manifest_path(out / "models" / models[0][0], 0, world)
    accounting = row_accounting(read_json(first_manifest).get("input") or {})
    per_model: dict[str, Any] = {}
    leaderboard_files: dict[str, dict[str, Any]] = {}
    for name, path, model_kind in models:
        records = read_shard_records(out / "models" / name, "judgments", world, record_key)
        per_model[name] = {
            "path": path,
            "kind": model_kind,
            "records": len(records),
            "datasets": score_records(records, model_kind, both, cfg.reliability_bins),
        }
        leaderboard_files.update(rewardbench_result_files(name, path, model_kind, records, both))
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
    for rel, content in leaderboard_files.items():  # RewardBench's own format, as save_to_hub writes it
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / rel, json.dumps(content, indent=4, sort_keys=True))
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
    summary = console_summary(metrics)
    flat, rows = tracker_metrics(metrics)
    log_stage(cfg.report_to, stage="eval", output_dir=out, config=config_to_dict(cfg), metrics=flat,
              tables={"eval/comparison": rows})
    if cfg.push_to_hub:
        from conj_train.evaluate.hub import push_results

        url = push_results(out, metrics, repo_id=str(cfg.hub_repo_id), private=cfg.hub_private)
        summary += f"\npushed the results to {url}"
    return EvalResult(
        out,
        {n: {"records": m["records"]} for n, m in per_model.items()},
        metrics,
        merged=True,
        summary=summary,
    )
