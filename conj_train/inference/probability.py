"""Verdict probabilities read from a judge's logits, and the rationale-transfer probe.

Verdict probability
    A Con-J judgment is ``{"原因": "...", "更好的回答": 1}``: the rationale, the verdict key, then
    one digit. :func:`conj_train.verdicts.position.verdict_position` finds that digit in the parsed text (prefill + generation);
    :class:`VerdictScorer` runs one forward pass over ``prompt + text up to the digit`` and reads
    the next-token distribution there, normalised over the two verdict tokens:
    ``P(1) = p('1') / (p('1') + p('2'))``. Nothing is sampled; the pass only re-reads the positions
    the model already generated, so it costs about one prefill per judgment (nothing, where the
    ``hf`` engine recorded the read while generating: see below). The full-vocabulary
    mass ``p('1') + p('2')`` is kept as well: a low mass means the model wanted to write something
    else at that position.

    The two candidate tokens are found by tokenizing ``prefix + '1'`` and ``prefix + '2'`` and
    taking the first token where they differ; the model input is the common part before it. So a
    tokenizer that merges the space with the digit (``'▁1'``) is read correctly too, and the input is
    always the canonical tokenization of the text (which can differ from the generated ids in rare
    non-canonical cases; the probability is then that of the canonical reading).

    The ``hf`` engine can record the two digits' log-probabilities while it generates
    (``HFEngine.watch_token_ids``, set by :class:`conj_train.inference.judge.Judge` when its scorer
    reads the engine's own model): where the generated ids are the prefix's canonical ids,
    :func:`generated_read` takes the read from there and the forward is skipped; elsewhere the
    forward runs, so the definition above holds either way.

    Two readers share that encoding: :class:`VerdictScorer` runs a transformers model's forward
    (engine ``hf``, or a separate transfer-probe model), and :class:`EngineVerdictScorer` asks an
    engine for the two tokens' log-probabilities (engine ``vllm``:
    :meth:`conj_train.engines.vllm.VLLMEngine.token_logprobs`; engine ``openai``:
    :meth:`conj_train.engines.openai.OpenAIEngine.token_logprobs`). Both read the full-vocabulary softmax
    of the raw logits, so they agree up to the engines' numerics (``tests/test_vllm_real.py``
    compares them on SmolLM2-135M-Instruct).

Rationale transfer (docs/method.md#rationale-transfer)
    :func:`transfer_prefill` forces a rationale back into the assistant turn,
    ``' {"原因": <rationale as JSON string>, "更好的回答": '``, and the same next-token read gives the
    verdict the reader model then assigns (the more probable of the two digits, i.e. greedy decoding
    restricted to the verdict tokens). Con-J's released probe appends ``更好的回答: `` with the key
    unquoted; here the key is quoted as in every training target. The rationale is re-serialised with
    ``json.dumps`` so quotes inside it cannot end the string early.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conj_train.tokens import load_tokenizer

_DIGIT_PAIRS = {"1": ("1", "2"), "2": ("1", "2"), "１": ("１", "２"), "２": ("１", "２")}


def digit_pair(text: str, position: int) -> tuple[str, str]:
    """The two verdict characters to compare at ``position`` (ASCII or full-width, as written)."""
    return _DIGIT_PAIRS.get(text[position], ("1", "2"))


def transfer_prefill(rationale: str, *, rationale_key: str = "原因", verdict_key: str = "更好的回答") -> str:
    """The forced assistant prefix of the transfer probe: rationale written, verdict digit next."""
    return (
        ' {"'
        + rationale_key
        + '": '
        + json.dumps(rationale, ensure_ascii=False)
        + ', "'
        + verdict_key
        + '": '
    )


@dataclass(frozen=True)
class DigitRead:
    """The model's view at a verdict position: ``p_first`` = P('1') / (P('1') + P('2'))."""

    p_first: float
    mass: float  # P('1') + P('2') under the full softmax


def read_from_logprobs(logprob_a: float, logprob_b: float) -> DigitRead:
    """The :class:`DigitRead` of two digits' full-vocabulary log-probabilities."""
    # P(a) / (P(a) + P(b)) as a logistic of the difference: a tiny mass must not turn into 0/0.
    diff = logprob_b - logprob_a
    p_first = 1.0 / (1.0 + math.exp(diff)) if diff < 700 else 0.0
    return DigitRead(p_first=p_first, mass=math.exp(logprob_a) + math.exp(logprob_b))


class _DigitReader:
    """What both readers share: the tokenizer and how a prefix and its two digits are encoded."""

    tokenizer: Any

    def encode(self, prefix: str, digits: tuple[str, str] = ("1", "2")) -> tuple[list[int], int, int] | None:
        """``(input ids, token of digits[0], token of digits[1])`` for reading at the end of ``prefix``."""
        ids_a = self._ids(prefix + digits[0])
        ids_b = self._ids(prefix + digits[1])
        common = 0
        for a, b in zip(ids_a, ids_b, strict=False):
            if a != b:
                break
            common += 1
        if common == 0 or common >= min(len(ids_a), len(ids_b)):
            return None
        return ids_a[:common], ids_a[common], ids_b[common]

    def digit_token_ids(self) -> tuple[int, ...]:
        """The tokens a verdict digit can be read as (ASCII and full-width, after the separators a Con-J
        judgment writes): what an engine records while generating (:func:`generated_read`)."""
        ids: set[int] = set()
        for digits in (("1", "2"), ("１", "２")):
            for before in ('"更好的回答": ', '"更好的回答":', ": ", ":", " ", "\n"):
                encoded = self.encode(before, digits)
                if encoded is not None:
                    ids.update(encoded[1:])
        return tuple(sorted(ids))

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_all(
        self, prefixes: Sequence[str], digits: Sequence[tuple[str, str]] | None
    ) -> list[tuple[list[int], int, int] | None]:
        return [self.encode(p, digits[i] if digits else ("1", "2")) for i, p in enumerate(prefixes)]


def generated_read(extra: dict[str, Any], encoded: tuple[list[int], int, int]) -> DigitRead | None:
    """The verdict read recorded while the judgment was generated, or None where it cannot stand in.

    ``extra``: a generation's record from an engine that watched the digit tokens (the ``hf`` engine's
    ``prompt_token_ids``, ``token_ids``, ``watch_token_ids``, ``watched_logprobs``: per generated
    position, the watched tokens' log-probabilities). ``encoded``: :meth:`_DigitReader.encode` of the
    prefix. The read is the one a second forward over the prefix would give when the model's input
    and generated tokens *are* that prefix's canonical ids and both digits were watched; then the
    position's logits are the same next-token distribution (computed in the decode step, so equal up
    to the rounding of another batch shape). Otherwise None: the caller reads by a forward.
    """
    ids, token_a, token_b = encoded
    prompt, generated, watch = extra["prompt_token_ids"], extra["token_ids"], extra["watch_token_ids"]
    step = len(ids) - len(prompt)
    if not 0 <= step < len(extra["watched_logprobs"]) or token_a not in watch or token_b not in watch:
        return None
    if ids[: len(prompt)] != list(prompt) or ids[len(prompt):] != list(generated[:step]):
        return None
    logprobs = extra["watched_logprobs"][step]
    return read_from_logprobs(logprobs[watch.index(token_a)], logprobs[watch.index(token_b)])


class EngineVerdictScorer(_DigitReader):
    """Verdict probabilities from an engine's ``token_logprobs`` (the vLLM and openai engines'; no HF model).

    An engine may answer ``None`` for a prefix whose log-probabilities it could not get (a server that
    returns none): that read is then ``None``, as for a prefix without two digit tokens."""

    def __init__(self, engine: Any, tokenizer: Any) -> None:
        self.engine = engine
        self.tokenizer = tokenizer

    def read(
        self, prefixes: Sequence[str], digits: Sequence[tuple[str, str]] | None = None
    ) -> list[DigitRead | None]:
        """The verdict read after each prefix (``None`` where no two distinct digit tokens exist)."""
        encoded = self._encode_all(prefixes, digits)
        todo = [(i, e) for i, e in enumerate(encoded) if e is not None]
        out: list[DigitRead | None] = [None] * len(prefixes)
        if not todo:
            return out
        logprobs = self.engine.token_logprobs([e[0] for _, e in todo], [(e[1], e[2]) for _, e in todo])
        for (i, _), pair in zip(todo, logprobs, strict=True):
            # An engine may have no log-probabilities for a prefix (a server that returns none).
            out[i] = None if pair is None else read_from_logprobs(*pair)
        return out


class VerdictScorer(_DigitReader):
    """Next-token verdict probabilities from a causal LM's logits (see the module docstring).

    Prefixes are batched left-padded with explicit position ids, longest first, while a batch's
    padded size stays within ``batch_tokens``; only the last position's logits are computed.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_tokens: int = 16384) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_tokens = max(1, batch_tokens)
        params = inspect.signature(model.forward).parameters
        self._last_only = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    @classmethod
    def from_pretrained(
        cls,
        path: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        trust_remote_code: bool = False,
        batch_tokens: int = 16384,
    ) -> VerdictScorer:
        """Load a causal LM (e.g. a rationale-transfer reader) only for reading verdict probabilities."""
        from transformers import AutoModelForCausalLM

        from conj_train.inference.loading import load_model

        tok = load_tokenizer(path, trust_remote_code, chat_template=False)
        model = load_model(AutoModelForCausalLM, path, what="a causal LM", dtype=dtype, device=device,
                           trust_remote_code=trust_remote_code)
        return cls(model, tok, batch_tokens=batch_tokens)

    def read(
        self, prefixes: Sequence[str], digits: Sequence[tuple[str, str]] | None = None
    ) -> list[DigitRead | None]:
        """The verdict read after each prefix (``None`` where no two distinct digit tokens exist)."""
        encoded = self._encode_all(prefixes, digits)
        out: list[DigitRead | None] = [None] * len(prefixes)
        order = sorted((i for i, e in enumerate(encoded) if e is not None), key=lambda i: -len(encoded[i][0]))  # type: ignore[index]
        batch: list[int] = []
        for i in order:
            width = len(encoded[batch[0]][0]) if batch else len(encoded[i][0])  # type: ignore[index]
            if batch and width * (len(batch) + 1) > self.batch_tokens:
                self._run(batch, encoded, out)
                batch = []
            batch.append(i)
        if batch:
            self._run(batch, encoded, out)
        return out

    def _run(self, batch: list[int], encoded: list[Any], out: list[DigitRead | None]) -> None:
        import torch

        device = self.model.device
        width = max(len(encoded[i][0]) for i in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, i in enumerate(batch):
            seq = encoded[i][0]
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logits = (
                self.model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    **self._last_only,
                )
                .logits[:, -1]
                .float()
            )
        probs = logits.softmax(dim=-1)
        for row, i in enumerate(batch):
            _, tok_a, tok_b = encoded[i]
            pa, pb = float(probs[row, tok_a]), float(probs[row, tok_b])
            # Normalise in log space: a tiny mass must not turn into 0/0.
            la, lb = float(logits[row, tok_a]), float(logits[row, tok_b])
            p_first = float(torch.tensor([la, lb]).softmax(dim=0)[0])
            out[i] = DigitRead(p_first=p_first, mass=pa + pb)
