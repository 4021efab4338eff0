"""Structured decoding (opt-in at evaluation): the judgment pattern, and which engine enforces it.

The pattern is checked against the verdict parser: every continuation it accepts makes a judgment the
parser reads, and what it refuses is what makes unparseable or wrong judgments. The hf engine enforces
it with llguidance (here); real vLLM in tests/test_vllm_real.py; the fake vLLM and the openai engine
tests check what is sent.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from conj_train.engines.base import GenerationRequest, SamplingParams
from conj_train.errors import ConjError
from conj_train.inference.judge import Judge
from conj_train.inference.structured_decoding import judgment_regex
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


@pytest.mark.parametrize("greedy", [True, False])
def test_hf_engine_keeps_every_token_inside_the_pattern(tiny_model_dir: Path, greedy: bool) -> None:
    """A random model left alone writes anything; constrained, it can only write '1}' or '2}', then stop."""
    from conj_train.engines.hf import HFEngine

    engine = HFEngine(str(tiny_model_dir), threads=1)
    req = GenerationRequest(key="0", prompt="<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
                            seeds=[1, 2, 3, 4], prefill=' {"better_answer": ')
    params = SamplingParams(greedy=greedy, temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
                            max_new_tokens=6)
    free = engine.generate([req], params)
    constrained = engine.generate([req], dataclasses.replace(params, regex=r"[12]\}"))
    assert not all(g.text in ("1}", "2}") for g in free)
    assert all(g.text in ("1}", "2}") and g.finish_reason == "stop" for g in constrained), constrained


def test_constrained_smollm2_judgments_parse_when_finished(real_model_dir: Path) -> None:
    from conj_train.engines.hf import HFEngine

    engine = HFEngine(str(real_model_dir), dtype="float32", threads=1)
    judge = Judge(engine, engine.tokenizer, template="conj-en", max_new_tokens=96, structured=True)
    judged = judge.judge_prompts([judge.prompt_text("What is 2 + 2?", "4", "5"),
                          judge.prompt_text("Name a fruit.", "A hammer.", "An apple.")])
    finished = [(j.texts[0], j.verdicts[0]) for j in judged if j.finish_reasons[0] == "stop"]
    assert finished, [j.texts for j in judged]
    for text, verdict in finished:
        assert re.fullmatch(judge.params.regex, text[len(judge.prefill):]) and verdict in (1, 2), text


def test_missing_llguidance_gives_the_install_hint(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from conj_train.engines.hf import HFEngine

    monkeypatch.setitem(sys.modules, "llguidance", None)  # import fails as if not installed
    engine = HFEngine(str(tiny_model_dir), threads=1)
    req = GenerationRequest(key="0", prompt="hi", seeds=[1])
    with pytest.raises(ConjError, match=r"conj-train\[structured\]"):
        engine.generate([req], SamplingParams(greedy=True, max_new_tokens=2, regex="[12]"))


def test_sampling_training_judgments_is_never_constrained() -> None:
    """Unparseable judgments are a Con-J negative: the sampling stage has no such setting at all."""
    import dataclasses as dc

    from conj_train.sample.config import SampleConfig

    assert not {f.name for f in dc.fields(SampleConfig)} & {"structured_output", "structured", "regex"}
    cfg = SampleConfig()
    assert cfg.repeated_params().regex is None and cfg.hint_params().regex is None
