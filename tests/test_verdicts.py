"""Verdict parsers: the spec's checked cases, both modes, edge cases, and linear running time."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conj_train.errors import ConjError
from conj_train.verdicts import (
    LENIENT_CASCADE,
    ParsedVerdict,
    classify,
    parse_verdict,
    score,
    unparseable_reason,
)
from conj_train.verdicts.position import verdict_position

REPO = Path(__file__).resolve().parents[1]

HINT_RAW = '{"原因":"他说"好"\n回答2更完整。\n","更好的回答": 2}'  # reshape_output, no escaping
TRUNCATED = ' {"原因": "回答1的推理'

# The table of checked cases (docs/method.md#parser-cases): (output, training parser, evaluation score
# for chosen = 1).
SPEC_TABLE = [
    ('{"原因":"他说"好"\n回答1更好","更好的回答": 1}', 1, 1.0),
    (' {"原因": "…", "更好的回答": 2}', 2, 0.0),
    ('```json\n{"原因": "…", "更好的回答": 1}\n```', 1, 1.0),
    ("我认为回答2更好", None, 0.0),
    ('{"原因": "…", "更好的回答": "回答2"}', None, 0.5),
    ('{"原因": "…", "更好的回答": 3}', None, 0.5),
    (TRUNCATED, None, 1.0),
]

# (text, mode, expected verdict): every row states what one mode must return.
CASES = [
    # the spec's table, as verdicts (the lenient verdict follows from the score for chosen = 1)
    *[(text, "strict", train) for text, train, _ in SPEC_TABLE],
    *[(text, "lenient", {1.0: 1, 0.0: 2, 0.5: None}[s]) for text, _, s in SPEC_TABLE],
    # whole JSON, fenced JSON, text around objects
    ('{"原因": "回答1准确", "更好的回答": 1}', "strict", 1),
    ('{"原因": "回答1准确", "更好的回答": 1}', "lenient", 1),
    ('以下是判断：\n```json\n{\n  "原因": "x",\n  "更好的回答": 2\n}\n```\n谢谢', "strict", 2),
    ('```json\n{"原因": "无结论"}\n```\n再想想：\n```json\n{"更好的回答": 2}\n```', "strict", 2),
    ('```json\n{"原因": "x", "更好的回答": 1}', "strict", 1),  # unclosed fence: the object still counts
    ('判断如下 {"原因": "x", "更好的回答": 2} 完毕', "strict", 2),
    ('x {"更好的回答": 1} y {"更好的回答": 2}', "strict", 1),  # the first object wins
    ('{"更好的回答": 2} 补充：{"更好的回答": 1}', "strict", 2),
    ('先看 {"原因": "只有理由"} 再看 {"原因": "r", "更好的回答": 2}', "strict", 2),  # then the last one
    ('结果：{"judgment": {"更好的回答": 2}}', "strict", 2),  # nested object found from the right
    ('集合 {1, 2} 之外 {"原因": "r", "更好的回答": 1}', "strict", 1),  # invalid first candidate
    ("{" * 300 + '{"原因": "r", "更好的回答": 2}', "strict", 2),
    # English keys of the English prompt
    ('{"reason": "Answer 2 is correct.", "better_answer": 2}', "strict", 2),
    ('{"reason": "Answer 2 is correct.", "better_answer": 2}', "lenient", 2),
    ('{"reason": "r", "better answer": 1}', "strict", 1),
    ('{"reason": "r", "betterAnswer": 2}', "strict", 2),
    ('{"reason": "cut" "better_answer": 1', "strict", 1),  # broken JSON: quoted-key fallback
    ("The better answer is 2.", "lenient", 2),
    ("The better answer is 2.", "strict", None),
    # values: only the integers (or integral floats) 1 and 2 count
    ('{"更好的回答": "1"}', "strict", None),
    ('{"更好的回答": "1"}', "lenient", None),
    ('{"更好的回答": 1.0}', "strict", 1),
    ('{"更好的回答": true}', "strict", None),
    ('{"更好的回答": 0}', "lenient", None),
    ('{"更好的回答": null}', "strict", None),
    # missing key
    ('{"原因": "回答1更好"}', "strict", None),
    ('{"原因": "回答1更好"}', "lenient", 1),  # the cascade reaches the key 回答
    # full-width digits, quotes and colon
    ('{"原因": "x", "更好的回答": ２}', "strict", 2),
    ('{"原因": "x", "更好的回答": ２}', "lenient", 2),
    ("{“原因”：“回答2更好”，“更好的回答”：1}", "strict", 1),
    ("{“原因”：“回答2更好”，“更好的回答”：1}", "lenient", 1),
    ('{"原因": "x", "更好的回答" ： １}', "strict", 1),
    # the Chinese closing quote + comma fix
    ('{"原因": "回答1有误”，"更好的回答": 2}', "strict", 2),
    ('{"原因": "回答1有误”,"更好的回答": 2}', "strict", 2),
    ('{"原因": "他说“好”，但回答1有误", "更好的回答": 2}', "strict", 2),
    # reshaped hint outputs: raw newlines and quotes make the JSON invalid
    (HINT_RAW, "strict", 2),
    (HINT_RAW, "lenient", 2),
    ('{"原因":"第一行\n第二行","更好的回答": 1}', "strict", 1),
    ('{"原因":"第一行\n第二行","更好的回答": 1}', "lenient", 1),
    # empty, whitespace, truncated, free text
    ("", "strict", None),
    ("", "lenient", None),
    ("   \n\t ", "strict", None),
    ("   \n\t ", "lenient", None),
    ('{"原因": "回答2更好", "更好的回答": ', "strict", None),
    ('{"原因": "没有结论", "更好的回答": ', "lenient", None),
    ("我认为回答2更好", "strict", None),
    ("我认为回答2更好", "lenient", 2),
    # the lenient cascade: key order and the digit-before-key rule
    ("回答1不错，更好回答是2", "lenient", 2),  # 更好回答 comes before 回答 in the cascade
    ("我选1作为更好的回答", "lenient", 1),  # no digit after the key: the last 1/2 before it
    ("我选1|更好的回答", "lenient", None),  # a '|' between digit and key blocks that rule
    ("我选1作为更好的回答", "strict", None),
    ("这两个都不好", "lenient", None),
]


@pytest.mark.parametrize(("text", "mode", "expected"), CASES)
def test_verdict_table(text: str, mode: str, expected: int | None) -> None:
    assert parse_verdict(text, mode).verdict == expected


@pytest.mark.parametrize(("text", "train", "eval_score"), SPEC_TABLE)
def test_spec_table_evaluation_scores(text: str, train: int | None, eval_score: float) -> None:
    assert score(parse_verdict(text, "lenient").verdict, label=1) == eval_score
    assert parse_verdict(text, "strict").verdict == train


def test_reasons_for_unparseable_outputs() -> None:
    assert parse_verdict("  ").reason == "empty"
    assert parse_verdict("我认为回答2更好").reason == "no_json"
    assert parse_verdict(TRUNCATED).reason == "invalid_json"
    assert parse_verdict('{"原因": "回答1更好"}').reason == "no_verdict_key"
    assert parse_verdict('{"更好的回答": "1"}').reason == "bad_value"
    assert parse_verdict('{"原因": "x" "更好的回答": 三}').reason == "bad_value"  # fallback: key, no digit


def test_rationale_from_json_and_from_broken_json() -> None:
    assert parse_verdict('{"原因": "回答1准确", "更好的回答": 1}') == ParsedVerdict(1, "回答1准确", None, "json")
    hint = parse_verdict(HINT_RAW)
    assert (hint.verdict, hint.via, hint.rationale) == (2, "key", '他说"好"\n回答2更完整。\n')
    assert parse_verdict(HINT_RAW, "lenient").rationale == '他说"好" 回答2更完整。 '  # newlines -> spaces
    english = parse_verdict('{"reason": "Answer 2 is right.", "better_answer": 2}')
    assert english.rationale == "Answer 2 is right."


def test_quote_fix_applies_only_when_the_text_does_not_parse() -> None:
    intact = parse_verdict('{"原因": "他说“好”，但回答1有误", "更好的回答": 2}')
    assert (intact.via, intact.rationale) == ("json", "他说“好”，但回答1有误")
    fixed = parse_verdict('{"原因": "回答1有误”，"更好的回答": 2}')
    assert (fixed.via, fixed.rationale) == ("json", "回答1有误")


def test_via_names_the_source() -> None:
    assert parse_verdict('```json\n{"更好的回答": 1}\n```').via == "fenced"
    assert parse_verdict('答：{"更好的回答": 1}').via == "object"
    assert parse_verdict("我认为回答2更好", "lenient").via == "cascade"


def test_custom_keys() -> None:
    demo = '{"reason": "Answer 1 is a fruit.", "better": 1}'
    assert parse_verdict(demo).verdict is None
    parsed = parse_verdict(demo, verdict_keys=["better"], rationale_keys=["reason"])
    assert (parsed.verdict, parsed.rationale) == (1, "Answer 1 is a fruit.")
    assert parse_verdict('{"why": "x", "better": 2', verdict_keys=["better"]).verdict == 2
    assert parse_verdict(demo, verdict_keys="better").verdict == 1  # one key, not its letters


def test_lenient_cascade_is_the_spec_list() -> None:
    assert LENIENT_CASCADE[0] == "更好的回答" and LENIENT_CASCADE[-2:] == ("答案", "回答")
    assert len(LENIENT_CASCADE) == 21 and "更好 的 回答 " in LENIENT_CASCADE


def test_unknown_mode_is_a_user_error() -> None:
    with pytest.raises(ConjError, match="fuzzy"):
        parse_verdict("{}", "fuzzy")


def test_classify_and_score() -> None:
    assert [classify(v, 2) for v in (2, 1, None)] == ["positive", "negative", "unparseable"]
    assert classify(1, 1, finish_reason="length") == "positive"  # a verdict still counts
    assert [score(v, 1) for v in (1, 2, None)] == [1.0, 0.0, 0.5]
    with pytest.raises(ConjError, match="label"):
        classify(1, 3)


def test_truncated_outputs_get_their_own_reason() -> None:
    parsed = parse_verdict(TRUNCATED)
    assert unparseable_reason(parsed, finish_reason="length") == "truncated"
    assert unparseable_reason(parsed, finish_reason="stop") == "invalid_json"
    assert unparseable_reason(parse_verdict('{"更好的回答": 1}'), finish_reason="length") is None


# --- running time ----------------------------------------------------------------------------------

def _adversarial_shapes() -> dict:
    """The adversarial text shapes of bench/parse_scaling.py (which times them)."""
    spec = importlib.util.spec_from_file_location("parse_scaling", REPO / "bench" / "parse_scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ADVERSARIAL


ADVERSARIAL = _adversarial_shapes()
# What each shape parses to (strict, lenient): a digit after a key the lenient parser reads, nothing
# else. The time the parse takes grows linearly with the text: bench/parse_scaling.py measures it.
ADVERSARIAL_VERDICTS = {"digits before key": (None, 1), "unquoted keys": (None, 1)}


@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
def test_adversarial_text_parses_to_the_same_verdict_at_every_length(shape: str) -> None:
    make = ADVERSARIAL[shape]
    want = ADVERSARIAL_VERDICTS.get(shape, (None, None))
    for size in (1_000, 10_000, 100_000):
        assert tuple(parse_verdict(make(size), mode).verdict for mode in ("strict", "lenient")) == want


# --- where the strict parser matches the original script, and where it documents a difference ------


def test_strict_decodes_a_json_string_in_a_fence_once_more_as_the_original() -> None:
    text = '```json\n"{\\"更好的回答\\": 2, \\"原因\\": \\"r\\"}"\n```'
    assert parse_verdict(text, "strict")[:2] == (2, "r")


@pytest.mark.parametrize("text", [
    '"better_answer": 2, "更好的回答": 1',                         # quoted-key fallback
    '{"原因": "x"} {"better_answer": 2} {"更好的回答": 1}',        # objects in the text
])
def test_strict_ranks_the_chinese_key_first_as_the_original(text: str) -> None:
    assert parse_verdict(text, "strict").verdict == 1


def test_strict_reads_english_keys_only_without_the_chinese_one() -> None:
    # The original reads no English key (docs/differences.md, row 16): a documented extension.
    assert parse_verdict('{"better_answer": 2}', "strict").verdict == 2


def test_full_width_digit_before_an_ascii_one_reads_as_each_original_parser() -> None:
    # Training parser (construct_dpo_dataset_for_critic_model, docs/method.md#verdict-parsing): the regex
    # "更好的回答":(.*?)([12]) skips the full-width ２ and reads the ASCII 1.
    text = '{"原因": "x", "更好的回答": ２ 或 1}'
    assert parse_verdict(text, "strict").verdict == 1
    # Evaluation parser (evaluate_utils.meta_evaluate, docs/method.md#verdict-parsing): "KEY":(.*?)([12１２]) reads ２.
    assert parse_verdict(text, "lenient").verdict == 2
    # A full-width digit alone: the training parser finds nothing; here it is read (documented).
    assert parse_verdict('{"原因": "x", "更好的回答": ２}', "strict").verdict == 2


def test_full_width_quoted_key_parses_where_the_original_finds_nothing() -> None:
    # The original's always-on replacement leaves no ASCII "更好的回答": and yields no verdict.
    assert parse_verdict("{“原因”：“回答1更好”，“更好的回答”：1}", "strict").verdict == 1


def test_verdict_position_finds_the_digit_after_the_key() -> None:
    # Moved from tests/test_judge.py with verdict_position (probability.py -> verdicts.py).
    verdict_1 = ' {"原因": "回答1更好", "更好的回答": 1}'
    assert verdict_1[verdict_position(verdict_1, 1)] == "1"
    text = '{"原因": "回答2的解释", "更好的回答"：２}'
    assert text[verdict_position(text, 2)] == "２"
    assert verdict_position(verdict_1, 2) is None
    assert verdict_position("我认为回答2更好", 2) is None
    assert verdict_position(verdict_1, None) is None
    # Unquoted key, quoted digit, spaces around the colon; a wrong digit first, the right one later.
    assert verdict_position('更好的回答 ： "2"', 2) == 9
    text = '"更好的回答": 1, then better_answer: 2'
    assert text[verdict_position(text, 2)] == "2" and verdict_position(text, 1) == 9
    assert verdict_position('reason: x, "better": 1', 1, ["better"]) == 21


@pytest.mark.parametrize(("text", "rewardbench", "lenient"), [
    # RewardBench's con_j_evaluate (rewardbench/generative.py) on each: value read as str(value), so a
    # JSON string "1" counts and 1.0 ("1.0") does not; the lenient parser takes the integers only.
    ('{"原因": "x", "更好的回答": "1"}', 1, None),
    ('{"原因": "x", "更好的回答": 1.0}', None, 1),
    ('{"原因": "x", "更好的回答": "２"}', 2, None),
    # No object: its last fallback ([12１２]).*?KEY is the FIRST digit before the key; the original
    # evaluator's look-ahead (lenient) the last of 1 2 | ^ before it.
    ("1 and 2 are close, so the 回答 is unclear", 1, 2),
    # The same in both: first fenced block, the quoted key then the first digit of either kind.
    ('```json {"更好的回答": 1} ``` and ```json {"更好的回答": 2} ```', 1, 1),
    ('{"原因": "x", "更好的回答": ２ 或 1}', 2, 2),
    ("我认为回答2更好", 2, 2),
    ("no verdict here", None, None),
])
def test_rewardbench_parser_reads_as_con_j_evaluate(text: str, rewardbench: int | None, lenient: int | None) -> None:
    assert parse_verdict(text, "rewardbench").verdict == rewardbench
    assert parse_verdict(text, "lenient").verdict == lenient
