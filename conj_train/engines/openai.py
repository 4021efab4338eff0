"""The OpenAI-compatible engine: judge through a server (``vllm serve``, ``transformers serve``, an API).

Every stage that judges can run on it (``conj eval --engine openai``, ``Judge.from_pretrained(...,
engine="openai")``): the judge model runs in its own process, so the judge and the tools calling it
(e.g. TRL's vLLM-backed trainers) need not share an environment (``docs/serving.md``).

Why a small client on the standard library and not the ``openai`` package: the engine makes two kinds of
JSON POST (``/completions`` or ``/chat/completions``) and one GET (``/models``), and most of what it
sends are server extensions the ``openai`` client only passes through ``extra_body``; the package
would be one more dependency (with its own pins at both ends of the version matrix) for no behaviour
the engine needs. Concurrency is a thread pool, retries are a loop with exponential backoff.

Choices, and why:

* **The prefill continues.** ``api="completions"`` (default) sends the judge prompt rendered by the
  judge's own chat template (:func:`conj_train.prompts.chat.render_chat`) followed by the prefill
  (``' {"原因":'``) as one completion prompt, so the server continues the judgment exactly as the
  in-process engines do, whatever chat template the server would apply. ``api="chat"`` sends the chat
  turns; with a prefill, it is sent as a final assistant turn with ``continue_final_message: true``
  and ``add_generation_prompt: false`` (vLLM's and transformers' chat-template options; a server
  without them starts a new turn instead, which is why completions is the default).
* **Prompt as text or tokens.** The prompt is sent as text when the tokenizer adds no special token of
  its own (Qwen2, SmolLM2: text and tokens give the same input), otherwise as token ids: a server
  tokenizes a text prompt with the tokenizer's special tokens (vLLM's default ``add_special_tokens``),
  adding a second BOS to templates that already start with one (Llama 3).
* **Decoding.** Greedy is ``temperature: 0`` (one request per prompt whose text every seed shares, as in
  the other engines); sampling sends one request per sample with its ``seed``. ``top_k`` and
  ``repetition_penalty`` are not OpenAI fields: they are sent only when they change the decoding
  (``top_k > 0``, penalty ``!= 1``), so a plain OpenAI server refuses what it cannot do instead of
  silently ignoring it.
* **Texts.** From a vLLM server, the completion's token ids (``return_token_ids``) decoded with
  ``skip_special_tokens=True``, as the vllm engine does; from other servers, their text.
* **Log-probabilities** (verdict probabilities, :class:`conj_train.inference.probability.EngineVerdictScorer`):
  :meth:`OpenAIEngine.token_logprobs` asks for one greedy token after the prefix with ``logprobs``.
  A vLLM server (found from ``GET /models``, whose cards vLLM marks ``owned_by: vllm``) also gets
  ``logprob_token_ids`` (vLLM >= 0.32) and ``return_tokens_as_token_ids``: it then returns exactly the
  two digit tokens' log-softmax, whatever their rank, keyed by token id. Any other server is read from
  its top ``top_logprobs`` entries, matched by the tokens' text; a token not among them, or a server
  that returns no log-probabilities (``transformers serve``), gives no probability (``None``), never a
  guessed one.
* **Structured decoding** (opt-in, :attr:`SamplingParams.regex`): sent as vLLM's
  ``structured_outputs: {"regex": ...}``; a server without it answers with an error.
* **Retries.** Connection errors, timeouts, 408, 409, 429 and 5xx are retried ``max_retries`` times with
  exponential backoff (``backoff * 2**attempt`` seconds, or the server's ``Retry-After``); any other
  error stops the run with the server's message (a wrong model name is not retried).
* **The key** is read from the environment variable ``api_key_env`` (default ``OPENAI_API_KEY``) when
  the engine starts and is only ever put in the ``Authorization`` header: it is not an argument, not
  in any config, manifest or config hash.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conj_train.engines.base import FinishReason, Generation, GenerationRequest, SamplingParams
from conj_train.engines.sampling import check_params
from conj_train.errors import ConjError

log = logging.getLogger(__name__)

APIS = ("completions", "chat")
SERVERS = ("auto", "vllm", "generic")
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
_RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
# The most a server says it will wait before retrying that we honour (seconds).
_MAX_RETRY_AFTER = 60.0


class OpenAIEngine:
    """The :class:`~conj_train.engines.base.Engine` protocol on an OpenAI-compatible server.

    ``base_url``: the API root, e.g. ``http://127.0.0.1:8000/v1``. ``model``: the model name the server
    knows (``vllm serve PATH`` registers ``PATH``). ``tokenizer``: the judge's tokenizer (to count
    tokens, choose text or token prompts, and read log-probabilities). ``api``: ``completions`` or
    ``chat`` (module docstring). ``server``: ``auto`` asks ``GET /models`` whether it is vLLM (for its
    log-probability extensions); ``vllm`` or ``generic`` says so. ``max_context``: the server's
    context length (default: vLLM's ``max_model_len`` from ``/models``, else the tokenizer's limit).
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        tokenizer: Any,
        api: str = "completions",
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
        server: str = "auto",
        max_concurrency: int = 8,
        max_retries: int = 4,
        backoff: float = 1.0,
        timeout: float = 600.0,
        max_context: int | None = None,
        top_logprobs: int = 20,
    ) -> None:
        if api not in APIS:
            raise ConjError(f"openai engine: api must be one of {', '.join(APIS)}, not {api!r}")
        if server not in SERVERS:
            raise ConjError(f"openai engine: server must be one of {', '.join(SERVERS)}, not {server!r}")
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ConjError(f"openai engine: base_url must be an http(s) URL, got {base_url!r}")
        if max_concurrency < 1 or max_retries < 0 or backoff < 0 or timeout <= 0 or top_logprobs < 2:
            raise ConjError("openai engine: max_concurrency >= 1, max_retries >= 0, backoff >= 0, timeout > 0 "
                            "and top_logprobs >= 2 are required")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.tokenizer = tokenizer
        self.api = api
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout
        self.top_logprobs = top_logprobs
        self.api_key_env = api_key_env
        key = os.environ.get(api_key_env) if api_key_env else None
        # The key lives only in this header mapping (never repr'd, logged or saved).
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._card = self._model_card() if server == "auto" or max_context is None else None
        self.vllm = server == "vllm" or (server == "auto" and (self._card or {}).get("owned_by") == "vllm")
        self._max_context = max_context
        self._token_prompts = _adds_special_tokens(tokenizer)
        self._warned_no_logprobs = False

    def __repr__(self) -> str:
        return f"OpenAIEngine(base_url={self.base_url!r}, model={self.model!r}, api={self.api!r})"

    # ------------------------------------------------------------------------------------------
    # The Engine protocol

    def count_tokens(self, text: str) -> int:
        """Number of tokens of ``text`` under the judge's tokenizer (no special tokens added)."""
        return len(self._encode(text))

    @property
    def max_context(self) -> int:
        """The server's context length (``max_context``, vLLM's ``max_model_len``, else the tokenizer's)."""
        if self._max_context:
            return self._max_context
        value = (self._card or {}).get("max_model_len")
        if isinstance(value, int) and value > 0:
            return value
        value = getattr(self.tokenizer, "model_max_length", None)
        # HF tokenizers without a limit report a huge sentinel (int(1e30)).
        if isinstance(value, int) and 0 < value < 10**8:
            return value
        # Unknown: no prompt is skipped here, and the server refuses what does not fit.
        return sys.maxsize

    def generate(self, requests: Sequence[GenerationRequest], params: SamplingParams) -> list[Generation]:
        """Generate ``len(req.seeds)`` samples for every request, returned in request order."""
        check_params(params)
        jobs: list[tuple[GenerationRequest, dict[str, Any]]] = []
        for req in requests:
            # Greedy: one request per prompt, every seed shares its text (as in the other engines).
            for seed in req.seeds[:1] if params.greedy else req.seeds:
                jobs.append((req, self._body(req, params, int(seed))))
        path = "/completions" if self.api == "completions" else "/chat/completions"
        answers = self._post_all(path, [body for _, body in jobs])
        gens: list[Generation] = []
        pos = 0
        for req in requests:
            n_out = 1 if params.greedy else len(req.seeds)
            outs = answers[pos : pos + n_out] * (len(req.seeds) if params.greedy else 1)
            pos += n_out
            for index, (seed, answer) in enumerate(zip(req.seeds, outs, strict=True)):
                gens.append(self._to_generation(req, index, int(seed), answer))
        return gens

    def token_logprobs(
        self, prompts: Sequence[Sequence[int]], tokens: Sequence[Sequence[int]]
    ) -> list[list[float] | None]:
        """Log-probability of each of ``tokens[i]`` as the next token after token prompt ``prompts[i]``.

        ``None`` for a prompt whose tokens the server did not return (see the module docstring).
        """
        if len(prompts) != len(tokens):
            raise ValueError(f"{len(prompts)} prompts but {len(tokens)} token lists")
        if not prompts or self.api != "completions":
            return [None] * len(prompts)
        bodies = []
        for ids, wanted in zip(prompts, tokens, strict=True):
            body: dict[str, Any] = {
                "model": self.model,
                # vLLM takes token prompts: the exact ids the other readers read after.
                "prompt": [int(t) for t in ids] if self.vllm else self._prompt_field([int(t) for t in ids]),
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": self.top_logprobs,
            }
            if self.vllm:
                body["logprob_token_ids"] = [int(t) for t in wanted]
                body["return_tokens_as_token_ids"] = True
            bodies.append(body)
        answers = self._post_all("/completions", bodies)
        out: list[list[float] | None] = []
        for answer, wanted in zip(answers, tokens, strict=True):
            out.append(self._read_logprobs(answer, [int(t) for t in wanted]))
        if any(o is None for o in out) and not self._warned_no_logprobs:
            self._warned_no_logprobs = True
            log.warning("%s: %d of %d verdict positions came back without the digits' log-probabilities; "
                        "their probability is left empty", self.base_url, sum(o is None for o in out), len(out))
        return out

    # ------------------------------------------------------------------------------------------
    # Requests

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_field(self, ids: list[int] | None = None, text: str | None = None) -> str | list[int]:
        """The ``prompt`` of a completion: text, or token ids when the tokenizer adds special tokens."""
        if self._token_prompts:
            return ids if ids is not None else self._encode(text or "")
        if text is not None:
            return text
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _body(self, req: GenerationRequest, params: SamplingParams, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_new_tokens, "n": 1}
        if self.api == "completions":
            body["prompt"] = self._prompt_field(text=req.prompt + req.prefill)
            if self.vllm:
                # The text is decoded here from the ids, as the vllm engine does (vLLM's own text of a
                # generation cut inside a multi-byte character loses its last characters).
                body["return_token_ids"] = True
        else:
            if req.messages is None:
                raise ConjError(f"request {req.key}: the chat API needs the request's chat messages")
            body["messages"] = [dict(m) for m in req.messages]
            if req.prefill:
                body["messages"].append({"role": "assistant", "content": req.prefill})
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
        if params.greedy:
            body["temperature"] = 0.0
        else:
            body.update(temperature=params.temperature, top_p=params.top_p, seed=seed)
            if params.top_k > 0:
                body["top_k"] = params.top_k
        if params.repetition_penalty != 1.0:
            body["repetition_penalty"] = params.repetition_penalty
        if params.regex is not None:
            body["structured_outputs"] = {"regex": params.regex}
        return body

    def _to_generation(self, req: GenerationRequest, index: int, seed: int, answer: dict) -> Generation:
        try:
            choice = answer["choices"][0]
            text = choice["text"] if self.api == "completions" else choice["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise ConjError(f"request {req.key}: the server's answer has no completion: {str(answer)[:300]}") from None
        raw = choice.get("finish_reason")
        extra: dict[str, Any] = {}
        reason: FinishReason = "stop" if raw == "stop" else "length"
        if raw not in ("stop", "length"):
            # Anything but a natural stop is recorded as cut off, with the server's reason kept.
            extra["server_finish_reason"] = raw
        usage = answer.get("usage") or {}
        ids = choice.get("token_ids")
        if isinstance(ids, list):
            text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        text = text or ""
        return Generation(
            key=req.key,
            index=index,
            seed=seed,
            text=text,
            finish_reason=reason,
            prompt_tokens=int(usage.get("prompt_tokens") or self.count_tokens(req.prompt + req.prefill)),
            completion_tokens=len(ids) if isinstance(ids, list) else int(usage.get("completion_tokens") or 0),
            extra=extra,
        )

    def _read_logprobs(self, answer: dict, wanted: list[int]) -> list[float] | None:
        try:
            top = answer["choices"][0]["logprobs"]["top_logprobs"][0]
        except (KeyError, IndexError, TypeError):
            return None
        if not isinstance(top, Mapping):
            return None
        keys = [f"token_id:{t}" if self.vllm else self.tokenizer.decode([t], clean_up_tokenization_spaces=False)
                for t in wanted]
        # Matched by text, two distinct tokens must not read the same entry.
        if len(set(keys)) < len(keys) or any(k not in top for k in keys):
            return None
        return [float(top[k]) for k in keys]

    # ------------------------------------------------------------------------------------------
    # HTTP

    def _model_card(self) -> dict | None:
        """This model's entry in ``GET /models`` (None when the server has no such list)."""
        # A server without the list answers with an error status: not vLLM. One that cannot be reached
        # stops here, before any judging.
        listing = self._request("GET", "/models", None, missing_ok=True)
        if not isinstance(listing, Mapping):
            return None
        for card in listing.get("data") or []:
            if isinstance(card, Mapping) and card.get("id") == self.model:
                return dict(card)
        return None

    def _post_all(self, path: str, bodies: list[dict[str, Any]]) -> list[dict]:
        """POST every body (at most ``max_concurrency`` in flight); answers in the bodies' order."""
        if not bodies:
            return []
        if len(bodies) == 1 or self.max_concurrency == 1:
            return [self._request("POST", path, b) for b in bodies]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(bodies))) as pool:
            return list(pool.map(lambda b: self._request("POST", path, b), bodies))

    def _request(self, method: str, path: str, body: dict[str, Any] | None, *, missing_ok: bool = False) -> Any:
        """The JSON answer; ``missing_ok``: None instead of an error for a final non-retried status."""
        url = self.base_url + path
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            req = urllib.request.Request(url, data=data, method=method, headers=self._headers)
            wait = self.backoff * 2**attempt
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as err:
                detail = _error_detail(err)
                if err.code not in _RETRY_STATUS and missing_ok:
                    log.info("%s %s: HTTP %d (%s)", method, url, err.code, detail[:200])
                    return None
                if err.code not in _RETRY_STATUS or attempt == self.max_retries:
                    raise ConjError(f"{method} {url}: HTTP {err.code}: {detail}") from None
                wait = _retry_after(err, wait)
                log.warning("%s %s: HTTP %d (%s); retry %d in %.1fs", method, url, err.code, detail[:200],
                            attempt + 1, wait)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
                if attempt == self.max_retries:
                    raise ConjError(f"{method} {url}: {getattr(err, 'reason', err)} "
                                    f"(after {self.max_retries + 1} tries)") from None
                log.warning("%s %s: %s; retry %d in %.1fs", method, url, err, attempt + 1, wait)
            except json.JSONDecodeError:
                raise ConjError(f"{method} {url}: the server's answer is not JSON") from None
            time.sleep(wait)
        raise AssertionError("unreachable")


def _error_detail(err: urllib.error.HTTPError) -> str:
    try:
        text = err.read().decode("utf-8", "replace")
    except OSError:
        return str(err.reason)
    try:
        payload = json.loads(text)
    except json.JSONDecodeError:
        return text[:500]
    if isinstance(payload, Mapping):
        inner = payload.get("error", payload.get("detail", payload))
        if isinstance(inner, Mapping):
            inner = inner.get("message", inner)
        return str(inner)[:500]
    return text[:500]


def _retry_after(err: urllib.error.HTTPError, default: float) -> float:
    value = err.headers.get("Retry-After") if err.headers else None
    try:
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER) if value is not None else default
    except ValueError:
        return default


def _adds_special_tokens(tokenizer: Any) -> bool:
    """Whether encoding a text adds tokens of the tokenizer's own (a BOS): then prompts go as token ids."""
    probe = "a"
    return list(tokenizer(probe, add_special_tokens=True)["input_ids"]) != list(
        tokenizer(probe, add_special_tokens=False)["input_ids"]
    )
