"""Judge/hint prompts: byte-exact Con-J strings, slot order, multi-turn, user templates."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from conj_train.errors import ConjError
from conj_train.prompts.build import (
    build_hint_prompt,
    build_hint_prompts,
    build_judge_prompts,
    chosen_slot,
    label_balance,
    wrap_hint_output,
)
from conj_train.prompts.templates import get_template

# Pieces copied from the released strings (docs/method.md#judge-prompt, #hint-readings) independently
# of the module under test.
ZH_JUDGE_HEAD = (
    '作为一个评价专家，给定一个问题和它的两个可能的回答，请选出哪一个回答在连贯性、准确性、覆盖度和上述定义的整体质量方面最为符合。'
    '请用JSON格式输出你的判断, 其中"原因"是你提供的解释，"更好的回答"是整数类型的1或2，例如{"原因": "你的解释", "更好的回答": 1}。'
    "以下是问题和候选回答的内容：\n    \n问题："
)
ZH_ANALYSE_HEAD = (
    "作为一个评价专家，给定一个问题和它的两个可能的回答，请分析二者在连贯性、准确性、覆盖度和上述定义的整体质量方面的表现。"
    "\n        \n问题："
)


def rec(pair_id: str, *, context: list | None = None, q: str = "What is 1+1?") -> dict:
    return {
        "id": pair_id,
        "context": context or [],
        "question": q,
        "chosen": f"good {{answer}} of {pair_id}",
        "rejected": f"bad answer of {pair_id}",
        "source": "test",
        "meta": {},
    }


def slot_answers(r: dict, label: int) -> tuple[str, str]:
    return (r["chosen"], r["rejected"]) if label == 1 else (r["rejected"], r["chosen"])


def test_conj_zh_judge_prompt_is_byte_exact() -> None:
    r = rec("p1")
    (item,) = build_judge_prompts([r])
    a1, a2 = slot_answers(r, item["label"])
    assert item["prompt"] == ZH_JUDGE_HEAD + r["question"] + "\n回答1：" + a1 + "\n回答2：" + a2
    assert (item["answer1"], item["answer2"]) == (a1, a2)
    assert item["template"] == "conj-zh"


def test_code_reading_hint_prompt_is_byte_exact_and_hides_the_hint() -> None:
    r = rec("p2")
    (item,) = build_judge_prompts([r])
    a1, a2 = slot_answers(r, item["label"])
    expected = ZH_ANALYSE_HEAD + r["question"] + "\n回答1：" + a1 + "\n回答2：" + a2
    correct = build_hint_prompt(item, hint="correct", reading="code")
    wrong = build_hint_prompt(item, hint="wrong", reading="code")
    assert correct["prompt"] == expected == wrong["prompt"]
    assert (correct["verdict"], wrong["verdict"]) == (item["label"], 3 - item["label"])
    assert correct["wrap"] and wrong["wrap"]


def test_wrap_is_verbatim_reshape_output_with_raw_newlines_and_quotes() -> None:
    text = '回答1给出了"2"，\n而回答2说是"3"。'
    wrapped = wrap_hint_output(text, 1)
    assert wrapped == '{"原因":"' + text + '","更好的回答": 1}'
    # Not escaped, so not valid JSON; Con-J's training parser falls back to this regex
    # (docs/method.md#strict-parser).
    with pytest.raises(json.JSONDecodeError):
        json.loads(wrapped)
    assert re.search(r'"更好的回答":(.*?)([12])', wrapped, re.DOTALL).group(2) == "1"
    assert wrap_hint_output("x", 2, template="conj-en") == '{"reason":"x","better_answer": 2}'


def test_paper_reading_appends_the_hint_to_the_judge_prompt() -> None:
    (item,) = build_judge_prompts([rec("p3")])
    k = item["label"]
    correct = build_hint_prompt(item, hint="correct")
    wrong = build_hint_prompt(item, hint="wrong")
    assert correct["reading"] == "paper" and not correct["wrap"]
    sentence = "更好，请说明原因，并按上述JSON格式输出你的判断。"
    assert correct["prompt"] == item["prompt"] + f"\n已知回答{k}" + sentence
    assert wrong["prompt"] == item["prompt"] + f"\n已知回答{3 - k}" + sentence
    assert wrong["verdict"] == 3 - k


def test_conj_en_template_asks_for_english_keys() -> None:
    (item,) = build_judge_prompts([rec("p4")], template="conj-en")
    tpl = get_template("conj-en")
    assert (tpl.rationale_key, tpl.verdict_key) == ("reason", "better_answer")
    assert tpl.eval_prefill == ' {"reason":'
    assert '{"reason": "your explanation", "better_answer": 1}' in item["prompt"]
    assert item["prompt"].endswith(f"\nAnswer 1: {item['answer1']}\nAnswer 2: {item['answer2']}")
    hinted = build_hint_prompt(item, hint="correct")
    k = item["label"]
    assert hinted["prompt"].startswith(item["prompt"] + f"\nIt is known that answer {k} is better.")
    assert "原因" not in hinted["prompt"]
    assert get_template("conj-zh").eval_prefill == ' {"原因":'


def test_chosen_slot_is_stable_under_reordering_and_deletion() -> None:
    records = [rec(f"id-{i}") for i in range(60)]
    full = {it["pair_id"]: it["label"] for it in build_judge_prompts(records)}
    edited = [r for i, r in enumerate(reversed(records)) if i % 3]
    partial = {it["pair_id"]: it["label"] for it in build_judge_prompts(edited)}
    assert len(partial) == 40
    assert all(full[pid] == label for pid, label in partial.items())
    assert {pid: chosen_slot(pid) for pid in full} == full


def test_chosen_slot_depends_on_seed() -> None:
    ids = [f"pair-{i}" for i in range(200)]
    changed = sum(chosen_slot(i, 2021) != chosen_slot(i, 7) for i in ids)
    assert 0 < changed < len(ids)


def test_labels_are_roughly_balanced_over_1000_ids() -> None:
    items = build_judge_prompts(rec(f"x{i}") for i in range(1000))
    bal = label_balance(items)
    assert bal["label_1"] + bal["label_2"] == bal["total"] == 1000
    assert 400 <= bal["label_1"] <= 600


def test_both_orders_renders_each_pair_twice_swapped() -> None:
    records = [rec(f"b{i}") for i in range(10)]
    single = build_judge_prompts(records)
    both = build_judge_prompts(records, both_orders=True)
    assert len(both) == 20
    pairs = zip(both[::2], both[1::2], strict=True)
    for r, one, (first, second) in zip(records, single, pairs, strict=True):
        assert first == one and not first["swapped"] and second["swapped"]
        assert {first["label"], second["label"]} == {1, 2}
        assert (second["answer1"], second["answer2"]) == (first["answer2"], first["answer1"])
        assert (second["answer1"], second["answer2"]) == slot_answers(r, second["label"])
        assert second["prompt"].endswith("\n回答1：" + second["answer1"] + "\n回答2：" + second["answer2"])
    assert label_balance(both)["label_1"] == 10


def test_multi_turn_context_is_shown_before_the_question() -> None:
    context = [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
    ]
    (zh,) = build_judge_prompts([rec("m1", context=context, q="Now add 1+1")])
    head = ZH_JUDGE_HEAD.removesuffix("问题：")
    transcript = "对话历史：\n用户：Hi there\n助手：Hello! How can I help?\n"
    assert zh["prompt"].startswith(head + transcript + "问题：Now add 1+1\n")
    (en,) = build_judge_prompts([rec("m1", context=context)], template="conj-en")
    en_transcript = "Conversation history:\nUser: Hi there\nAssistant: Hello! How can I help?\n"
    assert en_transcript + "Question: " in en["prompt"]
    code = build_hint_prompt(zh, hint="correct", reading="code")["prompt"]
    assert code.startswith(ZH_ANALYSE_HEAD.removesuffix("问题：") + "对话历史：\n用户：Hi there\n")


def test_empty_or_missing_context_keeps_the_original_bytes() -> None:
    with_empty = rec("e1")
    without = {k: v for k, v in with_empty.items() if k != "context"}
    (a,) = build_judge_prompts([with_empty])
    (b,) = build_judge_prompts([without])
    assert a["prompt"] == b["prompt"]
    assert a["prompt"].startswith(ZH_JUDGE_HEAD) and "对话历史" not in a["prompt"]


def test_bad_records_raise_conj_error_naming_the_problem() -> None:
    with pytest.raises(ConjError, match="'tool'"):
        build_judge_prompts([rec("c1", context=[{"role": "tool", "content": "x"}])])
    with pytest.raises(ConjError, match="duplicate pair id 'd'"):
        build_judge_prompts([rec("d"), rec("d")])
    bad = rec("f1")
    del bad["rejected"]
    with pytest.raises(ConjError, match="'rejected'"):
        build_judge_prompts([bad])
    with pytest.raises(ConjError, match="unknown judge template"):
        build_judge_prompts([rec("t")], template="no-such-template")


def test_user_template_fills_placeholders_in_one_pass(tmp_path: Path) -> None:
    path = tmp_path / "judge.txt"
    path.write_text(
        'Judge. Reply {"reason": "...", "better_answer": 1 or 2}.\n'
        "{context}Q: {question}\nA: {answer1}\nB: {answer2}\n",
        encoding="utf-8",
    )
    r = rec("u1", q="say {answer1}")
    r["chosen"] = "literal {answer2} and {context}"
    (item,) = build_judge_prompts([r], template=str(path))
    a1, a2 = slot_answers(r, item["label"])
    head = 'Judge. Reply {"reason": "...", "better_answer": 1 or 2}.\n'
    assert item["prompt"] == head + "Q: say {answer1}\nA: " + a1 + "\nB: " + a2
    assert get_template(str(path)).verdict_key == "better_answer"
    hinted = build_hint_prompts([item], reading="paper")
    assert [h["verdict"] for h in hinted] == [item["label"], 3 - item["label"]]
    assert hinted[0]["prompt"].startswith(item["prompt"] + "\nIt is known that answer")

    (multi,) = build_judge_prompts([rec("u2", context=[{"role": "user", "content": "hey"}])], template=path)
    assert multi["prompt"].startswith(head + "Conversation history:\nUser: hey\nQ: ")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("更好的回答 Q: {question}\nA: {answer1}", r"missing placeholder\(s\) \['\{answer2\}'\]"),
        ("更好的回答 {question} {answer1} {answer2} {answer3}", r"unknown placeholder\(s\) \['\{answer3\}'\]"),
        ("Q: {question} {answer1} {answer2}", "verdict key"),
    ],
)
def test_user_template_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConjError, match=match):
        get_template(path)


def test_user_template_without_context_rejects_multi_turn_records(tmp_path: Path) -> None:
    path = tmp_path / "noctx.txt"
    path.write_text("更好的回答 {question} / {answer1} / {answer2}", encoding="utf-8")
    (single,) = build_judge_prompts([rec("s1")], template=path)
    assert single["prompt"].startswith("更好的回答 What is 1+1? / ")
    with pytest.raises(ConjError, match=r"no \{context\} placeholder but pair 's2'"):
        build_judge_prompts([rec("s2", context=[{"role": "user", "content": "hey"}])], template=path)
