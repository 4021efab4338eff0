"""The `Judge` API for people who embed a pairwise judge (the scalar counterpart: `reward_model`).

    from conj_train.inference.judge import Judge

    judge = Judge.from_pretrained("path/or/hub-id")            # engine="hf" (default), "vllm" or "openai"
    v = judge.compare("What is 2+2?", "4", "5")                  # Verdict(better=1, rationale=..., ...)
    v = judge.compare(q, a1, a2, both_orders=True)               # judged twice, answers swapped
    vs = judge.compare_many([(q, a1, a2), ...])                  # batched

A judge prompt is the template's user text (``conj-zh`` by default) through the tokenizer's chat
template, with the assistant turn pre-filled with ``' {"原因":'`` as Con-J evaluates
(docs/method.md#evaluation-protocol); the prefill is put back in front of the generation before
parsing. ``Verdict.probability`` is
P(answer 1 better) read from the logits at the verdict digit (:mod:`conj_train.inference.probability`), usable as
a reward signal; the ``hf`` engine reads it from its model's logits, the ``vllm`` engine from vLLM's
log-probabilities of the two digit tokens (:class:`conj_train.inference.probability.EngineVerdictScorer`), the
``openai`` engine from a server's log-probabilities when it returns them
(:mod:`conj_train.engines.openai`; ``docs/serving.md``). ``structured=True`` constrains the judge's
output to a parseable judgment where the engine can (:mod:`conj_train.inference.structured_decoding`).
:class:`conj_train.inference.reward_model.RewardModel` gives a sequence-classification reward model (TRL
``RewardTrainer``) the same ``compare`` call.

The evaluation stage (:mod:`conj_train.evaluate.run`) runs its judgments through :meth:`Judge.judge_prompts`, so
the API and ``conj eval`` cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conj_train.engines.base import PROMPT_TOO_LONG, GenerationRequest, SamplingParams, prompt_too_long
from conj_train.errors import ConjError
from conj_train.inference.probability import (
    DigitRead,
    EngineVerdictScorer,
    VerdictScorer,
    digit_pair,
    generated_read,
    transfer_prefill,
)
from conj_train.io import stable_hash
from conj_train.runs import derive_seed
from conj_train.tokens import load_tokenizer
from conj_train.verdicts.position import verdict_position

DECODINGS = ("greedy", "sample")
MODEL_KINDS = ("judge", "rm")


@dataclass(frozen=True)
class Verdict:
    """A judge's answer for (answer 1, answer 2) in the caller's order.

    ``better``: 1 or 2, or None (no parseable verdict; with ``both_orders``, also when the two orders
    disagree). ``probability``: P(answer 1 better), None when it could not be read. ``raw``: the judge's
    text, or the texts of both orders. ``consistent``: with ``both_orders``, whether both orders named
    the same answer.
    """

    better: int | None
    rationale: str | None
    probability: float | None
    raw: str | tuple[str, ...]
    consistent: bool | None = None


@dataclass
class Judgment:
    """Everything one judge prompt produced: its samples, and their majority verdict."""

    texts: list[str] = field(default_factory=list)
    verdicts: list[int | None] = field(default_factory=list)
    rationales: list[str | None] = field(default_factory=list)
    parse_reasons: list[str | None] = field(default_factory=list)
    reads: list[DigitRead | None] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    completion_tokens: list[int] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    skipped: str | None = None
    transfer: DigitRead | None = None

    @property
    def verdict(self) -> int | None:
        """The slot most samples chose; None with no parseable sample or a tie."""
        ones, twos = self.verdicts.count(1), self.verdicts.count(2)
        return 1 if ones > twos else 2 if twos > ones else None

    @property
    def p_slot1(self) -> float | None:
        """Mean P(slot 1 better) over the samples where it was read."""
        ps = [r.p_first for r in self.reads if r is not None]
        return sum(ps) / len(ps) if ps else None

    @property
    def rationale(self) -> str | None:
        """The rationale of the first sample that agrees with the majority verdict."""
        for v, r in zip(self.verdicts, self.rationales, strict=True):
            if v is not None and v == self.verdict:
                return r
        return None

    @property
    def transfer_verdict(self) -> int | None:
        """The verdict the reader gave after the first sample's rationale (None if not probed)."""
        if self.transfer is None or self.transfer.p_first == 0.5:
            return None
        return 1 if self.transfer.p_first > 0.5 else 2


def _seeds_for(seed: int, prompt: str, n: int) -> list[int]:
    return [derive_seed(seed, stable_hash(prompt), "judge", i) for i in range(n)]


class Judge:
    """A generative pairwise judge on an engine (see the module docstring).

    ``decoding``: ``greedy`` (one text per prompt) or ``sample`` (``samples`` draws, majority vote).
    ``prefill``: the start of the assistant's answer (default: the template's, ``' {"原因":'``).
    ``scorer``: reads verdict probabilities (None: none are read). ``transfer_reader``: the model that
    reads back rationales in :meth:`transfer` (None: ``scorer``, i.e. the judge itself).
    ``structured``: constrain the output to a parseable judgment (structured decoding: vLLM's
    structured outputs for engines ``vllm`` and ``openai`` on a vLLM server, llguidance for ``hf``;
    off by default, and never for sampling training judgments).
    """

    def __init__(
        self,
        engine: Any,
        tokenizer: Any,
        *,
        template: str = "conj-zh",
        parser: str = "lenient",
        system_prompt: str | None = None,
        max_new_tokens: int = 512,
        decoding: str = "greedy",
        samples: int = 1,
        temperature: float = 1.0,
        top_p: float = 0.9,
        top_k: int = 0,
        repetition_penalty: float = 1.0,
        seed: int = 2021,
        prefill: str | None = None,
        scorer: VerdictScorer | EngineVerdictScorer | None = None,
        transfer_reader: VerdictScorer | EngineVerdictScorer | None = None,
        structured: bool = False,
    ) -> None:
        from conj_train.inference.structured_decoding import judgment_regex
        from conj_train.prompts.templates import get_template
        from conj_train.verdicts import MODES

        if decoding not in DECODINGS:
            raise ConjError(f"decoding must be one of {DECODINGS}, not {decoding!r}")
        if parser not in MODES:
            raise ConjError(f"parser must be one of {MODES}, not {parser!r}")
        if samples < 1 or (decoding == "greedy" and samples != 1):
            raise ConjError(f"samples must be >= 1, and 1 with greedy decoding (got {samples})")
        self.engine = engine
        self.tokenizer = tokenizer
        self.template = get_template(template)
        # Con-J's evaluator starts the answer with ' {"原因":'; a judge trained without rationales
        # needs its verdict key there instead (or "" for no prefill).
        self.prefill = self.template.eval_prefill if prefill is None else prefill
        self.parser = parser
        self.system_prompt = system_prompt
        self.samples = samples
        self.seed = seed
        self.params = SamplingParams(
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            max_new_tokens=max_new_tokens,
            greedy=decoding == "greedy",
            regex=judgment_regex(self.template.rationale_key, self.template.verdict_key, self.prefill)
            if structured
            else None,
        )
        self.scorer = scorer
        self.transfer_reader = transfer_reader

    @classmethod
    def from_pretrained(
        cls,
        path_or_hub_id: str,
        engine: str = "hf",
        *,
        dtype: str = "auto",
        device: str | None = None,
        threads: int | None = None,
        trust_remote_code: bool = False,
        probability: bool = True,
        transfer_model: str | None = None,
        probability_batch_tokens: int = 16384,
        engine_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Judge:
        """Load a judge; ``options`` are :class:`Judge`'s keyword arguments (template, parser, ...).

        ``engine``: ``hf`` (transformers), ``vllm`` (fast generation) or ``openai`` (a server:
        ``engine_options`` then needs ``base_url``, and takes the other
        :class:`~conj_train.engines.openai.OpenAIEngine` arguments; ``path_or_hub_id`` is the judge's
        folder or Hub id, for its tokenizer and chat template, and the served model's name unless
        ``engine_options["model"]`` gives another); all read verdict probabilities unless
        ``probability=False`` (the openai engine where the server returns log-probabilities). ``transfer_model``: another causal LM that reads rationales back in
        :meth:`transfer` (default: the judge itself). ``engine_options`` go to the engine constructor.
        """
        extra = dict(engine_options or {})
        if engine == "hf":
            from conj_train.engines.hf import HFEngine

            eng = HFEngine(
                path_or_hub_id,
                dtype=dtype,
                device=device,
                trust_remote_code=trust_remote_code,
                threads=threads,
                **extra,
            )
            tokenizer = eng.tokenizer
            scorer = (
                VerdictScorer(eng.model, tokenizer, batch_tokens=probability_batch_tokens)
                if probability
                else None
            )
        elif engine == "vllm":
            from conj_train.engines.vllm import VLLMEngine

            eng = VLLMEngine(path_or_hub_id, dtype=dtype, trust_remote_code=trust_remote_code, **extra)
            tokenizer = load_tokenizer(path_or_hub_id, trust_remote_code)
            scorer = EngineVerdictScorer(eng, tokenizer) if probability else None
        elif engine == "openai":
            from conj_train.engines.openai import OpenAIEngine

            if not extra.get("base_url"):
                raise ConjError("engine openai needs engine_options['base_url'] (e.g. http://127.0.0.1:8000/v1)")
            tokenizer = load_tokenizer(path_or_hub_id, trust_remote_code)
            extra.setdefault("model", str(path_or_hub_id))
            eng = OpenAIEngine(tokenizer=tokenizer, **extra)
            scorer = EngineVerdictScorer(eng, tokenizer) if probability else None
        else:
            raise ConjError(f"engine must be 'hf', 'vllm' or 'openai', not {engine!r}")
        reader = None
        if transfer_model:
            reader = VerdictScorer.from_pretrained(
                transfer_model,
                dtype=dtype,
                device=device,
                trust_remote_code=trust_remote_code,
                batch_tokens=probability_batch_tokens,
            )
        return cls(eng, tokenizer, scorer=scorer, transfer_reader=reader, **options)

    # ----------------------------------------------------------------------------------------
    # Core

    def prompt_text(
        self, question: str, answer_1: str, answer_2: str, context: Sequence[Mapping[str, Any]] = ()
    ) -> str:
        """The judge prompt's user text for one comparison."""
        return self.template.judge_prompt(question, answer_1, answer_2, context)

    def render(self, prompt: str) -> str:
        """``prompt`` through the chat template, ready for the prefill."""
        from conj_train.prompts.chat import render_chat

        return render_chat(self.tokenizer, prompt, system=self.system_prompt)

    def judge_prompts(
        self, prompts: Sequence[str], seeds: Sequence[Sequence[int]] | None = None, *, transfer: bool = False
    ) -> list[Judgment]:
        """Judge user-text prompts; one :class:`Judgment` per prompt, in order.

        ``seeds``: per prompt, one seed per sample (default: derived from the judge seed and the
        prompt). A prompt too long for the model's context is not generated: its judgment has
        ``skipped="prompt_too_long"`` and no verdict. ``transfer`` also runs the rationale-transfer
        probe on each judgment's first sample.
        """
        from conj_train.prompts.chat import chat_messages
        from conj_train.verdicts import parse_verdict

        prefill = self.prefill
        rendered = [self.render(p) for p in prompts]
        if seeds is None:
            seeds = [_seeds_for(self.seed, p, self.samples) for p in prompts]
        out = [Judgment(seeds=[int(s) for s in ss]) for ss in seeds]
        requests = []
        for i, text in enumerate(rendered):
            if len(seeds[i]) != self.samples:
                raise ConjError(f"prompt {i}: {len(seeds[i])} seeds for {self.samples} samples")
            if prompt_too_long(self.engine, text, prefill, self.params.max_new_tokens):
                out[i].skipped = PROMPT_TOO_LONG
            else:
                requests.append(
                    GenerationRequest(key=str(i), prompt=text, seeds=list(seeds[i]), prefill=prefill,
                                      messages=chat_messages(prompts[i], system=self.system_prompt))
                )
        recorded: dict[tuple[int, int], dict[str, Any]] = {}
        for gen in self._generate(requests):
            j = out[int(gen.key)]
            if "watched_logprobs" in gen.extra:
                recorded[(int(gen.key), len(j.texts))] = gen.extra
            full = prefill + gen.text
            parsed = parse_verdict(full, self.parser)
            j.texts.append(full)
            j.verdicts.append(parsed.verdict)
            j.rationales.append(parsed.rationale)
            j.parse_reasons.append(parsed.reason)
            j.finish_reasons.append(gen.finish_reason)
            j.completion_tokens.append(gen.completion_tokens)
        self._read_probabilities(rendered, out, recorded)
        if transfer:
            self._transfer_all(prompts, out)
        return out

    def _generate(self, requests: list[GenerationRequest]) -> list[Any]:
        """The engine's generations. When the scorer reads the engine's own model, the engine records the
        digits' log-probabilities while generating, so most reads need no second forward
        (:func:`~conj_train.inference.probability.generated_read`); only during this call, as the engine
        may serve other judges (a copy without a scorer)."""
        if not requests:
            return []
        scorer = self.scorer
        if not (isinstance(scorer, VerdictScorer) and hasattr(self.engine, "watch_token_ids")
                and getattr(self.engine, "model", None) is scorer.model):
            return self.engine.generate(requests, self.params)
        self.engine.watch_token_ids = scorer.digit_token_ids()
        try:
            return self.engine.generate(requests, self.params)
        finally:
            self.engine.watch_token_ids = ()

    def _read_probabilities(self, rendered: Sequence[str], out: list[Judgment],
                            recorded: Mapping[tuple[int, int], dict[str, Any]]) -> None:
        """Each sample's verdict read: from the log-probabilities ``recorded`` while generating (keyed by
        (prompt, sample)) where they stand in for the forward, by the scorer's forward elsewhere."""
        for j in out:
            j.reads = [None] * len(j.texts)
        if self.scorer is None:
            return
        prefixes, digits, where = [], [], []
        for i, j in enumerate(out):
            for s, (text, verdict) in enumerate(zip(j.texts, j.verdicts, strict=True)):
                pos = verdict_position(text, verdict)
                if pos is None:
                    continue
                prefix, pair = rendered[i] + text[:pos], digit_pair(text, pos)
                if (i, s) in recorded:
                    encoded = self.scorer.encode(prefix, pair)
                    read = None if encoded is None else generated_read(recorded[(i, s)], encoded)
                    if encoded is None or read is not None:
                        out[i].reads[s] = read
                        continue
                prefixes.append(prefix)
                digits.append(pair)
                where.append((i, s))
        for (i, s), read in zip(where, self.scorer.read(prefixes, digits) if where else [], strict=True):
            out[i].reads[s] = read

    def _transfer_all(self, prompts: Sequence[str], out: list[Judgment]) -> None:
        todo = [
            (i, j.rationales[0])
            for i, j in enumerate(out)
            if j.verdicts and j.verdicts[0] is not None and j.rationales[0]
        ]
        reads = self.transfer([prompts[i] for i, _ in todo], [r for _, r in todo])  # type: ignore[misc]
        for (i, _), read in zip(todo, reads, strict=True):
            out[i].transfer = read

    def transfer(self, prompts: Sequence[str], rationales: Sequence[str]) -> list[DigitRead | None]:
        """The rationale-transfer probe: the verdict read after each rationale is forced in.

        Raises a ConjError without a reader (``probability=False`` and no ``transfer_model``).
        """
        reader = self.transfer_reader or self.scorer
        if reader is None:
            raise ConjError("the rationale-transfer probe needs verdict probabilities: set probability or a transfer_model")
        from conj_train.prompts.chat import plain_text, render_chat

        key_r, key_v = self.template.rationale_key, self.template.verdict_key
        prefixes = [  # a rationale is generated text: data, as the prompt's answers are
            render_chat(reader.tokenizer, p, system=self.system_prompt)
            + transfer_prefill(plain_text(reader.tokenizer, r), rationale_key=key_r, verdict_key=key_v)
            for p, r in zip(prompts, rationales, strict=True)
        ]
        return reader.read(prefixes)

    # ----------------------------------------------------------------------------------------
    # Comparisons

    def compare(
        self,
        question: str,
        answer_1: str,
        answer_2: str,
        *,
        context: Sequence[Mapping[str, Any]] = (),
        both_orders: bool = False,
    ) -> Verdict:
        """Which of two answers to ``question`` is better (see :class:`Verdict`)."""
        return self.compare_many([(question, answer_1, answer_2, context)], both_orders=both_orders)[0]

    def compare_many(
        self,
        items: Iterable[Sequence[Any] | Mapping[str, Any]],
        *,
        both_orders: bool = False,
        batch_size: int = 16,
    ) -> list[Verdict]:
        """:meth:`compare` for many items: ``(question, answer_1, answer_2[, context])`` tuples or dicts
        with those keys; judged ``batch_size`` prompts per engine call."""
        rows = [_comparison(item, n) for n, item in enumerate(items)]
        prompts = []
        for q, a1, a2, ctx in rows:
            prompts.append(self.prompt_text(q, a1, a2, ctx))
            if both_orders:
                prompts.append(self.prompt_text(q, a2, a1, ctx))
        judged: list[Judgment] = []
        for start in range(0, len(prompts), max(1, batch_size)):
            judged.extend(self.judge_prompts(prompts[start : start + batch_size]))
        if not both_orders:
            return [_verdict(j) for j in judged]
        return [_both_orders(judged[k], judged[k + 1]) for k in range(0, len(judged), 2)]


def _comparison(item: Sequence[Any] | Mapping[str, Any], n: int) -> tuple[str, str, str, Sequence]:
    if isinstance(item, Mapping):
        try:
            return item["question"], item["answer_1"], item["answer_2"], item.get("context") or ()
        except KeyError as e:
            raise ConjError(
                f"item {n}: missing key {e.args[0]!r} (need question, answer_1, answer_2)"
            ) from None
    if len(item) not in (3, 4):
        raise ConjError(
            f"item {n}: expected (question, answer_1, answer_2[, context]), got {len(item)} values"
        )
    q, a1, a2, *rest = item
    return q, a1, a2, (rest[0] if rest else ()) or ()


def _verdict(j: Judgment) -> Verdict:
    raw = j.texts[0] if len(j.texts) == 1 else tuple(j.texts)
    return Verdict(j.verdict, j.rationale, j.p_slot1, raw)


def _both_orders(a: Judgment, b: Judgment) -> Verdict:
    # b saw the answers swapped: its slot k is the caller's slot 3 - k.
    vb = None if b.verdict is None else 3 - b.verdict
    consistent = a.verdict is not None and a.verdict == vb
    ps = [p for p in (a.p_slot1, None if b.p_slot1 is None else 1.0 - b.p_slot1) if p is not None]
    raw = tuple(a.texts[:1] + b.texts[:1])
    return Verdict(
        a.verdict if consistent else None,
        a.rationale if consistent else None,
        sum(ps) / len(ps) if ps else None,
        raw,
        consistent,
    )
