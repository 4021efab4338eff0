"""The split layout of a TRL-collated DPO batch: where prompt and judgments sit, the pass-2
attention mask over the kept prompt keys, and the padding share of each layout.

Used by :mod:`conj_train.train.prefix`, whose docstring describes the two passes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class LayoutError(ValueError):
    """A batch that is not (chosen rows; rejected rows) sharing a prompt, with the reason."""


@dataclass(frozen=True)
class PairLayout:
    """Where prompt and judgments sit in a TRL-collated batch of ``n_pairs`` pairs.

    Rows ``i`` and ``n_pairs + i`` are the chosen and rejected sequence of pair ``i``: prompt tokens
    ``[0, P_i)``, then the judgment, then right padding. Tensors are on the batch's device;
    ``first_lens`` (``P_i + C_i``) and the ``max_*`` fields are host ints for shapes.
    """

    n_pairs: int
    prompt_lens: torch.Tensor
    chosen_lens: torch.Tensor
    rejected_lens: torch.Tensor
    first_lens: tuple[int, ...]
    max_prompt: int
    max_rejected: int

    @property
    def max_first(self) -> int:
        """Longest prompt + chosen row."""
        return max(self.first_lens)

    @property
    def first_padded(self) -> bool:
        """Whether the prompt + chosen rows differ in length (so pass 1 pads)."""
        return len(set(self.first_lens)) > 1


def pair_layout(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor
) -> PairLayout:
    """Read the pair layout of a TRL-collated batch; raise :class:`LayoutError` if it is not one.

    ``labels`` is ``input_ids`` with ``-100`` outside the judgments (what DPOTrainer passes to the
    model). Checks: rows come in (chosen; rejected) halves, every row is prompt + judgment + right
    padding, both rows of a pair start with the same non-empty prompt, and every judgment has a
    token. One host sync.
    """
    rows, width = input_ids.shape
    if rows % 2 or rows == 0:
        raise LayoutError(f"{rows} rows, expected chosen and rejected halves")
    n = rows // 2
    pos = torch.arange(width, device=input_ids.device)
    judged = labels != -100
    lens = judged.sum(1)
    starts = judged.int().argmax(1)
    attended = torch.full_like(lens, width) if attention_mask is None else attention_mask.sum(1)
    p_chosen = starts[:n]
    checks = {
        "empty prompt or empty judgment": (lens > 0).all() & (starts > 0).all(),
        "attention mask is not right padding": attention_mask is None
        or (attention_mask.bool() == (pos < attended[:, None])).all(),
        "judgment is not one contiguous span": (judged == ((pos >= starts[:, None])
                                                          & (pos < (starts + lens)[:, None]))).all(),
        "judgment does not end the row": ((starts + lens) == attended).all(),
        "chosen and rejected rows do not share the prompt": (p_chosen == starts[n:]).all()
        & ((input_ids[:n] == input_ids[n:]) | (pos >= p_chosen[:, None])).all(),
    }
    first = p_chosen + lens[:n]
    # One host sync for the checks and the shape numbers.
    flags = torch.stack([torch.as_tensor(v, device=input_ids.device) for v in checks.values()]).long()
    sizes = torch.stack([p_chosen.amax(), lens[n:].amax()])
    values = torch.cat([flags, sizes, first]).tolist()
    for name, ok in zip(checks, values, strict=False):
        if not ok:
            raise LayoutError(name)
    max_prompt, max_rejected = values[len(checks):len(checks) + 2]
    return PairLayout(
        n_pairs=n,
        prompt_lens=p_chosen,
        chosen_lens=lens[:n],
        rejected_lens=lens[n:],
        first_lens=tuple(values[len(checks) + 2:]),
        max_prompt=max_prompt,
        max_rejected=max_rejected,
    )


def rejected_attention_mask(layout: PairLayout, n_query: int, attn: str, dtype: torch.dtype) -> torch.Tensor:
    """Pass-2 mask ``[B, 1, n_query, max_prompt + n_query]``: own prompt slots + causal own tokens.

    Slots ``P_i..max_prompt`` of row ``i`` hold its chosen tokens or padding and are hidden. SDPA
    gets a bool mask; eager gets an additive mask in the model dtype, because eager adds the mask
    to the scores (a bool mask would add 1/0) and torch's CPU SDPA silently misreads float masks of
    another dtype than q/k/v.
    """
    device = layout.prompt_lens.device
    keep = layout.max_prompt
    kv = torch.arange(keep + n_query, device=device)
    q = torch.arange(n_query, device=device)
    own = (kv[None, :] >= keep) & (kv[None, :] - keep <= q[:, None])
    prompt = kv[None, :] < layout.prompt_lens[:, None]
    allowed = own[None, :, :] | prompt[:, None, :]
    allowed = allowed[:, None]
    if attn == "eager":
        zeros = torch.zeros((), dtype=dtype, device=device)
        return torch.where(allowed, zeros, torch.finfo(dtype).min)
    return allowed


def padding_share(batches: list[list[tuple[int, int, int]]], layout: str = "two_row") -> float:
    """Fraction of computed token slots that are padding, over batches of (P, C, R) length triples.

    ``"two_row"``: TRL's 2B rows, each padded to the batch's longest ``P + max(C, R)``; real tokens
    are ``2P + C + R`` per pair. ``"split"``: pass-1 rows padded to the longest ``P + C`` and pass-2
    rows to the longest ``R``; real tokens are ``P + C + R`` per pair.
    """
    real = slots = 0
    for batch in batches:
        if layout == "two_row":
            slots += 2 * len(batch) * max(p + max(c, r) for p, c, r in batch)
            real += sum(2 * p + c + r for p, c, r in batch)
        elif layout == "split":
            slots += len(batch) * (max(p + c for p, c, _ in batch) + max(r for _, _, r in batch))
            real += sum(p + c + r for p, c, r in batch)
        else:
            raise ValueError(f"unknown layout {layout!r}")
    return 1.0 - real / slots if slots else 0.0
