"""Stage 1: contrastive judgment sampling (repeated + hint-driven), resumable and data-parallel.

TRL has no offline sampler (its vLLM support serves online RL) and OpenRLHF removed its batch
inference tool, so this small module owns the loop. For each preference pair it writes

* ``repeated``: ``n`` judgments of the judge prompt (Con-J: n=8, T=1.2, top-p 0.95);
* ``hint_correct`` / ``hint_wrong``: ``hint_samples`` judgments each, told the right / wrong answer
  (``paper`` reading: the hint is in the prompt; ``code`` reading: a neutral prompt whose output is
  wrapped into JSON with the hinted verdict afterwards, as the released code does).

Layout of ``output_dir``::

    prompts/shard-00000-of-00001.jsonl     one judge prompt per pair (pair id, label, prompt text, and
                                           the DPO prompt ``messages``: system + user turns)
    judgments/shard-00000-of-00001.jsonl   one record per judgment, appended + fsynced per batch
    manifests/shard-00000-of-00001.json    per-shard config hash and counts (atomic)
    manifest.json                          merged manifest, written when every shard is complete

Every judgment's seed derives from (run seed, pair id, kind, sample index), so the set of outputs does
not depend on batch size, shard count or restarts; a killed run resumes by skipping every
(pair, kind, index) already on disk.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conj_train.config import (
    config_to_dict,
)
from conj_train.engines.base import (
    PROMPT_TOO_LONG,
    Generation,
    GenerationRequest,
    prompt_too_long,
)
from conj_train.errors import ConjError
from conj_train.io import JsonlAppender, atomic_write_json, library_versions, stable_hash, write_jsonl
from conj_train.prompts.chat import chat_messages
from conj_train.runs import (
    ShardRun,
    all_shards_complete,
    check_mergeable,
    check_output_dir,
    check_separate,
    derive_seed,
    records_fingerprint,
    resolve_shard,
    shard_manifests,
)
from conj_train.sample.config import SampleConfig, _template
from conj_train.sample.summary import format_summary, merged_counts, shard_counts, tracker_metrics, warn_now
from conj_train.tokens import load_tokenizer
from conj_train.trackers import log_stage

KINDS = ("repeated", "hint_correct", "hint_wrong")



@dataclass
class SampleResult:
    """What a sampling run did (one shard, or the merged run)."""

    output_dir: Path
    counts: dict[str, Any] = field(default_factory=dict)
    complete: bool = False
    merged: bool = False
    summary: str = ""


# --------------------------------------------------------------------------------------------
# Work planning


@dataclass
class _Unit:
    """One request: a pair's prompt for one kind, with the sample indices still to generate."""

    pair_id: str
    kind: str
    label: int
    prompt_text: str  # rendered with the chat template
    prompt_hash: str
    indices: list[int]
    seeds: list[int]
    hint_verdict: int | None = None
    wrap: bool = False
    prefill: str = ""


def _kind_count(cfg: SampleConfig, kind: str) -> int:
    return cfg.n if kind == "repeated" else cfg.hint_samples


def _load_items(cfg: SampleConfig) -> tuple[list[dict], dict]:
    from conj_train.prompts.build import build_judge_prompts, label_balance

    records, report = cfg.load_records(cfg.dataset_name)
    if not records:  # nothing to sample: a run "done" with 0 pairs would look like success
        skipped = ", ".join(f"{k} {v}" for k, v in report.skipped.items()) or "no rows"
        raise ConjError(f"sample: {cfg.dataset_name} has no usable pairs (skipped: {skipped})")
    items = build_judge_prompts(records, template=cfg.template, seed=cfg.swap_seed)
    info = {"ingest": report.to_dict(), "pairs": len(items), "label_balance": label_balance(items)}
    return items, info


def _render(tokenizer: Any, cfg: SampleConfig, user_text: str) -> str:
    from conj_train.prompts.chat import render_chat

    return render_chat(tokenizer, user_text, system=cfg.system_prompt)


def _units_for(cfg: SampleConfig, item: dict, kinds: Iterable[str], tokenizer: Any,
               done: set[tuple[str, str, int]]) -> Iterator[_Unit]:
    from conj_train.prompts.build import build_hint_prompt

    pid, label = item["pair_id"], int(item["label"])
    for kind in kinds:
        count = _kind_count(cfg, kind)
        todo = [i for i in range(count) if (pid, kind, i) not in done]
        if not todo:
            continue
        if kind == "repeated":
            user, hint_verdict, wrap = item["prompt"], None, False
        else:
            hint = build_hint_prompt(item, hint="correct" if kind == "hint_correct" else "wrong",
                                     reading=cfg.hint_reading, template=_template(cfg.template))
            user, hint_verdict, wrap = hint["prompt"], int(hint["verdict"]), bool(hint["wrap"])
        text = _render(tokenizer, cfg, user)
        # A code-reading hint output is free text that is wrapped into JSON afterwards: no prefill.
        prefill = "" if wrap else cfg.prefill_text()
        yield _Unit(pid, kind, label, text, stable_hash(text), todo,
                    [derive_seed(cfg.seed, pid, kind, i) for i in todo], hint_verdict, wrap, prefill)


def _judgment_record(unit: _Unit, gen: Generation, cfg: SampleConfig) -> dict:
    from conj_train.prompts.build import wrap_hint_output

    text = (wrap_hint_output(gen.text, unit.hint_verdict, template=_template(cfg.template))
            if unit.wrap else unit.prefill + gen.text)
    rec = {
        "judgment_id": f"{unit.pair_id}:{unit.kind}:{unit.indices[gen.index]}",
        "pair_id": unit.pair_id,
        "kind": unit.kind,
        "index": unit.indices[gen.index],
        "label": unit.label,
        "hint_verdict": unit.hint_verdict,
        "prompt_hash": unit.prompt_hash,
        "text": text,
        "finish_reason": gen.finish_reason,
        "prompt_tokens": gen.prompt_tokens,
        "completion_tokens": gen.completion_tokens,
        "seed": gen.seed,
    }
    if unit.wrap:
        rec["raw_text"] = gen.text
    if gen.extra:
        rec["extra"] = gen.extra
    return rec


# --------------------------------------------------------------------------------------------
# Running one shard


def _make_engine(cfg: SampleConfig) -> Any:
    if cfg.engine == "vllm":
        from conj_train.engines.vllm import VLLMEngine

        return VLLMEngine(cfg.model_name_or_path, tensor_parallel_size=cfg.tensor_parallel_size, dtype=cfg.dtype,
                          seed=cfg.seed, gpu_memory_utilization=cfg.gpu_memory_utilization,
                          max_model_len=cfg.max_model_len, trust_remote_code=cfg.trust_remote_code)
    import os

    import torch

    from conj_train.engines.hf import HFEngine

    # One GPU per process under accelerate/torchrun; LOCAL_RANK is unset for a single process.
    device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else None
    return HFEngine(cfg.model_name_or_path, dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code,
                    threads=cfg.threads, device=device, batch_tokens=cfg.hf_batch_tokens)


def _one_sided(rows: list[dict]) -> bool:
    """True when a pair's repeated samples are all right or all wrong (no contrast among them)."""
    from conj_train.verdicts import parse_verdict

    verdicts = [parse_verdict(r["text"], "strict").verdict for r in rows]
    right = sum(v == r["label"] for v, r in zip(verdicts, rows, strict=True))
    wrong = sum(v is not None and v != r["label"] for v, r in zip(verdicts, rows, strict=True))
    return right == 0 or wrong == 0


def run_sample(cfg: SampleConfig, *, rank: int | None = None, world: int | None = None,
               engine: Any = None, merge: bool = True) -> SampleResult:
    """Sample one shard (``cfg.shard``, or ``rank``/``world`` under accelerate).

    With ``merge`` the merged manifest is written once every shard has finished. A shard that already
    finished with the same config is not redone (the rerun is a no-op that says so).
    """
    rank, world = resolve_shard(cfg.shard, rank, world)
    out = Path(cfg.output_dir)
    if cfg.merge_only:
        return merge_shards(out, cfg)
    shard = ShardRun(out, rank, world)
    check_output_dir(out)
    check_separate(out, [cfg.dataset_name, cfg.model_name_or_path])
    with shard.locked():
        return _run_shard(cfg, out, shard, engine, merge)


def _run_shard(cfg: SampleConfig, out: Path, shard: ShardRun, engine: Any, merge: bool) -> SampleResult:
    """One shard, under its lock: claim the folder for this config and data, resume, sample, merge."""
    rank, world, name = shard.rank, shard.world, shard.name
    items, info = _load_items(cfg)
    data_hash = records_fingerprint(it["pair_id"] for it in items)
    finished = shard.claim(stage="sample", config_hash=cfg.output_hash(), data_hash=data_hash,
                           overwrite=cfg.overwrite, subs=("prompts",))
    if finished is not None:
        result = SampleResult(out, finished["counts"], complete=True,
                              summary=f"{out}: shard {rank}/{world} already complete; nothing to do")
        if merge and all_shards_complete([out], world):
            merged = merge_shards(out, cfg)
            merged.summary = result.summary + "\n" + merged.summary
            return merged
        return result

    tokenizer = load_tokenizer(cfg.model_name_or_path, cfg.trust_remote_code)
    mine = shard.mine(items)
    write_jsonl(out / "prompts" / f"{name}.jsonl", (_prompt_row(it, cfg) for it in mine))
    done, existing = shard.done(_judgment_key)
    first_kinds = ["repeated"] if cfg.hint_when == "fallback" else [k for k in KINDS if _kind_count(cfg, k)]
    engine = engine or _make_engine(cfg)
    counts: Counter[str] = Counter()
    skipped: dict[str, set[str]] = {}
    with JsonlAppender(shard.records) as sink:
        _sample_pass(cfg, engine, tokenizer, mine, first_kinds, done, sink, counts, skipped)
        if cfg.hint_when == "fallback" and cfg.hint_samples:
            done, rows = shard.done(_judgment_key)
            fallback = _fallback_items(mine, rows)
            counts["fallback_pairs"] = len(fallback)
            _sample_pass(cfg, engine, tokenizer, fallback, ["hint_correct", "hint_wrong"], done, sink,
                         counts, skipped)
    _, rows = shard.done(_judgment_key)
    counts_now = shard_counts(rows, len(mine), {k: len(v) for k, v in skipped.items()}, counts)
    shard.finish({
        "stage": "sample", "shard": [rank, world], "config_hash": cfg.output_hash(), "data_hash": data_hash,
        "config": config_to_dict(cfg), "input": info, "counts": counts_now, "complete": True,
        "resumed_from": len(existing), "versions": library_versions(),
    })
    result = SampleResult(out, counts_now, complete=True,
                          summary=format_summary(counts_now, cfg.min_parseable))
    if merge and all_shards_complete([out], world):
        return merge_shards(out, cfg)
    warn_now(counts_now, cfg.min_parseable)
    return result


def _judgment_key(record: dict) -> tuple[str, str, int]:
    """What identifies a judgment on disk: (pair id, judgment kind, sample index)."""
    return record["pair_id"], record["kind"], int(record["index"])


def _prompt_row(item: dict, cfg: SampleConfig) -> dict:
    """A pair's prompt record; ``messages`` are the DPO prompt turns (system + judge prompt) the
    filter writes into the preference rows, so it never rebuilds them from the sampling config."""
    keep = ("pair_id", "label", "prompt", "question", "answer1", "answer2", "template")
    row = {k: item[k] for k in keep if k in item}
    row["prompt_hash"] = stable_hash(item["prompt"])
    row["messages"] = chat_messages(item["prompt"], system=cfg.system_prompt)
    return row


def _fallback_items(items: list[dict], rows: list[dict]) -> list[dict]:
    by_pair: dict[str, list[dict]] = {}
    for r in rows:
        if r["kind"] == "repeated":
            by_pair.setdefault(r["pair_id"], []).append(r)
    return [it for it in items if by_pair.get(it["pair_id"]) and _one_sided(by_pair[it["pair_id"]])]


def _sample_pass(cfg: SampleConfig, engine: Any, tokenizer: Any, items: list[dict], kinds: list[str],
                 done: set, sink: JsonlAppender, counts: Counter, skipped: dict[str, set[str]]) -> None:
    """Generate every missing judgment of ``items`` for ``kinds``, a batch of pairs at a time.

    Each batch is written (append + fsync) before the next starts, so a kill loses at most the batch
    in flight. Prompts longer than the engine's context minus ``max_new_tokens`` are skipped and
    counted, never truncated.
    """
    from tqdm.auto import tqdm

    todo = [it for it in items if any((it["pair_id"], k, i) not in done
                                      for k in kinds for i in range(_kind_count(cfg, k)))]
    params = {"repeated": cfg.repeated_params(), "hint": cfg.hint_params()}
    bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="pair", desc=f"sample {'+'.join(kinds)}",
               disable=not cfg.progress)
    t0, tokens = time.perf_counter(), 0
    for start in range(0, len(todo), cfg.batch_pairs):
        batch = todo[start: start + cfg.batch_pairs]
        fits: list[_Unit] = []
        for u in (u for it in batch for u in _units_for(cfg, it, kinds, tokenizer, done)):
            if prompt_too_long(engine, u.prompt_text, u.prefill, cfg.max_new_tokens):
                skipped.setdefault(PROMPT_TOO_LONG, set()).add(u.pair_id)
            else:
                fits.append(u)
        records: list[dict] = []
        for group in ("repeated", "hint"):
            us = [u for u in fits if u.kind.startswith(group)]
            if not us:
                continue
            reqs = [GenerationRequest(key=f"{u.pair_id}:{u.kind}", prompt=u.prompt_text, seeds=u.seeds,
                                      prefill=u.prefill) for u in us]
            by_key: dict[str, list[Generation]] = {}
            for g in engine.generate(reqs, params[group]):
                by_key.setdefault(g.key, []).append(g)
            for u in us:
                for g in by_key.get(f"{u.pair_id}:{u.kind}", []):
                    records.append(_judgment_record(u, g, cfg))
                    tokens += g.completion_tokens
        sink.write_batch(records)
        done.update((r["pair_id"], r["kind"], r["index"]) for r in records)
        bar.update(len(batch))
        bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - t0, 1e-9):.0f}")
    bar.close()
    counts["generated_tokens"] += tokens


def merge_shards(out: Path, cfg: SampleConfig) -> SampleResult:
    """Check that every shard finished with this config, then write the merged ``manifest.json``."""
    shards = shard_manifests(out)
    world = check_mergeable(out, shards, config_hash=cfg.output_hash())
    counts = merged_counts(out, world, shards, fallback=cfg.hint_when == "fallback")
    manifest = {
        "stage": "sample", "config_hash": cfg.output_hash(), "data_hash": shards[0].get("data_hash"),
        "config": config_to_dict(cfg), "input": shards[0].get("input", {}), "shards": world,
        "counts": counts, "complete": True, "versions": library_versions(),
    }
    atomic_write_json(out / "manifest.json", manifest)
    warn_now(counts, cfg.min_parseable)
    summary = format_summary(counts, cfg.min_parseable)
    log_stage(cfg.report_to, stage="sample", output_dir=out, config=manifest["config"],
              metrics=tracker_metrics(counts),
              tables={"sample/parse_rate_by_kind": [
                  {"kind": k, "judgments": counts["by_kind"].get(k, 0), "parse_rate": v}
                  for k, v in counts.get("share_parseable_by_kind", {}).items()]})
    if cfg.push_to_hub:
        from conj_train.sample.hub import push_judgments

        url = push_judgments(out, manifest, repo_id=str(cfg.hub_repo_id), private=cfg.hub_private)
        summary += f"\npushed the judgments to {url}"
    return SampleResult(out, counts, complete=True, merged=True, summary=summary)
