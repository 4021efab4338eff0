"""HFEngine on the tiny random Qwen2: equivalence with transformers, reproducibility, bookkeeping."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from conj_train.engines.base import GenerationRequest, SamplingParams
from conj_train.engines.hf import HFEngine
from conj_train.engines.kv_decoder import KVDecoder
from conj_train.engines.sampling import penalize, token_distribution
from conj_train.errors import ConjError

QUESTIONS = ["Name a fruit.", "What is the capital of France? Explain briefly.", "写一首关于大海的短诗。" * 3]


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> HFEngine:
    return HFEngine(str(tiny_model_dir), dtype="float32", device="cpu")


def render(engine: HFEngine, question: str) -> str:
    messages = [{"role": "user", "content": question}]
    return engine.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def requests(engine: HFEngine, seeds: list[int], prefill: str = "") -> list[GenerationRequest]:
    return [GenerationRequest(key=f"q{i}", prompt=render(engine, q), seeds=seeds, prefill=prefill)
            for i, q in enumerate(QUESTIONS)]


@pytest.mark.parametrize("penalty", [1.2, 4.0])
def test_greedy_matches_generate(engine: HFEngine, penalty: float) -> None:
    params = SamplingParams(greedy=True, repetition_penalty=penalty, max_new_tokens=24)
    gens = engine.generate(requests(engine, [0]), params)
    for req, gen in zip(requests(engine, [0]), gens, strict=True):
        ids = torch.tensor([engine.prompt_ids(req)])
        out = engine.model.generate(ids, do_sample=False, repetition_penalty=penalty, max_new_tokens=24)
        new = out[0, ids.shape[1]:].tolist()
        assert gen.completion_tokens == len(new)
        assert gen.text == engine.tokenizer.decode(new, skip_special_tokens=True)
    # At the strong penalty the outputs are varied text, so equal texts mean equal tokens.
    if penalty > 2:
        assert len({g.text for g in gens}) == len(gens)


@pytest.mark.parametrize("capacity", [0, 2, 64])  # plain DynamicCache, a buffer that must grow, one that fits
def test_cached_logits_match_full_forward(engine: HFEngine, capacity: int) -> None:
    model = engine.model
    prompt = engine.prompt_ids(requests(engine, [0])[0])
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        dec = KVDecoder(model, [prompt], [3], capacity=capacity and len(prompt) + capacity)
        rows = [list(prompt) for _ in range(3)]
        for step in range(4):
            full = model(input_ids=torch.tensor(rows)).logits[:, -1].float()
            torch.testing.assert_close(dec.logits, full, atol=1e-4, rtol=0)
            if step == 2:  # a finished row leaves the batch
                dec.keep(torch.tensor([0, 2]))
                rows = [rows[0], rows[2]]
            tokens = torch.randint(0, dec.logits.shape[-1], (len(rows),), generator=gen)
            for row, tok in zip(rows, tokens.tolist(), strict=True):
                row.append(tok)
            dec.step(tokens)


def test_packed_prompts_logits_match_full_forward(engine: HFEngine) -> None:
    model = engine.model
    a = engine.prompt_ids(requests(engine, [0])[1])
    b = a[::-1]  # another prompt of the same length
    with torch.inference_mode():
        dec = KVDecoder(model, [a, b], [2, 1], capacity=len(a) + 4)
        full = model(input_ids=torch.tensor([a, a, b])).logits[:, -1].float()
        torch.testing.assert_close(dec.logits, full, atol=1e-4, rtol=0)
        tokens = torch.tensor([5, 6, 7])
        full = model(input_ids=torch.tensor([[*a, 5], [*a, 6], [*b, 7]])).logits[:, -1].float()
        torch.testing.assert_close(dec.step(tokens), full, atol=1e-4, rtol=0)


def test_prompts_of_different_lengths_pack_with_masked_holes(engine: HFEngine) -> None:
    model = engine.model
    a = engine.prompt_ids(requests(engine, [0])[1])
    b = a[: len(a) - 7]  # shorter: a hole of 7 positions in its rows
    with torch.inference_mode():
        dec = KVDecoder(model, [a, b], [1, 2], capacity=len(a) + 6)
        alone = [model(input_ids=torch.tensor([p])).logits[0, -1].float() for p in (a, b, b)]
        torch.testing.assert_close(dec.logits, torch.stack(alone), atol=1e-4, rtol=0)
        seqs = [list(a), list(b), list(b)]
        for step, tokens in enumerate(([5, 6, 7], [8, 9, 10], [11, 12])):
            if step == 2:  # the first row finishes: the others keep their holes and positions
                dec.keep(torch.tensor([1, 2]))
                seqs = seqs[1:]
            for seq, t in zip(seqs, tokens, strict=True):
                seq.append(t)
            got = dec.step(torch.tensor(tokens))
            want = torch.stack([model(input_ids=torch.tensor([q])).logits[0, -1].float() for q in seqs])
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_a_packed_prompt_runs_only_what_it_does_not_share_with_an_earlier_one(
        engine: HFEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools

    from conj_train.engines.kv_decoder import MIN_SHARED_PREFIX

    model = engine.model
    a = engine.prompt_ids(requests(engine, [0])[2])
    assert len(a) > MIN_SHARED_PREFIX + 8
    other = 7 if a[-5] != 7 else 8
    b = [*a[:-5], other, 9]  # shares all but a's last 5 tokens; shorter than a
    c = [a[0] + 1, *a[1:-2]]  # shares nothing: its first token differs
    calls: list[int] = []
    forward = model.forward

    @functools.wraps(forward)
    def counting(*args: object, **kwargs: object) -> object:
        calls.append(kwargs["input_ids"].shape[1])  # type: ignore[union-attr]
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    with torch.inference_mode():
        dec = KVDecoder(model, [a, b, c], [1, 2, 1], capacity=len(a) + 4)
        assert calls == [len(a), 2, len(c)]  # b ran only the 2 tokens after the shared prefix
        monkeypatch.setattr(model, "forward", forward)
        alone = [model(input_ids=torch.tensor([p])).logits[0, -1].float() for p in (a, b, b, c)]
        torch.testing.assert_close(dec.logits, torch.stack(alone), atol=1e-4, rtol=0)
        seqs = [[*a, 5], [*b, 6], [*b, 7], [*c, 8]]
        got = dec.step(torch.tensor([5, 6, 7, 8]))
        want = torch.stack([model(input_ids=torch.tensor([q])).logits[0, -1].float() for q in seqs])
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)


def test_bf16_cpu_packing_masks_the_holes_and_offsets_a_prefill_on_a_shared_prefix(tiny_model_dir: Path) -> None:
    """The bf16 CPU engine's own attention (cpu_attention) gets SDPA's masks: without them the holes of
    a packed cache were attended (logits off by ~0.04 here, 10x bf16's rounding) and a prefill on top of
    a shared prefix ran top-left causal (its queries saw only the first keys)."""
    engine = HFEngine(str(tiny_model_dir), dtype="bfloat16", device="cpu")
    model = engine.model
    assert model.config._attn_implementation == "sdpa_cpu_decode"
    a = engine.prompt_ids(requests(engine, [0])[1])
    b = a[: len(a) - 7]  # a hole of 7 positions; its whole prompt but the last token is shared
    d = [*a[: len(a) - 9], 5, 6, 7, 8, 9, 10]  # a prefill of 6 tokens (float32 path: <= 4) on a shared prefix
    e = [*a[: len(a) - 9], 11, 12]  # a prefill of 2 tokens on a shared prefix (the short-query path)
    prompts = [a, b, d, e]
    with torch.inference_mode():
        dec = KVDecoder(model, prompts, [1, 1, 1, 1], capacity=len(a) + 4, kv_dtype=engine._kv_dtype)
        seqs = [list(p) for p in prompts]
        got = dec.logits
        for tokens in ([5, 6, 7, 8], [9, 10, 11, 12], None):
            want = torch.stack([model(input_ids=torch.tensor([q])).logits[0, -1].float() for q in seqs])
            torch.testing.assert_close(got, want, atol=0.02, rtol=0)  # bf16 rounding: ~0.008 at most here
            if tokens is None:
                break
            for seq, t in zip(seqs, tokens, strict=True):
                seq.append(t)
            got = dec.step(torch.tensor(tokens))


def test_packing_prompts_of_different_lengths_gives_the_greedy_texts_of_one_by_one(
        engine: HFEngine, tiny_model_dir: Path) -> None:
    packed = HFEngine(str(tiny_model_dir), device="cpu", batch_tokens=100_000)
    reqs = requests(engine, [1, 2])
    assert len(reqs) >= 3 and len({len(engine.prompt_ids(r)) for r in reqs}) == len(reqs)
    assert len(list(packed._units(reqs, [packed.prompt_ids(r) for r in reqs], SamplingParams()))) == 1
    params = SamplingParams(max_new_tokens=12, greedy=True)
    assert [g.text for g in packed.generate(reqs, params)] == [g.text for g in engine.generate(reqs, params)]


def test_warpers_match_transformers() -> None:
    from transformers import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    gen = torch.Generator().manual_seed(0)
    vocab = 300
    history = torch.randint(0, vocab, (4, 40), generator=gen)
    seen = torch.zeros((4, vocab), dtype=torch.bool).scatter_(1, history, True)
    logits = torch.randn((4, vocab), generator=gen) * 3
    # bf16-rounded logits tie at the k-th score, where transformers keeps every tied token.
    for raw in (logits, logits.bfloat16().float()):
        for top_k, top_p in [(50, 0.95), (0, 0.9), (20, 1.0), (0, 1.0), (7, 0.5)]:
            params = SamplingParams(temperature=1.3, top_k=top_k, top_p=top_p, repetition_penalty=1.2)
            procs = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(1.2), TemperatureLogitsWarper(1.3)])
            if top_k:
                procs.append(TopKLogitsWarper(top_k))
            if top_p < 1:
                procs.append(TopPLogitsWarper(top_p))
            expected = procs(history, raw.clone()).softmax(dim=-1)
            ids, probs = token_distribution(penalize(raw, seen, 1.2), params)
            ours = probs if ids is None else torch.zeros_like(expected).scatter_(1, ids, probs)
            ours = ours / ours.sum(dim=-1, keepdim=True)
            if raw is logits:
                torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)
                assert torch.equal(ours > 0, expected > 0)
            else:  # which of two tied tokens top-p drops is an unstable sort's choice: compare multisets
                torch.testing.assert_close(ours.sort().values, expected.sort().values, atol=1e-6, rtol=1e-5)


def test_ties_at_the_kth_score_draw_what_the_whole_vocabulary_path_draws() -> None:
    from conj_train.engines.sampling import sample

    gen = torch.Generator().manual_seed(1)
    # bf16 logits over a real-sized vocabulary: ties at the 50th score are frequent.
    raw = (torch.randn((64, 49152), generator=gen) * 2).bfloat16().float()
    seen = torch.zeros_like(raw, dtype=torch.bool)
    uniforms = torch.rand((256, 64), generator=gen)
    for top_p in (0.95, 1.0):
        params = SamplingParams(temperature=1.2, top_k=50, top_p=top_p, repetition_penalty=1.0)
        scores = penalize(raw, seen, 1.0)
        window = token_distribution(scores, params)
        whole = token_distribution(scores, params, tie_window=0)  # any tie: the whole-vocabulary path
        # The rows tie, and the window held every run; the other call took the whole vocabulary.
        assert window[0].shape[-1] == 50 + 1 + 64
        assert whole[0] is None or whole[0].shape[-1] == raw.shape[-1]
        for u in uniforms:
            assert torch.equal(sample(*window, u), sample(*whole, u))
    # A tie run longer than the window (a flat row) still keeps every tied token.
    flat = torch.zeros((1, 500))
    ids, probs = token_distribution(flat, SamplingParams(top_k=50, top_p=1.0))
    assert ids is None and int((probs > 0).sum()) == 500


def test_same_seeds_give_same_texts(engine: HFEngine) -> None:
    params = SamplingParams(max_new_tokens=16)
    first = engine.generate(requests(engine, [11, 12, 13]), params)
    second = engine.generate(requests(engine, [11, 12, 13]), params)
    assert [g.text for g in first] == [g.text for g in second]


def test_texts_do_not_depend_on_batch_or_order(engine: HFEngine) -> None:
    params = SamplingParams(max_new_tokens=16)
    reqs = requests(engine, [7, 8, 9])
    alone = engine.generate([reqs[0]], params)
    batched = engine.generate(reqs, params)
    reordered = engine.generate(list(reversed(reqs)), params)
    assert len({len(engine.prompt_ids(r)) for r in reqs}) == len(reqs)  # lengths differ: no packing
    texts = {g.key: [] for g in batched}
    for g in batched:
        texts[g.key].append(g.text)
    assert [g.text for g in alone] == texts["q0"]
    assert [g.key for g in reordered] == ["q2"] * 3 + ["q1"] * 3 + ["q0"] * 3
    for key, seq in texts.items():
        assert [g.text for g in reordered if g.key == key] == seq


def test_different_seeds_give_different_texts(engine: HFEngine) -> None:
    params = SamplingParams(temperature=1.2, max_new_tokens=16)
    gens = engine.generate(requests(engine, [1, 2, 3, 4])[:1], params)
    assert [g.seed for g in gens] == [1, 2, 3, 4]
    assert [g.index for g in gens] == [0, 1, 2, 3]
    assert len({g.text for g in gens}) == 4


def test_length_finish_and_token_counts(engine: HFEngine) -> None:
    prefill = ' {"reason":'
    reqs = requests(engine, [1, 2], prefill=prefill)
    gens = engine.generate(reqs, SamplingParams(max_new_tokens=5))
    assert len(gens) == 6
    for gen in gens:
        req = next(r for r in reqs if r.key == gen.key)
        ids = engine.tokenizer(req.prompt + prefill, add_special_tokens=False)["input_ids"]
        assert gen.prompt_tokens == len(ids) == engine.count_tokens(req.prompt + prefill)
        assert gen.completion_tokens <= 5
        if gen.finish_reason == "length":
            assert gen.completion_tokens == 5
        assert not gen.text.startswith(prefill)
    assert any(g.finish_reason == "length" for g in gens)


def test_stop_token_ends_row_and_is_not_in_text(tiny_model_dir: Path) -> None:
    eng = HFEngine(str(tiny_model_dir), device="cpu")
    vocab = eng.model.config.vocab_size
    eng.stop_token_ids = set(range(vocab))  # the first token always stops
    gens = eng.generate(requests(eng, [1, 2])[:2], SamplingParams(max_new_tokens=8))
    assert {(g.finish_reason, g.completion_tokens, g.text) for g in gens} == {("stop", 1, "")}
    # Half the vocabulary stops: rows finish at different steps and leave the batch.
    eng.stop_token_ids = set(range(0, vocab, 2))
    gens = eng.generate(requests(eng, list(range(8)))[:1], SamplingParams(max_new_tokens=12))
    for gen in gens:
        assert gen.completion_tokens == 12 if gen.finish_reason == "length" else gen.completion_tokens <= 12
    assert len({g.completion_tokens for g in gens}) > 1


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.2, top_k=1, max_new_tokens=12),
    SamplingParams(temperature=1.2, top_k=0, top_p=1e-6, max_new_tokens=12),
    SamplingParams(temperature=1.2, top_k=50, top_p=1e-6, max_new_tokens=12),
])
def test_degenerate_sampling_equals_greedy(engine: HFEngine, params: SamplingParams) -> None:
    greedy = SamplingParams(greedy=True, repetition_penalty=params.repetition_penalty, max_new_tokens=12)
    expected = [g.text for g in engine.generate(requests(engine, [0]), greedy)]
    sampled = engine.generate(requests(engine, [3, 4]), params)
    assert [g.text for g in sampled] == [t for t in expected for _ in range(2)]


def test_greedy_gives_every_seed_the_same_text(engine: HFEngine) -> None:
    gens = engine.generate(requests(engine, [5, 6, 7])[:1], SamplingParams(greedy=True, max_new_tokens=6))
    assert [g.seed for g in gens] == [5, 6, 7]
    assert len({g.text for g in gens}) == 1


def test_generate_iter_yields_each_request_once(engine: HFEngine) -> None:
    reqs = requests(engine, [1, 2])
    reqs.append(GenerationRequest(key="none", prompt=reqs[0].prompt, seeds=[]))
    batches = list(engine.generate_iter(reqs, SamplingParams(max_new_tokens=4)))
    keys = sorted(b[0].key if b else "none" for b in batches)
    assert keys == ["none", "q0", "q1", "q2"]
    assert all(len({g.key for g in b}) == 1 and len(b) == 2 for b in batches if b)


def test_packing_same_length_prompts_keeps_request_order(tiny_model_dir: Path) -> None:
    eng = HFEngine(str(tiny_model_dir), device="cpu", batch_tokens=100_000)
    prompt = render(eng, QUESTIONS[0])
    reqs = [GenerationRequest(key=k, prompt=p, seeds=[1, 2])
            for k, p in [("a", prompt), ("b", render(eng, QUESTIONS[1])), ("c", prompt)]]
    gens = eng.generate(reqs, SamplingParams(max_new_tokens=6))
    assert [g.key for g in gens] == ["a", "a", "b", "b", "c", "c"]
    assert all(g.completion_tokens == 6 or g.finish_reason == "stop" for g in gens)


def test_context_limit_is_reported_not_truncated(engine: HFEngine) -> None:
    req = requests(engine, [1])[0]
    room = engine.max_context - len(engine.prompt_ids(req))
    assert engine.fits(req, SamplingParams(max_new_tokens=room))
    assert not engine.fits(req, SamplingParams(max_new_tokens=room + 1))
    with pytest.raises(ConjError, match="q0"):
        engine.generate([req], SamplingParams(max_new_tokens=room + 1))


def test_missing_model_path_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ConjError, match="not found"):
        HFEngine(str(tmp_path / "no-such-model"))


def test_unknown_hub_id_offline_is_a_one_line_user_error() -> None:
    with pytest.raises(ConjError, match="cannot load a tokenizer from nobody/no-such-judge") as err:
        HFEngine("nobody/no-such-judge")
    assert "\n" not in str(err.value)


def test_tokenizer_without_chat_template_is_a_user_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "chat_template.jinja").unlink()
    with pytest.raises(ConjError, match="chat template"):
        HFEngine(str(copy))


def test_bad_sampling_settings_are_user_errors(engine: HFEngine) -> None:
    with pytest.raises(ConjError, match="top_p"):
        engine.generate(requests(engine, [1])[:1], SamplingParams(top_p=0.0))


def test_threads_sets_torch_threads(tiny_model_dir: Path) -> None:
    before = torch.get_num_threads()
    try:
        HFEngine(str(tiny_model_dir), device="cpu", threads=before + 1)
        assert torch.get_num_threads() == before + 1
    finally:
        torch.set_num_threads(before)
