"""The logits pipeline shared by the engines: settings checks, repetition penalty, temperature,
top-k / top-p and the seeded inverse-CDF draw.

Kept apart from the decode loop (:mod:`conj_train.engines.hf`) because these are pure tensor
functions with transformers' semantics, tested on their own against transformers' warpers, and
because the vLLM engine runs :func:`check_params` too so both engines accept the same settings.
"""

from __future__ import annotations

from typing import Any

from conj_train.engines.base import SamplingParams
from conj_train.errors import ConjError

# Extra scores top-k reads so that a run of ties at the k-th score usually ends inside them.
TIE_WINDOW = 64


def check_params(params: SamplingParams) -> None:
    """Reject decoding settings that transformers' processors would reject (or silently misuse)."""
    if params.max_new_tokens < 1:
        raise ConjError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
    if not params.repetition_penalty > 0:
        raise ConjError(f"repetition_penalty must be > 0, got {params.repetition_penalty}")
    if params.greedy:
        return
    if not params.temperature > 0:
        raise ConjError(f"temperature must be > 0 when sampling (use greedy), got {params.temperature}")
    if not 0 < params.top_p <= 1:
        raise ConjError(f"top_p must be in (0, 1], got {params.top_p}")
    if params.top_k < 0:
        raise ConjError(f"top_k must be >= 0 (0 disables it), got {params.top_k}")


def penalize(logits: Any, seen: Any, penalty: float) -> Any:
    """Repetition penalty as transformers applies it: divide positive / multiply negative logits of
    the tokens marked in ``seen`` (prompt + generated so far, per row)."""
    import torch

    if penalty == 1.0:
        return logits
    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def token_distribution(scores: Any, params: SamplingParams, tie_window: int = TIE_WINDOW) -> tuple[Any, Any]:
    """Temperature, top-k and top-p as ``generate`` applies them, in that order, to penalized scores.

    Returns ``(ids, weights)``: the candidate token ids ``[rows, m]`` (None: the whole vocabulary in id
    order) and weights proportional to their probabilities, zero for candidates top-p removed. With
    top-k on, only the best ``k + tie_window`` scores are softmaxed and sorted, which makes top-p cheap
    on large vocabularies; the distribution is that of transformers' warpers up to float rounding (and,
    for tied scores at the top-p boundary, up to which tie is dropped).

    Ties at the k-th score (common with bf16 logits): transformers keeps every tied token. When the
    whole run of ties fits in the window, the candidates are the window's, laid out in the order the
    full-vocabulary path gives them (ascending score, ties by token id; id order without top-p), so a
    draw picks the same token as that path; only a tie run longer than the window takes the sort over
    the whole vocabulary.
    """
    import torch

    if params.temperature != 1.0:
        scores = scores / params.temperature
    vocab = scores.shape[-1]
    ids = None
    k = min(params.top_k, vocab)
    if 0 < k < vocab:
        vals, ids = torch.topk(scores, min(k + 1 + tie_window, vocab))
        kth = vals[:, k - 1 : k]
        if not bool((vals[:, k : k + 1] == kth).any()):
            scores, ids = vals[:, :k].flip(-1), ids[:, :k].flip(-1)
        elif vals.shape[-1] < vocab and bool((vals[:, -1:] == kth).any()):
            # A tie run may go on past the window: mask the whole vocabulary.
            scores = scores.masked_fill(scores < kth, -float("inf"))
            ids = None
        else:
            # Every tie is in the window: lay it out as the whole-vocabulary path would (id order, then
            # a stable ascending sort when top-p follows), masked tokens carrying zero weight.
            ids, by_id = ids.sort(dim=-1)
            vals = vals.gather(1, by_id)
            scores = vals.masked_fill(vals < kth, -float("inf"))
            if params.top_p < 1.0:
                scores, by_score = torch.sort(scores, descending=False, stable=True)
                ids = ids.gather(1, by_score)
                return ids, _top_p_weights(scores, params.top_p)
    if params.top_p < 1.0:
        if ids is None:
            scores, ids = torch.sort(scores, descending=False, stable=True)
        return ids, _top_p_weights(scores, params.top_p)
    return ids, scores.softmax(dim=-1)


def _top_p_weights(ascending: Any, top_p: float) -> Any:
    """Softmax of scores sorted ascending, with the tokens outside the top-p nucleus set to zero."""
    probs = ascending.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) <= (1 - top_p)
    drop[..., -1:] = False
    return probs.masked_fill(drop, 0.0)


def sample(ids: Any, probs: Any, uniforms: Any) -> Any:
    """One inverse-CDF draw per row: ``uniforms[row]`` in [0, 1) picks a candidate in proportion to its
    weight in ``probs``."""
    import torch

    cdf = probs.cumsum(dim=-1)
    target = (uniforms * cdf[:, -1]).unsqueeze(-1)
    # right=True never lands on a zero-probability candidate; the clamp absorbs u * total rounding up.
    pick = torch.searchsorted(cdf, target, right=True).clamp_(max=probs.shape[-1] - 1)
    return pick.squeeze(-1) if ids is None else ids.gather(1, pick).squeeze(-1)


def next_tokens(logits: Any, seen: Any, params: SamplingParams, uniforms: Any | None) -> Any:
    """The next token of every row: penalized argmax when greedy, else a draw with ``uniforms``."""
    scores = penalize(logits, seen, params.repetition_penalty)
    if params.greedy:
        return scores.argmax(dim=-1)
    return sample(*token_distribution(scores, params), uniforms)
