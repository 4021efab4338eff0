"""The openai engine against a real OpenAI-compatible server on loopback: ``transformers serve``.

``transformers serve`` (transformers' own server, the ``transformers[serving]`` extra in the dev
dependencies) serves the judge's folder on 127.0.0.1; the engine sends the rendered prompt + prefill
to its ``/v1/completions``. Greedy texts and verdicts must equal the in-process hf engine's. That
server returns no log-probabilities, so verdict probabilities are left empty there (never guessed);
tests/test_vllm_real.py::test_vllm_serve_* checks them against ``vllm serve``. A small standard-library
server answers with errors to test the retries (the engine's own logic, not a model).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from servers import free_port, openai_server

from conj_train.engines.base import GenerationRequest, SamplingParams
from conj_train.engines.openai import OpenAIEngine
from conj_train.errors import ConjError
from conj_train.evaluate.run import EvalConfig, run_eval
from conj_train.inference.judge import Judge
from conj_train.io import iter_jsonl
from conj_train.tokens import load_tokenizer
from conj_train.verdicts import parse_verdict

ITEMS = [
    ("What is the capital of France?", "Paris.", "Rome."),
    ("What is 2 + 2?", "5", "4"),
    ("Name a fruit.", "An apple.", "A hammer."),
]
# Gets SmolLM2 to the verdict digit in a few tokens, so the verdicts are real ones.
VERDICT_PREFILL = ' {"reason": "One answer is correct and the other is not.", "better_answer": '


@contextlib.contextmanager
def transformers_serve(model: Path, log_dir: Path) -> Iterator[str]:
    """``transformers serve MODEL`` on 127.0.0.1 (float32, CPU); yields the API root."""
    from transformers.utils.import_utils import is_serve_available

    if not is_serve_available():
        pytest.skip("transformers serve needs transformers[serving] (FastAPI, uvicorn, openai)")
    import transformers
    from packaging.version import Version

    if Version(transformers.__version__) < Version("5.24"):
        # Measured at the floor (5.20.2, `make test-min`): its server answers GET /v1/models with HTTP
        # 500, so no client can list the model; the engine is verified against 5.24's server.
        pytest.skip(f"transformers serve {transformers.__version__} answers /v1/models with HTTP 500")
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model), "--host", "127.0.0.1",
               "--port", str(port), "--device", "cpu", "--dtype", "float32"]
    with openai_server(command, port=port, log=log_dir / "server.log", env=env, name="transformers serve",
                       ready_within_s=300) as url:
        yield url


def test_served_smollm2_judges_with_the_in_process_verdicts(real_model_dir: Path, tmp_path: Path) -> None:
    opts = {"template": "conj-en", "prefill": VERDICT_PREFILL, "max_new_tokens": 8}
    on_hf = Judge.from_pretrained(str(real_model_dir), "hf", dtype="float32", threads=1, **opts)
    with transformers_serve(real_model_dir, tmp_path) as url:
        served = Judge.from_pretrained(str(real_model_dir), "openai", engine_options={"base_url": url}, **opts)
        got = served.compare_many(ITEMS, both_orders=True)
    want = on_hf.compare_many(ITEMS, both_orders=True)
    assert [v.raw for v in got] == [v.raw for v in want]
    assert [v.consistent for v in got] == [v.consistent for v in want]
    # Real verdicts, not unparseable texts compared with each other.
    assert all(parse_verdict(text).verdict in (1, 2) for v in got for text in v.raw)
    # transformers serve returns no log-probabilities: no probability, rather than a guessed one.
    assert all(v.probability is None for v in got)
    assert all(v.probability is not None for v in want if v.consistent)


def _pairs(path: Path) -> Path:
    rows = [{"prompt": q, "chosen": a, "rejected": b} for q, a, b in ITEMS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _eval(model: Path, data: Path, out: Path, **kw: object) -> list[dict]:
    cfg = EvalConfig(model_name_or_path=f"judge={model}", dataset_name=f"toy={data}", output_dir=str(out),
                     max_new_tokens=12, progress=False, threads=1, batch_pairs=2, transfer=False, **kw)
    cfg.validate()
    run_eval(cfg)
    return [r for p in sorted((out / "models" / "judge" / "judgments").glob("*.jsonl")) for r in iter_jsonl(p)]


def test_conj_eval_engine_openai_writes_the_hf_engines_records_and_never_the_key(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-conj-test-0123456789abcdef"
    monkeypatch.setenv("CONJ_TEST_API_KEY", secret)
    data = _pairs(tmp_path / "pairs.jsonl")
    want = _eval(tiny_model_dir, data, tmp_path / "hf", probability=False)
    with transformers_serve(tiny_model_dir, tmp_path) as url:
        got = _eval(tiny_model_dir, data, tmp_path / "openai", probability=False, engine="openai", base_url=url,
                    api_key_env="CONJ_TEST_API_KEY")
    key = ["pair_id", "swapped", "text", "verdict", "finish_reason", "completion_tokens"]
    assert [[r[k] for k in key] for r in got] == [[r[k] for k in key] for r in want]
    assert len(got) == 2 * len(ITEMS)
    written = [p for p in (tmp_path / "openai").rglob("*") if p.is_file()]
    assert written and not any(secret.encode() in p.read_bytes() for p in written)


def test_added_openai_settings_keep_old_config_hashes_unless_used() -> None:
    base = {"model_name_or_path": "m", "dataset_name": "d", "output_dir": "o"}
    plain = EvalConfig(**base).output_hash("m", "judge")
    # Where and how a server is called does not change records: same hash, the run resumes.
    served = EvalConfig(**base, engine="hf", base_url="http://127.0.0.1:1/v1", max_concurrency=2,
                        api_key_env="X").output_hash("m", "judge")
    assert served == plain
    assert EvalConfig(**base, structured_output=True).output_hash("m", "judge") != plain
    assert EvalConfig(**base, served_model_name="other").output_hash("m", "judge") != plain


class _Flaky(http.server.BaseHTTPRequestHandler):
    """Answers ``fail`` 503s (with ``Retry-After: 0``), then one completion; records every body."""

    fail = 2
    bodies: ClassVar[list[dict]] = []
    answer: ClassVar[dict] = {"choices": [{"text": ' "ok", "better_answer": 1}', "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 3, "completion_tokens": 5}}

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).bodies.append({"body": body, "auth": self.headers.get("Authorization")})
        if type(self).fail > 0:
            type(self).fail -= 1
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "busy"}}')
            return
        payload = json.dumps(type(self).answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _flaky_server(fail: int, answer: dict | None = None) -> Iterator[str]:
    _Flaky.fail, _Flaky.bodies = fail, []
    _Flaky.answer = answer or {"choices": [{"text": ' "ok", "better_answer": 1}', "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 3, "completion_tokens": 5}}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _engine(tiny_model_dir: Path, url: str, **kw: object) -> OpenAIEngine:
    tok = load_tokenizer(str(tiny_model_dir))
    kw = {"server": "generic", "max_context": 4096, "backoff": 0.0, **kw}
    return OpenAIEngine(url, "judge", tokenizer=tok, **kw)  # type: ignore[arg-type]


def test_busy_server_is_retried_and_the_key_goes_only_in_the_header(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONJ_TEST_API_KEY", "sk-secret")
    req = GenerationRequest(key="0", prompt="<|im_start|>user\nhi<|im_end|>\n", seeds=[1], prefill=' {"reason":')
    with _flaky_server(fail=2) as url:
        eng = _engine(tiny_model_dir, url, max_retries=2, api_key_env="CONJ_TEST_API_KEY")
        gens = eng.generate([req], SamplingParams(greedy=True, max_new_tokens=8))
    assert gens[0].text == ' "ok", "better_answer": 1}' and gens[0].finish_reason == "stop"
    assert len(_Flaky.bodies) == 3 and all(b["auth"] == "Bearer sk-secret" for b in _Flaky.bodies)
    sent = _Flaky.bodies[-1]["body"]
    # The rendered prompt and the prefill as one completion prompt; greedy is temperature 0.
    assert sent["prompt"] == req.prompt + req.prefill and sent["temperature"] == 0.0
    assert "sk-secret" not in repr(eng) and "sk-secret" not in json.dumps(sent)


def test_a_server_that_stays_busy_stops_the_run_with_its_message(tiny_model_dir: Path) -> None:
    req = GenerationRequest(key="0", prompt="hi", seeds=[1])
    with _flaky_server(fail=10) as url:
        eng = _engine(tiny_model_dir, url, max_retries=1)
        with pytest.raises(ConjError, match="HTTP 503: busy"):
            eng.generate([req], SamplingParams(greedy=True, max_new_tokens=8))
    assert len(_Flaky.bodies) == 2


def test_chat_api_sends_the_prefill_as_a_continued_assistant_turn(tiny_model_dir: Path) -> None:
    messages = [{"role": "user", "content": "Which is better?"}]
    req = GenerationRequest(key="0", prompt="(rendered)", seeds=[5, 6], prefill=' {"reason":', messages=messages)
    with _flaky_server(fail=0) as url:
        eng = _engine(tiny_model_dir, url, api="chat")
        with pytest.raises(ConjError, match="no completion"):  # this server answers in completions' shape
            eng.generate([req], SamplingParams(temperature=0.7, top_p=0.9, top_k=0, repetition_penalty=1.0,
                                                    max_new_tokens=8))
    sent = _Flaky.bodies[0]["body"]
    assert sent["messages"] == [*messages, {"role": "assistant", "content": ' {"reason":'}]
    assert sent["continue_final_message"] is True and sent["add_generation_prompt"] is False
    # Sampling: one request per seed, with its seed; top_k 0 and penalty 1 are not sent (not OpenAI fields).
    assert sorted(b["body"]["seed"] for b in _Flaky.bodies) == [5, 6]
    assert "top_k" not in sent and "repetition_penalty" not in sent


def test_structured_decoding_is_sent_as_vllms_structured_outputs(tiny_model_dir: Path) -> None:
    req = GenerationRequest(key="0", prompt="hi", seeds=[1], prefill=' {"reason":')
    with _flaky_server(fail=0) as url:
        eng = _engine(tiny_model_dir, url)
        eng.generate([req], SamplingParams(greedy=True, max_new_tokens=8, regex="[12]"))
        eng.generate([req], SamplingParams(greedy=True, max_new_tokens=8))
    constrained, plain = (b["body"] for b in _Flaky.bodies)
    assert constrained["structured_outputs"] == {"regex": "[12]"} and "structured_outputs" not in plain


def test_engine_openai_needs_a_base_url(tiny_model_dir: Path) -> None:
    with pytest.raises(ConjError, match="base_url"):
        Judge.from_pretrained(str(tiny_model_dir), "openai")
    with pytest.raises(ConjError, match="base_url"):
        EvalConfig(model_name_or_path="m", dataset_name="d", output_dir="o", engine="openai").validate()


def _logprob_answer(top: dict[str, float]) -> dict:
    return {"choices": [{"text": "1", "finish_reason": "length", "logprobs": {"top_logprobs": [top]}}]}


def test_a_vllm_server_is_asked_for_the_digits_and_read_by_token_id(tiny_model_dir: Path) -> None:
    """The [vllm] floor (0.32, logprob_token_ids) binds the in-process engine only: a served judge on any
    vLLM is read from its top log-probabilities keyed by token id, exactly when the digits are there."""
    tok = load_tokenizer(str(tiny_model_dir))
    one, two = (tok("1", add_special_tokens=False)["input_ids"][0], tok("2", add_special_tokens=False)["input_ids"][0])
    with _flaky_server(fail=0, answer=_logprob_answer({f"token_id:{one}": -0.25, f"token_id:{two}": -1.5})) as url:
        eng = _engine(tiny_model_dir, url, server="vllm")
        (read,) = eng.token_logprobs([[5, 6, 7]], [[one, two]])
    assert read == [-0.25, -1.5]
    sent = _Flaky.bodies[0]["body"]
    assert sent["logprob_token_ids"] == [one, two] and sent["return_tokens_as_token_ids"] is True
    assert sent["max_tokens"] == 1 and sent["temperature"] == 0.0 and sent["logprobs"] >= 2
    # An older vLLM ignores logprob_token_ids: a digit outside its top log-probabilities gives no read.
    with _flaky_server(fail=0, answer=_logprob_answer({f"token_id:{one}": -0.25})) as url:
        assert _engine(tiny_model_dir, url, server="vllm").token_logprobs([[5, 6, 7]], [[one, two]]) == [None]


def test_a_server_without_log_probabilities_gives_no_probability(tiny_model_dir: Path) -> None:
    from conj_train.inference.probability import EngineVerdictScorer

    tok = load_tokenizer(str(tiny_model_dir))
    with _flaky_server(fail=0) as url:  # answers without logprobs, as transformers serve does
        reads = EngineVerdictScorer(_engine(tiny_model_dir, url), tok).read([' {"reason": "x", "better_answer": '])
    assert reads == [None]
    assert "logprob_token_ids" not in _Flaky.bodies[0]["body"]  # a generic server gets only OpenAI fields


def test_the_vllm_extra_floor_is_the_first_with_logprob_token_ids_and_outside_trls_vllm_range() -> None:
    """docs/serving.md: conj-train[vllm] (>= 0.32) and trl[vllm] cannot share an environment, so a TRL
    run that uses vLLM calls a judge served in its own process. When TRL's range reaches 0.32 this fails:
    revisit that section (one environment may then work)."""
    import importlib.metadata
    import re

    from packaging.requirements import Requirement

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    ours = re.search(r'^vllm = \["vllm>=([0-9.]+)"\]', pyproject, re.M)
    assert ours and ours.group(1) == "0.32"
    trl = [Requirement(r) for r in importlib.metadata.requires("trl") or [] if r.startswith("vllm")]
    assert trl, "trl declares no vllm extra any more: revisit docs/serving.md"
    assert not any(r.specifier.contains("0.32.0") for r in trl), trl


def test_an_unreachable_server_stops_before_any_judging(tiny_model_dir: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(ConjError, match="after 1 tries"):
        OpenAIEngine(url, "judge", tokenizer=load_tokenizer(str(tiny_model_dir)), max_retries=0)
