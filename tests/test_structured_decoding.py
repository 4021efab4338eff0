"""Structured decoding (opt-in at evaluation): the judgment pattern, and which engine enforces it.

The pattern is checked against the verdict parser: every continuation it accepts makes a judgment the
parser reads, and what it refuses is what makes unparseable or wrong judgments. Enforcement by real
vLLM is checked in tests/test_vllm_real.py; the fake vLLM and the openai engine tests check what is sent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conj_train.engines.base import GenerationRequest, SamplingParams
from conj_train.errors import ConjError
from conj_train.judge import Judge
from conj_train.structured_decoding import judgment_regex
from conj_train.verdicts import parse_verdict

ZH_PREFILL = ' {"原因":'
GOOD = [
    (ZH_PREFILL, ' "回答1正确。", "更好的回答": 1}'),
    (ZH_PREFILL, '"引号\\"和\\\\反斜杠", "更好的回答": 2}'),
    (ZH_PREFILL, ' "", "更好的回答": 2}'),
    ("", '{"原因": "ok", "更好的回答": 2}'),
    (' {"原', '因": "ok","更好的回答":1}'),
]
BAD = [
    (ZH_PREFILL, ' "ok", "更好的回答": 3}'),  # no such answer
    (ZH_PREFILL, ' "ok", "更好的回答": 1'),  # unclosed
    (ZH_PREFILL, ' "a "quoted" word", "更好的回答": 1}'),  # raw quote ends the string
    (ZH_PREFILL, ' "ok"}'),  # no verdict
    (ZH_PREFILL, ' "ok", "更好的回答": 1} and more'),  # text after the judgment
    (ZH_PREFILL, ' "line\nbreak", "更好的回答": 1}'),  # raw control character in a JSON string
]


@pytest.mark.parametrize(("prefill", "text"), GOOD)
def test_every_accepted_continuation_is_a_judgment_the_parser_reads(prefill: str, text: str) -> None:
    pattern = judgment_regex(prefill=prefill)
    assert re.fullmatch(pattern, text)
    parsed = parse_verdict(prefill + text, "strict")
    assert parsed.verdict == int(text.rstrip("}")[-1])


@pytest.mark.parametrize(("prefill", "text"), BAD)
def test_malformed_continuations_are_refused(prefill: str, text: str) -> None:
    assert not re.fullmatch(judgment_regex(prefill=prefill), text)


def test_the_templates_keys_are_used() -> None:
    pattern = judgment_regex("reason", "better_answer", ' {"reason":')
    assert re.fullmatch(pattern, ' "fine", "better_answer": 2}')
    assert not re.fullmatch(pattern, ' "fine", "更好的回答": 2}')


@pytest.mark.parametrize("prefill", [' {"原因": "已写', ' {"原因": "x", "更好的回答": ', "I think"])
def test_a_prefill_past_the_rationales_start_or_off_the_judgment_is_refused(prefill: str) -> None:
    with pytest.raises(ConjError, match="structured decoding"):
        judgment_regex(prefill=prefill)


def test_judge_constrains_only_when_asked(tiny_model_dir: Path) -> None:
    from conj_train.engines.hf import HFEngine

    engine = HFEngine(str(tiny_model_dir), threads=1)
    assert Judge(engine, engine.tokenizer).params.regex is None
    judge = Judge(engine, engine.tokenizer, structured=True)
    assert judge.params.regex == judgment_regex(prefill=ZH_PREFILL)


def test_hf_engine_refuses_structured_decoding_rather_than_ignoring_it(tiny_model_dir: Path) -> None:
    from conj_train.engines.hf import HFEngine

    engine = HFEngine(str(tiny_model_dir), threads=1)
    req = GenerationRequest(key="0", prompt="hi", seeds=[1], prefill=ZH_PREFILL)
    with pytest.raises(ConjError, match="not offered by the hf engine"):
        engine.generate([req], SamplingParams(greedy=True, max_new_tokens=4, regex=judgment_regex(prefill=ZH_PREFILL)))


def test_eval_refuses_structured_output_on_the_hf_engine() -> None:
    from conj_train.evaluate.config import EvalConfig

    cfg = EvalConfig(model_name_or_path="m", dataset_name="d", output_dir="o", structured_output=True)
    with pytest.raises(ConjError, match="not offered by the hf engine"):
        cfg.validate()
