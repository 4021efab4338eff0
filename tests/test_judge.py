"""The `Judge` API and verdict probabilities on the tiny model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from conj_train.engines.base import Generation, GenerationRequest, SamplingParams
from conj_train.errors import ConjError
from conj_train.inference.judge import Judge, Judgment
from conj_train.inference.probability import VerdictScorer, transfer_prefill
from conj_train.prompts.chat import render_chat
from conj_train.verdicts.position import verdict_position

VERDICT_1 = ' {"原因": "回答1更好", "更好的回答": 1}'




def test_the_embeddable_apis_import_from_the_package_root() -> None:
    import conj_train
    from conj_train.inference.judge_reward import JudgeReward
    from conj_train.inference.reward_model import RewardModel

    assert (conj_train.Judge, conj_train.RewardModel, conj_train.JudgeReward) == (Judge, RewardModel, JudgeReward)
    with pytest.raises(AttributeError):
        conj_train.NoSuchName  # noqa: B018


@pytest.fixture(scope="module")
def judge(tiny_model_dir: Path) -> Judge:
    return Judge.from_pretrained(str(tiny_model_dir), max_new_tokens=6, threads=1)


class ScriptedEngine:
    """An engine whose 'model' always writes the same judgment; probabilities still come from the real
    tiny model through the scorer. Stands for a trained judge, which the tiny random model is not."""

    name = "scripted"

    def __init__(self, tokenizer: object, text: str) -> None:
        self.tokenizer = tokenizer
        self.text = text

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])  # type: ignore[operator]

    @property
    def max_context(self) -> int:
        return 8192

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        return [
            Generation(r.key, i, s, self.text, "stop", 1, 1) for r in requests for i, s in enumerate(r.seeds)
        ]


def _scripted_judge(real: Judge, text: str, **kw: object) -> Judge:
    return Judge(ScriptedEngine(real.tokenizer, text), real.tokenizer, scorer=real.scorer, **kw)  # type: ignore[arg-type]


def _direct_p1(model: object, tokenizer: object, full_text: str, digit_char_index: int) -> float:
    """P('1') / (P('1') + P('2')) at the digit, from one plain forward pass over the whole text."""
    ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    k = len(tokenizer(full_text[:digit_char_index], add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    one, two = tokenizer.convert_tokens_to_ids(["1", "2"])  # type: ignore[attr-defined]
    assert ids[k] == one  # the digit is its own token
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0, k - 1]  # type: ignore[operator]
    return float(torch.softmax(logits[[one, two]].float(), dim=0)[0])


def test_probability_equals_a_separate_forward_pass(judge: Judge) -> None:
    tok, model = judge.tokenizer, judge.scorer.model
    prompts = [
        render_chat(tok, q) for q in ("short question", "a much longer question " * 7, "问题：哪个更好？")
    ]
    texts = [VERDICT_1, ' {"原因": "both are fine, but", "更好的回答": 1}', VERDICT_1]
    prefixes = [p + t[: verdict_position(t, 1)] for p, t in zip(prompts, texts, strict=True)]
    scorer = VerdictScorer(model, tok, batch_tokens=10_000)  # all three in one left-padded batch
    reads = scorer.read(prefixes)
    for p, t, r in zip(prompts, texts, reads, strict=True):
        assert r is not None and 0 < r.mass <= 1
        assert r.p_first == pytest.approx(
            _direct_p1(model, tok, p + t, len(p) + verdict_position(t, 1)), abs=1e-5
        )
    one_at_a_time = VerdictScorer(model, tok, batch_tokens=1).read(prefixes)
    assert [r.p_first for r in one_at_a_time] == pytest.approx([r.p_first for r in reads], abs=1e-5)


def test_judge_reads_probability_at_the_generated_verdict(judge: Judge) -> None:
    scripted = _scripted_judge(judge, VERDICT_1[len(' {"原因":') :])
    v = scripted.compare("Which is a fruit?", "apple", "hammer")
    assert v.better == 1 and v.rationale == "回答1更好" and v.raw == VERDICT_1
    prompt = render_chat(judge.tokenizer, scripted.prompt_text("Which is a fruit?", "apple", "hammer"))
    expected = _direct_p1(
        judge.scorer.model, judge.tokenizer, prompt + VERDICT_1, len(prompt) + verdict_position(VERDICT_1, 1)
    )
    assert v.probability == pytest.approx(expected, abs=1e-5)


def test_both_orders_flags_a_slot_biased_judge(judge: Judge) -> None:
    scripted = _scripted_judge(judge, VERDICT_1[len(' {"原因":') :])
    v = scripted.compare("Which is a fruit?", "apple", "hammer", both_orders=True)
    assert v.better is None and v.consistent is False and len(v.raw) == 2
    first = scripted.compare("Which is a fruit?", "apple", "hammer").probability
    second = scripted.compare("Which is a fruit?", "hammer", "apple").probability
    assert v.probability == pytest.approx((first + (1 - second)) / 2)


def test_transfer_probe_reads_the_verdict_after_a_forced_rationale(judge: Judge) -> None:
    scripted = _scripted_judge(judge, VERDICT_1[len(' {"原因":') :])
    prompt = scripted.prompt_text("q", "a", "b")
    (j,) = scripted.judge_prompts([prompt], transfer=True)
    forced = render_chat(judge.tokenizer, prompt) + transfer_prefill("回答1更好")
    assert forced.endswith('{"原因": "回答1更好", "更好的回答": ')
    direct = VerdictScorer(judge.scorer.model, judge.tokenizer).read([forced])[0]
    assert j.transfer is not None and j.transfer.p_first == pytest.approx(direct.p_first, abs=1e-6)
    assert j.transfer_verdict == (1 if direct.p_first > 0.5 else 2)


def test_tiny_model_judgments_are_unparseable_and_keep_the_prefill(judge: Judge) -> None:
    v = judge.compare("Name a fruit.", "An apple.", "A hammer.")
    assert isinstance(v.raw, str) and v.raw.startswith(' {"原因":')
    if v.better is None:
        assert v.probability is None
    vs = judge.compare_many(
        [{"question": "q", "answer_1": "a", "answer_2": "b"}, ("q2", "c", "d")], both_orders=True
    )
    assert len(vs) == 2 and all(len(x.raw) == 2 for x in vs)


def test_prefill_option_replaces_the_templates(judge: Judge) -> None:
    key_first = Judge(judge.engine, judge.tokenizer, max_new_tokens=3, prefill=' {"更好的回答":')
    assert key_first.compare("Name a fruit.", "An apple.", "A hammer.").raw.startswith(' {"更好的回答":')
    bare = Judge(judge.engine, judge.tokenizer, max_new_tokens=3, prefill="")
    assert not bare.compare("Name a fruit.", "An apple.", "A hammer.").raw.startswith(' {"原因":')


def test_bad_items_and_settings_are_user_errors(judge: Judge) -> None:
    with pytest.raises(ConjError, match="item 0: missing key 'answer_2'"):
        judge.compare_many([{"question": "q", "answer_1": "a"}])
    with pytest.raises(ConjError, match="greedy"):
        Judge(judge.engine, judge.tokenizer, samples=3)
    with pytest.raises(ConjError, match="decoding"):
        Judge(judge.engine, judge.tokenizer, decoding="beam")


def test_majority_vote_over_samples() -> None:
    j = Judgment(verdicts=[2, None, 2, 1], rationales=["r2", None, "r2b", "r1"])
    assert j.verdict == 2 and j.rationale == "r2"
    assert Judgment(verdicts=[1, 2]).verdict is None


def test_sampled_judge_draws_one_text_per_seed(tiny_model_dir: Path, judge: Judge) -> None:
    sampled = Judge(judge.engine, judge.tokenizer, decoding="sample", samples=3, max_new_tokens=4)
    (j,) = sampled.judge_prompts(["Name a fruit."])
    assert len(j.texts) == len(set(j.seeds)) == 3


def test_reads_recorded_while_generating_equal_the_forwards_reads(judge: Judge,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The hf engine records the digits' log-probabilities as it generates them; the judge reads the
    verdict from there, and the read equals a second forward's over the same prefix."""
    import dataclasses

    engine = judge.engine
    # A judgment forced to its verdict: the random model writes ' ' + digit (or one merged token) + '}'.
    sampled = Judge(engine, judge.tokenizer, scorer=judge.scorer, prefill=' {"原因": "x", "更好的回答":',
                    decoding="sample", samples=6, temperature=1.0, top_p=1.0, max_new_tokens=4)
    sampled.params = dataclasses.replace(sampled.params, regex=r" ?[12]\}")
    assert judge.scorer.digit_token_ids() != () and engine.watch_token_ids == ()  # set only while generating
    forwards: list[str] = []
    real_read = VerdictScorer.read

    def counting_read(self: VerdictScorer, prefixes: Sequence[str], digits: object = None) -> list:
        forwards.extend(prefixes)
        return real_read(self, prefixes, digits)  # type: ignore[arg-type]

    monkeypatch.setattr(VerdictScorer, "read", counting_read)
    prompts = ["Which is a fruit?", "问题：哪个更好？ " * 5]
    judged = sampled.judge_prompts(prompts)
    prefixes = [render_chat(judge.tokenizer, p) + t[: verdict_position(t, v)]
                for p, j in zip(prompts, judged, strict=True) for t, v in zip(j.texts, j.verdicts, strict=True)]
    assert all(v in (1, 2) for j in judged for v in j.verdicts), [j.texts for j in judged]
    assert forwards == []  # every read came from the decode loop
    by_forward = real_read(judge.scorer, prefixes)
    recorded = [r for j in judged for r in j.reads]
    for got, want in zip(recorded, by_forward, strict=True):
        assert got is not None and want is not None
        assert got.p_first == pytest.approx(want.p_first, abs=1e-5)
        assert got.mass == pytest.approx(want.mass, rel=1e-4)


def test_a_recorded_read_stands_in_only_for_the_prefixs_own_tokens() -> None:
    from conj_train.inference.probability import generated_read, read_from_logprobs

    extra = {"prompt_token_ids": [5, 6], "token_ids": [7, 11, 3], "watch_token_ids": [11, 12],
             "watched_logprobs": [[-1.0, -2.0], [-0.5, -3.0], [-9.0, -9.0]]}
    # Prefix = prompt + the first generated token; the digits (11 vs 12) were watched at step 1.
    assert generated_read(extra, ([5, 6, 7], 11, 12)) == read_from_logprobs(-0.5, -3.0)
    assert generated_read(extra, ([5, 6, 8], 11, 12)) is None  # generated ids differ from the prefix's
    assert generated_read(extra, ([5, 9, 7], 11, 12)) is None  # the prompt differs
    assert generated_read(extra, ([5, 6, 7], 11, 13)) is None  # a digit that was not watched
    assert generated_read(extra, ([5, 6, 7, 11, 3], 11, 12)) is None  # past the last generated position
    assert generated_read(extra, ([5], 11, 12)) is None  # inside the prompt
