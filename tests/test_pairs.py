"""Pair building, the length rule, balancing and splits on hand-built judgments
(docs/method.md#pair-construction, #length-rule, #splits)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from conj_train.errors import ConjError
from conj_train.filter.pairs import Pair, balance_by_label, build_pairs, split_of
from conj_train.filter.rules import (
    CUT,
    FORCED_NEGATIVE,
    LengthRule,
    PairRules,
    SampledJudgment,
    apply_length_rule,
    classify_judgment,
)

PID = "pair-7"
CODE = PairRules()


def _j(kind: str, index: int, category: str, text: str | None = None) -> SampledJudgment:
    verdict = {"positive": 1, "negative": 2}.get(category)
    return SampledJudgment(f"{PID}:{kind}:{index}", kind, index, text or f"{kind}-{index}-{category}", category, verdict)


def _rep(*categories: str) -> list[SampledJudgment]:
    return [_j("repeated", i, c) for i, c in enumerate(categories)]


def _hints(good: str | None, bad: str | None) -> list[SampledJudgment]:
    out = []
    if good:
        out.append(_j("hint_correct", 0, good))
    if bad:
        out.append(_j("hint_wrong", 0, bad))
    return out


def _types(pairs: list[Pair]) -> Counter:
    return Counter(p.pair_type for p in pairs)


# --- 6.2 branches --------------------------------------------------------------------------------


def test_no_positives_gives_no_repeated_pair() -> None:
    out = build_pairs(PID, 1, _rep("negative", "negative", "unparseable"), CODE)
    assert out.pairs == [] and out.profile == "all_wrong" and out.lost_reason == "all_wrong_no_hint"


def test_no_negatives_and_no_unparseable_gives_nothing() -> None:
    out = build_pairs(PID, 1, _rep("positive", "positive", "positive"), CODE)
    assert out.pairs == [] and out.lost_reason == "all_right_no_hint"


def test_five_positives_two_negatives_give_two_best_of_n() -> None:
    js = _rep("positive", "negative", "positive", "positive", "negative", "positive", "positive")
    out = build_pairs(PID, 1, js, CODE)
    assert _types(out.pairs) == {"best_of_n": 2}
    pos_ids = {j.judgment_id for j in js if j.category == "positive"}
    assert {p.rejected.judgment_id for p in out.pairs} == {f"{PID}:repeated:1", f"{PID}:repeated:4"}
    chosen = [p.chosen.judgment_id for p in out.pairs]
    assert len(set(chosen)) == 2 and set(chosen) <= pos_ids
    assert out.profile == "mixed" and out.lost_reason is None


def test_four_and_four_give_three_best_of_n_without_reuse() -> None:
    out = build_pairs(PID, 2, _rep(*["positive", "negative"] * 4), CODE)
    assert _types(out.pairs) == {"best_of_n": 3}
    assert len({p.chosen.judgment_id for p in out.pairs}) == 3
    assert len({p.rejected.judgment_id for p in out.pairs}) == 3
    assert all(p.chosen.category == "positive" and p.rejected.category == "negative" for p in out.pairs)


def test_positive_vs_first_unknown_reuses_first_positive() -> None:
    js = _rep("unparseable", "positive", "negative", "unparseable", "positive", "negative")
    out = build_pairs(PID, 1, js, CODE)
    assert _types(out.pairs) == {"best_of_n": 2, "best_of_n_positive2unknown": 1}
    p2u = next(p for p in out.pairs if p.pair_type == "best_of_n_positive2unknown")
    first_bon = next(p for p in out.pairs if p.pair_type == "best_of_n")
    assert p2u.rejected.judgment_id == f"{PID}:repeated:0"  # unknowns keep sample order
    assert p2u.chosen is first_bon.chosen  # pos[0] of the shuffled list, as in the original


def test_positive_and_unknown_only() -> None:
    out = build_pairs(PID, 1, _rep("positive", "unparseable", "unparseable"), CODE)
    assert _types(out.pairs) == {"best_of_n_positive2unknown": 1}


def test_hint_positive_vs_negative_is_preamble() -> None:
    out = build_pairs(PID, 1, _rep("positive", "positive") + _hints("positive", "negative"), CODE)
    assert _types(out.pairs) == {"preamble": 1}
    (p,) = out.pairs
    assert (p.chosen.kind, p.rejected.kind) == ("hint_correct", "hint_wrong")
    assert out.hint_status == "hint_pair"


@pytest.mark.parametrize(("good", "bad"), [("positive", "unparseable"), ("unparseable", "negative"),
                                           ("unparseable", "unparseable")])
def test_hint_with_an_unparseable_side_is_preamble2unknown(good: str, bad: str) -> None:
    out = build_pairs(PID, 1, _hints(good, bad), CODE)
    assert _types(out.pairs) == {"preamble2unknown": 1}
    (p,) = out.pairs
    assert (p.chosen.category, p.rejected.category) == (good, bad)


@pytest.mark.parametrize(("good", "bad"), [("negative", "positive"), ("negative", "negative"),
                                           ("positive", "positive"), ("negative", "unparseable")])
def test_wrong_sided_hints_give_no_pair(good: str, bad: str) -> None:
    out = build_pairs(PID, 1, _rep("positive") + _hints(good, bad), CODE)
    assert out.pairs == [] and out.hint_status == "hint_failed"
    assert out.lost_reason == "all_right_hint_failed"


def test_unparseable_chosen_is_kept_under_code_dropped_under_paper_by_default() -> None:
    # The hint_correct output has no verdict, so the chosen side is unparseable (rare for a 7B judge,
    # the common case for a small one).
    js = _hints("unparseable", "negative")
    kept = build_pairs(PID, 1, js, CODE)
    assert kept.pairs[0].chosen.category == "unparseable"
    for rules in (PairRules(allow_unparseable_chosen=False), PairRules(preset="paper")):
        strict = build_pairs(PID, 1, js, rules)
        assert strict.pairs == [] and strict.lost_reason == "unparseable_chosen"
        assert strict.dropped == {"unparseable_chosen": 1}
    assert build_pairs(PID, 1, js, PairRules(preset="paper", allow_unparseable_chosen=True)).pairs


def test_one_hint_side_missing_gives_no_hint_pair() -> None:
    out = build_pairs(PID, 1, _hints("positive", None), CODE)
    assert out.pairs == [] and out.lost_reason == "no_repeated_hint_failed"


def test_paper_preset_uses_hints_only_when_repeated_is_one_sided() -> None:
    paper = PairRules(preset="paper")
    mixed = build_pairs(PID, 1, _rep("positive", "negative") + _hints("positive", "negative"), paper)
    assert _types(mixed.pairs) == {"best_of_n": 1} and mixed.hint_status == "hint_skipped"
    code = build_pairs(PID, 1, _rep("positive", "negative") + _hints("positive", "negative"), CODE)
    assert _types(code.pairs) == {"best_of_n": 1, "preamble": 1}
    for one_sided in (("positive", "unparseable"), ("negative", "negative"), ("unparseable",), ()):
        out = build_pairs(PID, 1, _rep(*one_sided) + _hints("positive", "negative"), paper)
        assert _types(out.pairs)["preamble"] == 1, one_sided


def test_several_hint_samples_use_first_matching_sample_of_each_side() -> None:
    js = [_j("hint_correct", 0, "unparseable"), _j("hint_correct", 1, "positive"),
          _j("hint_correct", 2, "positive"), _j("hint_wrong", 0, "negative"), _j("hint_wrong", 1, "negative")]
    (p,) = build_pairs(PID, 1, js, CODE).pairs
    assert (p.chosen.index, p.rejected.index) == (1, 0)
    two = build_pairs(PID, 1, js, PairRules(max_hint=2)).pairs
    assert [(p.chosen.index, p.rejected.index) for p in two] == [(1, 0), (2, 1)]


def test_limits_are_options() -> None:
    js = _rep(*["positive", "negative", "unparseable"] * 4) + _hints("positive", "negative")
    assert _types(build_pairs(PID, 1, js, CODE).pairs) == {"best_of_n": 3, "best_of_n_positive2unknown": 1,
                                                           "preamble": 1}
    rules = PairRules(max_best_of_n=4, max_pos_unknown=2, max_hint=0)
    assert _types(build_pairs(PID, 1, js, rules).pairs) == {"best_of_n": 4, "best_of_n_positive2unknown": 2}


def test_disabled_preamble_does_not_become_preamble2unknown() -> None:
    rules = PairRules(pair_types=("best_of_n", "best_of_n_positive2unknown", "preamble2unknown"))
    out = build_pairs(PID, 1, _hints("positive", "negative"), rules)
    assert out.pairs == [] and out.lost_reason == "types_disabled"
    assert out.dropped == {"types_disabled": 1}


def test_no_judgments_is_skipped_at_sampling() -> None:
    out = build_pairs(PID, 1, [], CODE)
    assert out.pairs == [] and out.lost_reason == "skipped_at_sampling" and out.profile == "no_repeated"


def test_shuffle_is_seeded_per_pair_and_independent_of_input_order() -> None:
    js = _rep(*["positive"] * 6 + ["negative"] * 6)
    ids = [(p.chosen.judgment_id, p.rejected.judgment_id) for p in build_pairs(PID, 1, js, CODE).pairs]
    shuffled = js[:]
    random.Random(3).shuffle(shuffled)
    assert [(p.chosen.judgment_id, p.rejected.judgment_id)
            for p in build_pairs(PID, 1, shuffled, CODE).pairs] == ids
    other_seeds = {tuple((p.chosen.judgment_id, p.rejected.judgment_id)
                         for p in build_pairs(PID, 1, js, PairRules(seed=s)).pairs) for s in range(8)}
    assert len(other_seeds) > 1


def test_dedup_removes_identical_texts_before_pairing() -> None:
    js = [_j("repeated", i, "positive", text="same verdict 1") for i in range(3)]
    js += [_j("repeated", 3, "negative"), _j("repeated", 4, "negative")]
    out = build_pairs(PID, 1, js, PairRules(dedup_texts=True))
    assert _types(out.pairs) == {"best_of_n": 1} and out.duplicates == 2
    assert out.pairs[0].chosen.index == 0
    # The code preset is the released algorithm: identical texts are paired like any others.
    assert _types(build_pairs(PID, 1, js, CODE).pairs) == {"best_of_n": 2}


def test_pairs_with_identical_texts_are_dropped() -> None:
    js = [_j("hint_correct", 0, "positive", text="X"), _j("hint_wrong", 0, "negative", text="X")]
    out = build_pairs(PID, 1, js, PairRules(drop_identical=True))
    assert out.pairs == [] and out.dropped == {"identical_texts": 1} and out.lost_reason == "identical_texts"
    assert len(build_pairs(PID, 1, js, CODE).pairs) == 1  # the code preset keeps it, as the original


def test_rules_validate() -> None:
    with pytest.raises(ConjError, match="preset"):
        PairRules(preset="both").validate()
    with pytest.raises(ConjError, match="max_hint"):
        PairRules(max_hint=-1).validate()
    with pytest.raises(ConjError, match="unknown pair type"):
        PairRules(pair_types=("best_of_8",)).validate()


# --- classification and the length rule ---------------------------------------------------------


def _record(text: str, kind: str = "hint_correct", finish: str = "stop") -> dict:
    return {"judgment_id": f"{PID}:{kind}:0", "kind": kind, "index": 0, "text": text, "finish_reason": finish}


def test_classification_with_strict_parser_and_truncation_reason() -> None:
    right = classify_judgment(_record('{"原因": "好", "更好的回答": 2}', "repeated"), 2)
    wrong = classify_judgment(_record('{"原因": "好", "更好的回答": 1}', "repeated"), 2)
    cut = classify_judgment(_record('{"原因": "回答1的推理', "repeated", "length"), 2)
    free = classify_judgment(_record("我认为回答2更好", "repeated"), 2)
    assert (right.category, wrong.category, cut.category, free.category) == (
        "positive", "negative", "unparseable", "unparseable")
    assert cut.reason == "truncated" and free.reason == "no_json" and right.reason is None
    # A verdict found in a truncated output still counts.
    assert classify_judgment(_record('"更好的回答": 2 and then', "repeated", "length"), 2).category == "positive"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_length_rule_cuts_long_rationale_at_last_period(tokenizer) -> None:
    rationale = "回答1的计算是错误的，回答2给出了正确的结果。" * 40 + "因此回答2更好"
    text = json.dumps({"原因": rationale, "更好的回答": 2}, ensure_ascii=False)
    j = classify_judgment(_record(text), 2, tokenizer=tokenizer, length_rule=LengthRule())
    assert j.length_rule == CUT and j.category == "positive"
    obj = json.loads(j.text)
    cut = obj["原因"]
    assert obj["更好的回答"] == 2 and list(obj) == ["原因", "更好的回答"]
    assert rationale.startswith(cut) and rationale[len(cut)] == "。"  # cut before the last period
    assert len(tokenizer.encode(cut, add_special_tokens=False)) <= 400 < len(
        tokenizer.encode(rationale, add_special_tokens=False))
    kept, _ = apply_length_rule(text, tokenizer, LengthRule(cut_keep_period=True))
    assert json.loads(kept)["原因"] == cut + "。"


def test_length_rule_without_period_forces_negative(tokenizer) -> None:
    rationale = "回答2更好，因为它更完整，" * 60
    text = json.dumps({"原因": rationale, "更好的回答": 2}, ensure_ascii=False)
    j = classify_judgment(_record(text), 2, tokenizer=tokenizer, length_rule=LengthRule())
    assert j.length_rule == FORCED_NEGATIVE and j.category == "negative" and j.verdict == 2
    assert j.text == tokenizer.decode(tokenizer.encode(rationale, add_special_tokens=False)[:512])
    assert rationale.startswith(j.text) and len(j.text) < len(rationale)


def test_length_rule_skips_short_non_json_and_repeated_outputs(tokenizer) -> None:
    rule = LengthRule()
    short = json.dumps({"原因": "回答2更好" * 50, "更好的回答": 2}, ensure_ascii=False)
    assert len(short) <= 600 and apply_length_rule(short, tokenizer, rule) == (short, None)
    wrapped = '{"原因":"' + "回答2\n更好，" * 200 + '","更好的回答": 2}'  # raw newlines: not JSON
    assert apply_length_rule(wrapped, tokenizer, rule) == (wrapped, None)
    long_text = json.dumps({"原因": "回答2更好，" * 300, "更好的回答": 2}, ensure_ascii=False)
    rep = classify_judgment(_record(long_text, "repeated"), 2, tokenizer=tokenizer, length_rule=rule)
    assert rep.text == long_text and rep.length_rule is None
    assert apply_length_rule(long_text, tokenizer, LengthRule(length_rule=False)) == (long_text, None)


def test_length_rule_reads_only_the_sampling_templates_rationale_key(tokenizer) -> None:
    # Under Con-J's template the original reads only "原因" (docs/method.md#length-rule): a long hint output holding
    # its rationale under "reason" stays as written, positive (it turned negative before: issue 27).
    english = json.dumps({"reason": "Answer 2 is better, it is complete, " * 100, "更好的回答": 2})
    j = classify_judgment(_record(english), 2, tokenizer=tokenizer, length_rule=LengthRule())
    assert (j.length_rule, j.category, j.text) == (None, "positive", english)
    # Sampled with the English template, "reason" is the key the rule reads (no period: negative).
    en = classify_judgment(_record(english), 2, tokenizer=tokenizer, length_rule=LengthRule(), rationale_key="reason")
    assert (en.length_rule, en.category) == (FORCED_NEGATIVE, "negative")
    assert apply_length_rule(english, tokenizer, LengthRule(), "reason")[1] == FORCED_NEGATIVE


def test_batched_classification_equals_one_at_a_time(tokenizer) -> None:
    from conj_train.filter.rules import classify_judgments

    cut = json.dumps({"原因": "回答1是错的，回答2是对的。" * 60 + "所以", "更好的回答": 2}, ensure_ascii=False)
    forced = json.dumps({"原因": "回答2更好，" * 200, "更好的回答": 2}, ensure_ascii=False)
    checked = json.dumps({"原因": "回答2更好。" * 110, "更好的回答": 1}, ensure_ascii=False)
    records = [_record(cut), _record('{"原因": "好", "更好的回答": 2}', "repeated"), _record(forced, "hint_wrong"),
               _record(checked), _record(cut, "repeated"), _record("我认为回答2更好", "hint_wrong")]
    rule = LengthRule()
    batch = classify_judgments([(r, 2) for r in records], tokenizer=tokenizer, length_rule=rule)
    single = [classify_judgment(r, 2, tokenizer=tokenizer, length_rule=rule) for r in records]
    assert batch == single
    assert [j.length_rule for j in batch] == [CUT, None, FORCED_NEGATIVE, "checked", None, None]
    assert batch[3].text == checked
    with pytest.raises(ConjError, match="needs a tokenizer"):
        classify_judgments([(records[0], 2)], length_rule=rule)


# --- balancing and splits ------------------------------------------------------------------------


def _pairs(n1: int, n2: int) -> list[Pair]:
    out = []
    for i in range(n1 + n2):
        label = 1 if i < n1 else 2
        j = _j("repeated", i, "positive")
        out.append(Pair(f"p{i}", "best_of_n", label, j, j._replace(judgment_id=f"r{i}")))
    return out


def test_balance_is_exact_seeded_and_order_independent() -> None:
    pairs = _pairs(10, 4)
    kept, dropped = balance_by_label(pairs, 2021)
    assert Counter(p.label for p in kept) == {1: 4, 2: 4} and len(dropped) == 6
    assert {p.pair_id for p in kept} | {p.pair_id for p in dropped} == {p.pair_id for p in pairs}
    reordered = pairs[::-1]
    assert {p.pair_id for p in balance_by_label(reordered, 2021)[0]} == {p.pair_id for p in kept}
    assert len({frozenset(p.pair_id for p in balance_by_label(pairs, s)[0]) for s in range(10)}) > 1
    assert balance_by_label(_pairs(3, 0), 0) == ([], _pairs(3, 0))
    assert balance_by_label(_pairs(2, 2), 0) == (_pairs(2, 2), [])


def test_split_is_stable_by_pair_id() -> None:
    ids = [f"id-{i}" for i in range(2000)]
    splits = [split_of(i, 0.1) for i in ids]
    assert splits == [split_of(i, 0.1) for i in ids]
    assert 120 < splits.count("validation") < 280
    assert all(split_of(i, 0.0) == "train" for i in ids)
    # A larger share only moves pairs into validation, never out of it.
    assert all(split_of(i, 0.3) == "validation" for i, s in zip(ids, splits, strict=True) if s == "validation")


@pytest.mark.parametrize("text", ["回答1中的计算是错误的，回答2更好。" * 30, "plain English, with <|im_end|> inside.",
                                  "", "emoji 🙂 and full-width １２"])
def test_fast_encode_equals_tokenizer_encode(tiny_model_dir: Path, text: str) -> None:
    from transformers import AutoTokenizer

    from conj_train.tokens import decode_ids, encode_ids, encode_many

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = encode_ids(tok, text)
    assert ids == tok.encode(text, add_special_tokens=False)
    assert decode_ids(tok, ids[:40]) == tok.decode(ids[:40])
    assert encode_many(tok, ["x", text, "回答"]) == [tok.encode(t, add_special_tokens=False) for t in ["x", text, "回答"]]


