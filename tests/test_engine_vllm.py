"""The vLLM engine adapter, run against the fake ``vllm`` package in tests/fake_vllm (vLLM needs CUDA)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conj_train.engines.base import GenerationRequest, SamplingParams
from conj_train.engines.vllm import INSTALL_HINT, VLLMEngine, devices_for_rank, pin_local_devices
from conj_train.errors import ConjError

FAKE_ROOT = Path(__file__).resolve().parent / "fake_vllm"
SAMPLING = SamplingParams(max_new_tokens=64)


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The fake package as ``vllm``, for this test only."""
    for var in ("LOCAL_WORLD_SIZE", "LOCAL_RANK", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.syspath_prepend(str(FAKE_ROOT))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    monkeypatch.delitem(sys.modules, "vllm.sampling_params", raising=False)
    module = importlib.import_module("vllm")
    assert module.__version__.endswith("+fake")
    monkeypatch.setitem(sys.modules, "vllm", module)  # undone after the test: the fake never leaks
    # The engine imports the submodule by name (structured outputs): the fake's, also undone after.
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", importlib.import_module("vllm.sampling_params"))
    return module


@pytest.fixture
def make_engine(fake_vllm: ModuleType, tiny_model_dir: Path):
    def make(**kwargs: Any) -> VLLMEngine:
        return VLLMEngine(str(tiny_model_dir), **kwargs)

    return make


def _llm(engine: VLLMEngine) -> Any:
    return engine._llm


def _requests() -> list[GenerationRequest]:
    return [
        GenerationRequest(key="p1", prompt="Which answer is better? Answer 1:", seeds=[11, 12, 13]),
        GenerationRequest(key="p2", prompt="问题：法国的首都是哪里？", seeds=[21], prefill=' {"原因":'),
    ]


def test_missing_vllm_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConjError) as err:
        VLLMEngine("Qwen/Qwen2-7B-Instruct")
    assert str(err.value) == INSTALL_HINT
    assert "pip install 'conj-train[vllm]'" in str(err.value)


def test_broken_vllm_import_names_its_cause(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text("import conj_missing_cuda_runtime_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "vllm", raising=False)
    with pytest.raises(ConjError, match=r"installed but failed to import.*conj_missing_cuda_runtime_xyz"):
        VLLMEngine("unused")


def test_engine_args_reach_vllm(make_engine) -> None:
    engine = make_engine(seed=7, max_model_len=512, llm_kwargs={"enforce_eager": True})
    sent = _llm(engine).init_kwargs
    assert sent["seed"] == 7
    assert sent["enable_prefix_caching"] is True
    assert sent["tensor_parallel_size"] == 1
    assert sent["enforce_eager"] is True
    assert engine.name == "vllm"


def test_llm_kwargs_may_not_repeat_named_arguments(make_engine) -> None:
    with pytest.raises(ConjError, match="seed"):
        make_engine(llm_kwargs={"seed": 3})


def test_each_sample_is_its_own_request_with_its_own_seed(make_engine) -> None:
    engine = make_engine()
    engine.generate(_requests(), SAMPLING)
    (call,) = _llm(engine).calls
    assert [p.seed for p in call["params"]] == [11, 12, 13, 21]
    assert all(p.n == 1 for p in call["params"])
    p1_prompts = [p["prompt_token_ids"] for p in call["prompts"][:3]]
    assert p1_prompts[0] == p1_prompts[1] == p1_prompts[2]  # token-identical: prefix caching applies
    assert call["use_tqdm"] is False


def test_prompt_is_text_plus_prefill_without_added_special_tokens(make_engine) -> None:
    engine = make_engine()
    req = _requests()[1]
    (gen,) = engine.generate([req], SAMPLING)
    tokenizer = _llm(engine).get_tokenizer()
    expected = tokenizer.encode(req.prompt + req.prefill, add_special_tokens=False)
    assert _llm(engine).calls[0]["prompts"][0]["prompt_token_ids"] == expected
    assert gen.prompt_tokens == len(expected) == engine.count_tokens(req.prompt + req.prefill)
    assert gen.prompt_tokens > engine.count_tokens(req.prompt)


def test_outputs_follow_request_order_with_keys_indices_and_seeds(make_engine) -> None:
    gens = make_engine().generate(_requests(), SAMPLING)
    assert [(g.key, g.index, g.seed) for g in gens] == [
        ("p1", 0, 11),
        ("p1", 1, 12),
        ("p1", 2, 13),
        ("p2", 0, 21),
    ]
    assert len({g.text for g in gens[:3]}) == 3  # different seeds gave different samples


@pytest.mark.parametrize(("max_new_tokens", "reason"), [(2, "length"), (64, "stop")])
def test_finish_reason_and_token_counts_come_from_vllm(make_engine, max_new_tokens: int, reason: str) -> None:
    engine = make_engine()
    gens = engine.generate(_requests(), SamplingParams(max_new_tokens=max_new_tokens))
    outs = [o.outputs[0] for o in _llm(engine).calls[0]["outputs"]]
    assert [g.finish_reason for g in gens] == [reason] * 4
    assert [g.completion_tokens for g in gens] == [len(o.token_ids) for o in outs]
    assert [g.text for g in gens] == [o.text for o in outs]
    if reason == "length":
        assert all(g.completion_tokens == 2 for g in gens)
    assert engine.raw_finish_reasons == {reason: 4}


def test_abnormal_finish_is_recorded_as_length_and_counted(
    make_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine()
    llm = _llm(engine)
    real_generate = llm.generate

    def aborting_generate(*args: Any, **kwargs: Any) -> list[Any]:
        outputs = real_generate(*args, **kwargs)
        outputs[1].outputs[0].finish_reason = "abort"
        return outputs

    monkeypatch.setattr(llm, "generate", aborting_generate)
    gens = engine.generate(_requests(), SAMPLING)
    assert gens[1].finish_reason == "length"
    assert gens[1].extra == {"vllm_finish_reason": "abort"}
    assert gens[0].extra == {}
    assert engine.raw_finish_reasons == {"stop": 3, "abort": 1}


def test_greedy_sends_temperature_zero_once_per_prompt(make_engine) -> None:
    engine = make_engine()
    gens = engine.generate(_requests(), dataclasses.replace(SAMPLING, greedy=True))
    (call,) = _llm(engine).calls
    assert [p.temperature for p in call["params"]] == [0.0, 0.0]  # one vLLM request per prompt
    assert [(g.key, g.index, g.seed) for g in gens] == [
        ("p1", 0, 11),
        ("p1", 1, 12),
        ("p1", 2, 13),
        ("p2", 0, 21),
    ]
    outs = [o.outputs[0] for o in call["outputs"]]
    assert [g.text for g in gens] == [outs[0].text] * 3 + [outs[1].text]
    assert engine.raw_finish_reasons.total() == 4


@pytest.mark.parametrize(("top_k", "sent"), [(50, 50), (1, 1), (0, -1)])
def test_top_k_off_is_sent_as_minus_one(make_engine, top_k: int, sent: int) -> None:
    engine = make_engine()
    engine.generate(_requests()[1:], dataclasses.replace(SAMPLING, top_k=top_k))
    assert _llm(engine).calls[0]["params"][0].top_k == sent


def test_sampling_settings_are_passed_through(make_engine) -> None:
    engine = make_engine()
    engine.generate(
        _requests()[1:], SamplingParams(temperature=0.7, top_p=0.9, repetition_penalty=1.1, max_new_tokens=33)
    )
    (p,) = _llm(engine).calls[0]["params"]
    assert (p.temperature, p.top_p, p.repetition_penalty, p.max_tokens) == (0.7, 0.9, 1.1, 33)


@pytest.mark.parametrize(
    ("change", "word"),
    [
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"max_new_tokens": 0}, "max_new_tokens must be >= 1"),
        ({"temperature": -1.0}, "temperature must be > 0"),
        ({"top_k": -1}, "top_k must be >= 0"),
        # Accepted by the shared checks, rejected by vLLM's own SamplingParams (recent versions).
        ({"temperature": 2.5}, r"invalid sampling settings for vLLM: temperature must be in \[0, 2\]"),
    ],
)
def test_bad_sampling_settings_raise_conj_error_before_any_work(make_engine, change: dict, word: str) -> None:
    engine = make_engine()
    with pytest.raises(ConjError, match=word):
        engine.generate(_requests(), dataclasses.replace(SAMPLING, **change))
    assert _llm(engine).calls == []


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5])
def test_bad_seed_is_rejected_naming_the_request(make_engine, seed: Any) -> None:
    req = GenerationRequest(key="bad-pair", prompt="hello", seeds=[1, seed])
    engine = make_engine()
    with pytest.raises(ConjError, match="bad-pair: seed 1"):
        engine.generate([_requests()[0], req], SAMPLING)
    assert _llm(engine).calls == []  # checked before the first chunk runs


def test_same_seeds_reproduce_across_engines(make_engine) -> None:
    first = make_engine(seed=1).generate(_requests(), SAMPLING)
    second = make_engine(seed=2).generate(_requests(), SAMPLING)
    assert [g.text for g in first] == [g.text for g in second]
    reseeded = [dataclasses.replace(r, seeds=[s + 100 for s in r.seeds]) for r in _requests()]
    third = make_engine(seed=1).generate(reseeded, SAMPLING)
    assert [g.text for g in third] != [g.text for g in first]


def test_generate_iter_yields_chunks_in_order(make_engine) -> None:
    requests = [
        GenerationRequest(key=f"k{i}", prompt=f"prompt number {i}", seeds=[i, i + 50]) for i in range(5)
    ]
    engine = make_engine()
    chunks = list(engine.generate_iter(requests, SAMPLING, chunk_size=2))
    assert [[g.key for g in c] for c in chunks] == [
        ["k0", "k0", "k1", "k1"],
        ["k2", "k2", "k3", "k3"],
        ["k4", "k4"],
    ]
    assert len(_llm(engine).calls) == 3
    whole = make_engine().generate(requests, SAMPLING)
    assert [g.text for c in chunks for g in c] == [g.text for g in whole]


def test_generate_iter_rejects_bad_chunk_size(make_engine) -> None:
    with pytest.raises(ConjError, match="chunk_size"):
        next(make_engine().generate_iter(_requests(), SAMPLING, chunk_size=0))


def test_empty_request_list_runs_nothing(make_engine) -> None:
    engine = make_engine()
    assert engine.generate([], SAMPLING) == []
    assert _llm(engine).calls == []


def test_count_tokens_uses_the_engine_tokenizer(make_engine) -> None:
    engine = make_engine()
    text = "<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n"
    ids = _llm(engine).get_tokenizer()(text, add_special_tokens=False)["input_ids"]
    assert engine.count_tokens(text) == len(ids)
    assert engine.count_tokens(text) < len(text)


def test_max_context_reads_the_engine_config_then_falls_back(make_engine) -> None:
    engine = make_engine(max_model_len=300)
    assert engine.max_context == 300
    default = make_engine()
    assert default.max_context == 8192  # the tiny model's max_position_embeddings
    del engine._llm.llm_engine, engine._llm.model_config
    assert engine.max_context == 300  # the constructor's value
    del default._llm.llm_engine, default._llm.model_config
    assert default.max_context == default._llm.get_tokenizer().model_max_length


def test_prompt_too_long_for_the_context_names_the_request(make_engine) -> None:
    engine = make_engine(max_model_len=16)
    long = GenerationRequest(
        key="long-pair", prompt="The quick brown fox jumps over the lazy dog. " * 10, seeds=[0]
    )
    with pytest.raises(ConjError, match=r"long-pair: \d+ prompt tokens \+ 64 new tokens exceed .* 16"):
        engine.generate([long], SAMPLING)


def test_prompt_must_leave_room_for_max_new_tokens(make_engine) -> None:
    req = _requests()[1]
    engine = make_engine(max_model_len=64)
    n_prompt = engine.count_tokens(req.prompt + req.prefill)
    (gen,) = engine.generate([req], SamplingParams(max_new_tokens=64 - n_prompt))
    assert gen.prompt_tokens == n_prompt
    with pytest.raises(ConjError, match="exceed"):
        engine.generate([req], SamplingParams(max_new_tokens=65 - n_prompt))


def test_empty_prompt_is_rejected(make_engine) -> None:
    with pytest.raises(ConjError, match="empty-pair: empty prompt"):
        make_engine().generate([GenerationRequest(key="empty-pair", prompt="", seeds=[1])], SAMPLING)


def test_requests_without_seeds_produce_nothing(make_engine) -> None:
    reqs = [GenerationRequest(key="none", prompt="hello", seeds=[]), _requests()[1]]
    gens = make_engine().generate(reqs, SAMPLING)
    assert [(g.key, g.seed) for g in gens] == [("p2", 21)]


def test_devices_for_rank_splits_visible_gpus_into_groups() -> None:
    assert devices_for_rank(0, 1, "0,1,2,3") == "0"
    assert devices_for_rank(3, 1, "0,1,2,3") == "3"
    assert devices_for_rank(1, 2, "4,5,6,7") == "6,7"
    with pytest.raises(ConjError, match="only 4 are visible"):
        devices_for_rank(2, 2, "0,1,2,3")


def test_pin_local_devices_narrows_each_process_once() -> None:
    env = {"LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    assert pin_local_devices(2, env) == "2,3"
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert pin_local_devices(2, env) is None  # already narrowed
    assert pin_local_devices(1, {"CUDA_VISIBLE_DEVICES": "0,1"}) is None  # single process


def test_engine_refuses_local_processes_sharing_gpus(make_engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ConjError, match="CUDA_VISIBLE_DEVICES=1 for LOCAL_RANK=1"):
        make_engine()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert make_engine().name == "vllm"


def test_sampling_stage_runs_on_the_adapter(make_engine, tiny_model_dir: Path, tmp_path: Path) -> None:
    from conj_train.io import iter_jsonl
    from conj_train.sample.run import SampleConfig, run_sample

    data = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": f"Question {i}: name a fruit.", "chosen": "An apple.", "rejected": "A hammer."}
        for i in range(3)
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = SampleConfig(
        model_name_or_path=str(tiny_model_dir),
        dataset_name=str(data),
        output_dir=str(tmp_path / "out"),
        engine="vllm",
        n=2,
        hint_samples=1,
        max_new_tokens=16,
        progress=False,
    )
    cfg.validate()
    engine = make_engine()
    run_sample(cfg, engine=engine)
    records = [r for p in (tmp_path / "out" / "judgments").glob("*.jsonl") for r in iter_jsonl(p)]
    sent = sorted(p.seed for call in _llm(engine).calls for p in call["params"])
    assert sorted(r["seed"] for r in records) == sent
    assert len(sent) == len(set(sent)) == 3 * (2 + 2)  # n=2 repeated + one per hint direction
    assert {r["finish_reason"] for r in records} <= {"stop", "length"}


def test_token_logprobs_sends_one_greedy_token_per_prompt_asking_for_the_wanted_ids(make_engine) -> None:
    engine = make_engine()
    prompts = [engine._encode("Which is better? Answer"), engine._encode("问题：回答")]
    wanted = [(engine._encode("1")[0], engine._encode("2")[0])] * 2
    got = engine.token_logprobs(prompts, wanted)
    (call,) = _llm(engine).calls
    assert [p["prompt_token_ids"] for p in call["prompts"]] == prompts
    assert all(sp.max_tokens == 1 and sp.temperature == 0.0 for sp in call["params"])
    assert [sp.logprob_token_ids for sp in call["params"]] == [list(w) for w in wanted]
    assert all(lp < 0 for row in got for lp in row)
    assert got[0] != got[1]  # read at each prompt's own end
    assert engine.token_logprobs(prompts, wanted) == got


def test_token_logprobs_without_logprob_token_ids_names_the_vllm_version(make_engine, monkeypatch) -> None:
    engine = make_engine()
    real = engine._vllm.SamplingParams

    def old_sampling_params(*, logprob_token_ids=None, **kwargs):
        if logprob_token_ids is not None:
            raise TypeError("unexpected keyword argument 'logprob_token_ids'")
        return real(**kwargs)

    monkeypatch.setattr(engine._vllm, "SamplingParams", old_sampling_params)
    with pytest.raises(ConjError, match=r"logprob_token_ids.*vLLM >= 0\.32.*0\.0\.0\+fake"):
        engine.token_logprobs([[1, 2]], [(3, 4)])


def test_engine_verdict_scorer_turns_two_logprobs_into_a_read(make_engine) -> None:
    import math

    from conj_train.inference.probability import EngineVerdictScorer

    engine = make_engine()
    scorer = EngineVerdictScorer(engine, engine._tokenizer)
    prefix = 'Q <|im_start|>assistant\n {"原因": "x", "更好的回答": '
    (read,) = scorer.read([prefix])
    ids, tok_a, tok_b = scorer.encode(prefix)
    (la, lb), = engine.token_logprobs([ids], [(tok_a, tok_b)])
    assert read is not None
    assert read.p_first == pytest.approx(math.exp(la) / (math.exp(la) + math.exp(lb)), rel=1e-12)
    assert read.mass == pytest.approx(math.exp(la) + math.exp(lb), rel=1e-12) and 0 < read.mass < 1
    assert scorer.read([]) == []


def test_judge_on_vllm_reads_verdicts_and_runs_the_transfer_probe(fake_vllm, tiny_model_dir: Path) -> None:
    from conj_train.inference.judge import Judge

    judge = Judge.from_pretrained(str(tiny_model_dir), "vllm", max_new_tokens=8)
    assert judge.scorer is not None
    (read,) = judge.transfer(["Question: name a fruit."], ["Answer 1 names a fruit."])
    assert read is not None and 0 < read.p_first < 1
    assert Judge.from_pretrained(str(tiny_model_dir), "vllm", probability=False).scorer is None


def test_pin_local_devices_leaves_a_machine_without_gpus_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    # Found by `accelerate launch` on vLLM's CPU build: pinning must not demand GPUs that do not exist.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    env = {"LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert pin_local_devices(1, env) is None
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_structured_decoding_sends_vllms_structured_outputs_regex(make_engine) -> None:
    engine = make_engine()
    pattern = r' ?"[^"]*" ?, ?"better_answer" ?: ?[12] ?\}'
    engine.generate(_requests(), dataclasses.replace(SAMPLING, greedy=True, regex=pattern))
    engine.generate(_requests(), dataclasses.replace(SAMPLING, greedy=True))
    constrained, plain = _llm(engine).calls
    assert [p.structured_outputs.regex for p in constrained["params"]] == [pattern, pattern]
    assert [p.structured_outputs for p in plain["params"]] == [None, None]
