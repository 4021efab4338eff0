"""Evaluation records: what one judge or reward model writes for each (data set, pair, order).

Apart from :mod:`conj_train.evaluate.run` (config, shards, merge) because this is the one place that
turns a model's output into the record format that :mod:`conj_train.evaluate.scoring` re-scores, for
both model kinds: a generative judge (:class:`conj_train.inference.judge.Judge`, one record per order) and a
scalar reward model (:class:`conj_train.inference.reward_model.RewardModel`, one record per pair).
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

from conj_train.inference.judge import Judge, Judgment
from conj_train.inference.reward_model import RewardModel, sigmoid
from conj_train.io import JsonlAppender
from conj_train.runs import derive_seed
from conj_train.verdicts import score as verdict_score

if TYPE_CHECKING:
    from conj_train.evaluate.config import EvalConfig


def record_key(rec: dict) -> tuple[str, str, bool]:
    """What identifies a record on disk: (data set, pair id, swapped)."""
    return rec["dataset"], rec["pair_id"], bool(rec["swapped"])


def base_record(it: dict) -> dict:
    """The fields every record of item ``it`` has, judge or reward model."""
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
        **{k: it[k] for k in ("row", "row_pairs") if k in it},
    }


def score_of(verdict: int | None, label: int, tie: bool = False) -> float | None:
    """The project's per-order score; None on a tie-labelled row (no answer is the right one)."""
    if tie:
        return None
    return verdict_score(verdict, label)


def judge_record(it: dict, j: Judgment) -> dict:
    """The record of one judged item: text, verdict, score, probabilities, transfer, samples."""
    rec = base_record(it)
    p1 = j.p_slot1
    read = j.reads[0] if j.reads else None
    rec.update(
        {
            "text": j.texts[0] if j.texts else "",
            "verdict": j.verdict,
            "correct": score_of(j.verdict, it["label"], it.get("tie", False)),
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



def device_for(cfg: EvalConfig) -> str | None:
    """The device this process loads models on (None: the library's choice, i.e. CPU here)."""
    import os

    import torch

    # One GPU per process under accelerate/torchrun; LOCAL_RANK is unset for a single process.
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else None


def make_judge(cfg: EvalConfig, path: str) -> Judge:
    """The :class:`~conj_train.inference.judge.Judge` of model ``path`` with this run's decoding and engine."""
    opts = {
        "template": cfg.template,
        "parser": cfg.parser,
        "system_prompt": cfg.system_prompt,
        **cfg.decoding_settings(),
        "decoding": cfg.decoding,
        "samples": cfg.n,
        "seed": cfg.seed,
        "prefill": cfg.prefill,
        "structured": cfg.structured_output,
    }
    common = {"trust_remote_code": cfg.trust_remote_code, "probability": cfg.probability,
              "transfer_model": cfg.transfer_model}
    return Judge.from_pretrained(path, cfg.engine, **common, **_engine_loading(cfg, path), **opts)


def _engine_loading(cfg: EvalConfig, path: str) -> dict[str, Any]:
    """The loading arguments and ``engine_options`` that only ``cfg.engine`` takes."""
    if cfg.engine == "openai":
        # The key stays in the environment: only the variable's name is passed.
        return {"probability_batch_tokens": cfg.probability_batch_tokens, "engine_options": {
            "base_url": cfg.base_url, "model": cfg.served_model_name or path, "api": cfg.openai_api,
            "api_key_env": cfg.api_key_env, "max_concurrency": cfg.max_concurrency,
            "max_retries": cfg.request_retries, "timeout": cfg.request_timeout, "max_context": cfg.max_model_len}}
    if cfg.engine == "vllm":
        return {"dtype": cfg.dtype, "engine_options": {
            "tensor_parallel_size": cfg.tensor_parallel_size, "seed": cfg.seed,
            "gpu_memory_utilization": cfg.gpu_memory_utilization, "max_model_len": cfg.max_model_len}}
    return {"dtype": cfg.dtype, "device": device_for(cfg), "threads": cfg.threads,
            "probability_batch_tokens": cfg.probability_batch_tokens,
            "engine_options": {"batch_tokens": cfg.hf_batch_tokens}}


def judge_batches(cfg: EvalConfig, judge: Judge, todo: list[dict], sink: JsonlAppender, bar: Any) -> int:
    """Judge ``todo`` a batch at a time, appending each batch's records; returns the tokens generated."""
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
        judged = judge.judge_prompts([it["prompt"] for it in batch], seeds, transfer=can_transfer)
        sink.write_batch(judge_record(it, j) for it, j in zip(batch, judged, strict=True))
        tokens += sum(sum(j.completion_tokens) for j in judged)
        bar.update(len(batch))
    return tokens


def rm_batches(cfg: EvalConfig, rm: RewardModel, todo: list[dict], sink: JsonlAppender, bar: Any) -> int:
    """Score ``todo`` with a reward model a batch at a time, appending each batch's records."""
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
            rec = base_record(it)
            ok = r1 is not None and r2 is not None
            verdict = (1 if r1 > r2 else 2 if r2 > r1 else None) if ok else None  # type: ignore[operator]
            p1 = sigmoid(r1 - r2) if ok else None  # type: ignore[operator]
            label = it["label"]
            rec.update(
                {
                    "reward_1": r1,
                    "reward_2": r2,
                    "verdict": verdict,
                    "correct": score_of(verdict, label, it.get("tie", False)),
                    "probability": p1,
                    "p_chosen": None if p1 is None else (p1 if label == 1 else 1 - p1),
                    "skipped": None if ok else "too_long",
                }
            )
            rows.append(rec)
        sink.write_batch(rows)
        bar.update(len(batch))
    return 0



def free_memory() -> None:
    """Release a model's memory before the next one loads (several models run in one process)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass
