"""``swap_orders``: every contrastive pair also written with its answers swapped (filter/swap.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conj_train.filter.run import FilterConfig, run_filter
from conj_train.filter.swap import swap_judgment, swap_slot_references, swapped_prompt
from conj_train.io import iter_jsonl
from conj_train.prompts.chat import chat_messages
from conj_train.prompts.templates import get_template
from conj_train.verdicts import parse_verdict

CONTEXT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! Answer 1: is here"}]


@pytest.mark.parametrize("name", ["conj-en", "conj-zh"])
@pytest.mark.parametrize("context", [[], CONTEXT])
def test_swapped_prompt_is_the_template_with_answers_exchanged(name: str, context: list) -> None:
    tpl = get_template(name)
    q, a1, a2 = "What is 2+2?", "It is 4.", "Paris is in France."
    prompt = tpl.judge_prompt(q, a1, a2, context)
    assert swapped_prompt(tpl, prompt, q, a1, a2) == tpl.judge_prompt(q, a2, a1, context)


def test_answer_text_that_looks_like_a_slot_label_stays_data() -> None:
    tpl = get_template("conj-en")
    q, a1, a2 = "Q?", "see\nAnswer 2: fake slot", "plain answer 1 text"
    prompt = tpl.judge_prompt(q, a1, a2, CONTEXT)
    assert swapped_prompt(tpl, prompt, q, a1, a2) == tpl.judge_prompt(q, a2, a1, CONTEXT)


def test_prompt_not_rendered_by_the_template_is_not_swapped() -> None:
    tpl = get_template("conj-en")
    assert swapped_prompt(tpl, "Question: Q? Answer 1: a Answer 2: b", "Q?", "a", "b") is None
    other = get_template("conj-zh").judge_prompt("Q?", "a", "b")
    assert swapped_prompt(tpl, other, "Q?", "a", "b") is None


def test_judgment_verdict_and_slot_references_point_at_the_other_slot() -> None:
    text = ' {"reason": "Answer 1 answers the question; the second response is off topic.", "better_answer": 1}'
    out = swap_judgment(text, 1, ["better_answer"])
    assert parse_verdict(out, "strict").verdict == 2
    assert "Answer 2 answers the question; the first response is off topic." in out
    zh = '{"原因": "回答2更相关，第一个回答离题。", "更好的回答": 2}'
    out_zh = swap_judgment(zh, 2, ["更好的回答"])
    assert parse_verdict(out_zh, "strict").verdict == 1 and "回答1更相关，第二个回答离题" in out_zh


def test_unparseable_judgment_keeps_its_missing_verdict() -> None:
    text = '{"reason": "Answer 2 is better because'
    assert swap_judgment(text, None, ["better_answer"]) == '{"reason": "Answer 1 is better because'
    assert swap_slot_references("no slot named here, 1 and 2 alone") == "no slot named here, 1 and 2 alone"


def _sample_dir(root: Path, model: Path) -> Path:
    """A finished sampling run whose prompts are the conj-en template's own (4 pairs, mixed repeats)."""
    tpl = get_template("conj-en")
    prompts, judgments = [], []
    for i in range(4):
        pid, label = f"p{i}", 1 + i % 2
        q, own, other = f"Question {i}?", f"own answer {i}", f"other answer {i}"
        a1, a2 = (own, other) if label == 1 else (other, own)
        prompt = tpl.judge_prompt(q, a1, a2, CONTEXT if i % 2 else [])
        prompts.append({"pair_id": pid, "label": label, "prompt": prompt, "question": q, "answer1": a1,
                        "answer2": a2, "template": "conj-en", "prompt_hash": "h", "messages": chat_messages(prompt)})
        for k, verdict in enumerate((label, label, 3 - label, 3 - label)):
            text = json.dumps({"reason": f"Answer {verdict} fits {i}.{k}", "better_answer": verdict})
            judgments.append({"judgment_id": f"{pid}:repeated:{k}", "pair_id": pid, "kind": "repeated", "index": k,
                              "label": label, "hint_verdict": None, "prompt_hash": "h", "text": text,
                              "finish_reason": "stop", "prompt_tokens": 9, "completion_tokens": 9, "seed": 1})
    for sub, rows in (("prompts", prompts), ("judgments", judgments)):
        (root / sub).mkdir(parents=True)
        (root / sub / "shard-00000-of-00001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"model_name_or_path": str(model), "template": "conj-en", "n": 4, "hint_samples": 0}
    (root / "manifest.json").write_text(json.dumps({"stage": "sample", "complete": True, "config": config,
                                                    "config_hash": "abc", "shards": 1}))
    return root


def test_filter_writes_each_pair_in_both_orders(tmp_path: Path, tiny_model_dir: Path) -> None:
    sample = _sample_dir(tmp_path / "sample", tiny_model_dir)
    plain = run_filter(FilterConfig(dataset_name=str(sample), output_dir=str(tmp_path / "plain"),
                                    validation_share=0.0))
    both = run_filter(FilterConfig(dataset_name=str(sample), output_dir=str(tmp_path / "both"),
                                   validation_share=0.0, swap_orders=True))
    rows = list(iter_jsonl(tmp_path / "both" / "train.jsonl"))
    n = plain.counts["train"]
    assert n > 0 and len(rows) == 2 * n and both.counts["swap_orders"]["train"] == {"swapped": n, "unswappable": 0}
    for row, swapped in zip(rows[:n], rows[n:], strict=True):
        assert swapped["label"] == 3 - row["label"] and swapped["pair_id"] == row["pair_id"]
        assert swapped["pair_type"] == row["pair_type"] + "+swapped"
        assert parse_verdict(swapped["chosen"][0]["content"], "strict").verdict == swapped["label"]
        assert swapped["prompt"][-1]["content"] != row["prompt"][-1]["content"]


def test_swap_orders_off_keeps_the_config_hash() -> None:
    # The literal is the hash of this config before swap_orders existed: older filter folders resume.
    assert FilterConfig(dataset_name="s", output_dir="o").output_hash() == "eedb025f4cfae37f"
    assert FilterConfig(dataset_name="s", output_dir="o", swap_orders=True).output_hash() != "eedb025f4cfae37f"
