"""Prefix-shared log-probabilities of DPO pairs: every prompt token is computed once.

A Con-J pair is (judge prompt, chosen judgment, rejected judgment) and the prompt is several times
longer than either judgment. TRL's DPOTrainer runs [prompt + chosen] and [prompt + rejected] as two
rows, so each prompt token is computed twice. Here the chosen rows run causally once, each layer's
prompt keys/values are kept, and the rejected tokens run on top of them ("split" layout):

    pass 1: [p_i + c_i]   -> hidden states h1; each layer's prompt K/V kept
            (one call per distinct row length on CPU: no padding, SDPA's causal fast path;
             elsewhere one right-padded, masked call, as TRL pads)
    pass 2: [r_i] at positions P_i.., keys = kept prompt K/V + own causal keys (explicit 4D mask)

The first rejected token is predicted from the prompt's last hidden state, which pass 1 already
holds. Only judgment positions go through the LM head (TRL's chunked log-prob kernel, so the
per-token fields and the ZeRO-3 head gather are TRL's own). Gradients flow through the kept K/V.

Exactness: pass 1 is TRL's chosen computation; in pass 2 a query sees exactly the keys it sees in
TRL's rejected row (its prompt + its own causal prefix), at the same RoPE positions; other slots
are masked. Only the summation order differs, so results agree to float rounding
(tests/test_prefix.py).

The K/V are handed over by two small cache objects instead of transformers' DynamicCache, passed
with ``use_cache=False`` (attention uses any cache it is given; the model then builds none of its
own and does not warn under gradient checkpointing). Pass 1's cache returns its inputs unchanged
and pass 2's only reads, so each decoder-layer call is a pure function of its arguments. That keeps
them valid under non-reentrant gradient checkpointing, whose backward replays a layer with the same
cache object (a DynamicCache would append twice).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# Attention kernels that accept an explicit 4D mask in pass 2.
ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
# Config fields that change the logits in ways TRL's head handles but this module does not mirror.
_LOGIT_TRANSFORMS = (
    "final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling",
)
# TRL's vocabulary tile for the chunked log-prob kernel (trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE).
_VOCAB_CHUNK = 32768
# Token fields of TRL's FusedCausalLMOutput, in the kernel's return order.
TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


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


@dataclass
class PairLogProbs:
    """Per-pair summed judgment log-probs and the SFT term (mean NLL over all chosen tokens)."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    sft_nll: torch.Tensor


def supports_prefix_sharing(model: Any) -> tuple[bool, str]:
    """Whether ``model`` (a causal LM, PEFT-wrapped or not) can run the split layout.

    Returns ``(True, "")`` or ``(False, one-line reason)``. The check is structural; the trainer
    also compares the first batch against the plain path before relying on it.
    """
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    peft_config = getattr(model, "active_peft_config", None)
    if peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
        return False, "prompt-learning PEFT adds virtual tokens to every row"
    config = getattr(lm, "config", None)
    if config is None or not hasattr(lm, "get_output_embeddings"):
        return False, f"{type(lm).__name__} is not a transformers causal LM"
    if config.get_text_config() is not config:
        return False, f"{type(lm).__name__} is a multimodal model"
    attn = getattr(config, "_attn_implementation", None)
    if attn not in ATTN_IMPLEMENTATIONS:
        return False, f"attn_implementation={attn!r} takes no 4D mask (use one of {ATTN_IMPLEMENTATIONS})"
    layer_types = getattr(config, "layer_types", None) or ["full_attention"]
    if any(t != "full_attention" for t in layer_types) or getattr(config, "use_sliding_window", False):
        return False, "sliding-window or linear-attention layers keep a different cache"
    if getattr(config, "output_router_logits", False):
        return False, "MoE router logits (aux loss) are not collected across two passes"
    if any(getattr(config, name, None) is not None for name in _LOGIT_TRANSFORMS):
        return False, "logit scaling/softcapping is not mirrored by the prefix-shared head"
    backbone = getattr(lm, lm.base_model_prefix, None)
    if backbone is None or backbone is lm:
        return False, f"{type(lm).__name__} has no separate decoder backbone"
    if cache_argument(backbone) is None:
        return False, f"{type(backbone).__name__}.forward takes no `cache` (or `past_key_values`) argument"
    head = lm.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        return False, "no plain LM head weight"
    return True, ""


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


class _PrefixStore:
    """Per-layer prompt keys/values handed from pass 1 to pass 2.

    Pass 1 may run in several row groups (see :func:`judgment_hidden_states`); each group records
    into its own sub-store and pass 2 reads them padded to ``keep`` slots, in batch row order.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}
        self.groups: list[_PrefixStore] = []
        self.order: torch.Tensor | None = None

    def prefix(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's prompt K/V for all rows, ``keep`` slots each."""
        if not self.groups:
            return self.keys[layer_idx], self.values[layer_idx]
        keys = _rows_in_order([g.keys[layer_idx] for g in self.groups], self.keep, self.order)
        values = _rows_in_order([g.values[layer_idx] for g in self.groups], self.keep, self.order)
        return keys, values


def _rows_in_order(parts: list[torch.Tensor], width: int, order: torch.Tensor | None) -> torch.Tensor:
    """Concatenate row groups along dim 0, each right-padded with zeros to ``width`` along dim -2."""
    padded = [F.pad(x, (0, 0, 0, width - x.shape[-2])) if x.shape[-2] < width else x for x in parts]
    out = torch.cat(padded)
    return out if order is None else out[order]


class _RecordCache:
    """Pass-1 cache: returns K/V unchanged (plain causal attention) and remembers the prompt part."""

    is_compileable = False

    def __init__(self, store: _PrefixStore) -> None:
        self.store = store

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the first ``keep`` positions of this layer's K/V; attention uses K/V as is."""
        self.store.keys[layer_idx] = key_states[:, :, : self.store.keep]
        self.store.values[layer_idx] = value_states[:, :, : self.store.keep]
        return key_states, value_states

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """No past tokens: pass 1 starts at position 0."""
        return 0

    def get_query_offset(self, layer_idx: int = 0) -> int:
        """Queries start at position 0."""
        return 0

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """Keys are exactly the queries (plain causal mask)."""
        return query_length, 0


class _ExtendCache(_RecordCache):
    """Pass-2 cache: prepends the stored prompt K/V; never writes, so a replay sees the same state."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys = stored prompt keys followed by this pass's keys."""
        prefix_keys, prefix_values = self.store.prefix(layer_idx)
        return torch.cat([prefix_keys, key_states], dim=-2), torch.cat([prefix_values, value_states], dim=-2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """The stored prompt length."""
        return self.store.keep

    def get_query_offset(self, layer_idx: int = 0) -> int:
        """Queries start after the stored prompt slots."""
        return self.store.keep

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        """Keys = stored prompt slots + queries."""
        return self.store.keep + query_length, 0


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


def _backbone(model: Any) -> Any:
    return getattr(model, model.base_model_prefix)


def cache_argument(backbone: Any) -> str | None:
    """The decoder's name for its cache argument: ``cache`` (transformers >= 5.24) or ``past_key_values``."""
    params = inspect.signature(backbone.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


def _with_cache(backbone: Any, cache: Any) -> dict[str, Any]:
    return {cache_argument(backbone) or "cache": cache}


def _with_checkpointed_cache(backbone: Any) -> list[Any]:
    """Let checkpointed decoder layers keep our cache (see module doc); returns the layers touched."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    touched = []
    for module in backbone.modules():
        own_flag = "_can_checkpoint_with_cache" in vars(module)
        if isinstance(module, GradientCheckpointingLayer) and not own_flag:
            module._can_checkpoint_with_cache = True
            touched.append(module)
    return touched


def uses_reentrant_checkpointing(model: Any) -> bool:
    """True when decoder layers run reentrant gradient checkpointing.

    Reentrant checkpointing runs the layer under no_grad and rebuilds the graph from its positional
    inputs only, so gradients from the rejected tokens into the kept prompt K/V would be lost.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer) and module.gradient_checkpointing:
            func = getattr(module, "_gradient_checkpointing_func", None)
            keywords = getattr(func, "keywords", {}) or {}
            return bool(keywords.get("use_reentrant", True))
    return False


def _shards_parameters(model: Any) -> bool:
    """ZeRO-3/FSDP gather parameters per module call: every process must make the same calls."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled() or any(type(m).__name__.startswith("FSDP") for m in model.modules())


def _first_pass(backbone: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                layout: PairLayout, store: _PrefixStore, grouped: bool) -> torch.Tensor:
    """Pass 1 over the prompt + chosen rows; returns ``[B, max_first - 1, H]`` (padding rows zero)."""
    n = layout.n_pairs
    # The last judgment token is only a label, never an input.
    width = layout.max_first - 1
    if not grouped or not layout.first_padded:
        # Without padding, no mask keeps SDPA's causal fast path.
        mask = attention_mask[:n, :width] if layout.first_padded and attention_mask is not None else None
        return backbone(input_ids=input_ids[:n, :width], attention_mask=mask,
                        **_with_cache(backbone, _RecordCache(store)), use_cache=False).last_hidden_state
    # One call per distinct row length: no padding, no mask, causal fast path for every row.
    by_length: dict[int, list[int]] = {}
    for row, length in enumerate(layout.first_lens):
        by_length.setdefault(length, []).append(row)
    outputs, rows = [], []
    for length, members in sorted(by_length.items()):
        sub = _PrefixStore(store.keep)
        index = torch.tensor(members, device=input_ids.device)
        hidden = backbone(input_ids=input_ids[index, : length - 1], **_with_cache(backbone, _RecordCache(sub)),
                          use_cache=False).last_hidden_state
        store.groups.append(sub)
        outputs.append(hidden)
        rows.extend(members)
    store.order = torch.argsort(torch.tensor(rows, device=input_ids.device))
    return _rows_in_order(outputs, width, store.order)


def judgment_hidden_states(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, layout: PairLayout,
    group_first_pass: bool | None = None,
) -> torch.Tensor:
    """Final hidden states that predict each judgment token, in TRL's order, computed with the split.

    Returns ``[N, H]``: for each chosen row then each rejected row, the states at the positions
    whose next-token label is not -100 (row-major), N = sum of all judgment lengths.

    ``group_first_pass`` runs pass 1 once per distinct row length instead of one padded, masked
    call: no padded tokens and SDPA's causal fast path, but more, smaller calls. Default: on CPU
    (where one row already keeps the matmuls busy) unless parameters are sharded (ZeRO-3/FSDP
    need the same number of calls on every process).
    """
    backbone = _backbone(model)
    n = layout.n_pairs
    device = input_ids.device
    if group_first_pass is None:
        group_first_pass = device.type == "cpu" and not _shards_parameters(model)
    store = _PrefixStore(layout.max_prompt)
    touched = _with_checkpointed_cache(backbone)
    try:
        h1 = _first_pass(backbone, input_ids, attention_mask, layout, store, group_first_pass)
        n_query = layout.max_rejected - 1
        last_prompt = h1[torch.arange(n, device=device), layout.prompt_lens - 1]
        if n_query > 0:
            offsets = torch.arange(n_query, device=device)
            cols = (layout.prompt_lens[:, None] + offsets[None, :]).clamp(max=input_ids.shape[1] - 1)
            second_ids = input_ids[n:].gather(1, cols)
            attn = model.config._attn_implementation
            mask2 = rejected_attention_mask(layout, n_query, attn, h1.dtype)
            h2 = backbone(input_ids=second_ids, attention_mask=mask2, position_ids=cols,
                          **_with_cache(backbone, _ExtendCache(store)), use_cache=False).last_hidden_state
            rejected_states = torch.cat([last_prompt[:, None], h2], dim=1)
        else:
            rejected_states = last_prompt[:, None]
    finally:
        for module in touched:
            del module._can_checkpoint_with_cache
    pos1 = torch.arange(h1.shape[1], device=device)
    start = layout.prompt_lens[:, None] - 1
    chosen_sel = (pos1[None, :] >= start) & (pos1[None, :] < start + layout.chosen_lens[:, None])
    pos2 = torch.arange(rejected_states.shape[1], device=device)
    rejected_sel = pos2[None, :] < layout.rejected_lens[:, None]
    return torch.cat([h1[chosen_sel], rejected_states[rejected_sel]])


def two_row_hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                          labels: torch.Tensor) -> torch.Tensor:
    """The same ``[N, H]`` states from TRL's two-row layout (the fair baseline; no sharing)."""
    hidden = _backbone(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return hidden.last_hidden_state[:, :-1][labels[:, 1:] != -100]


def head_token_outputs(
    model: Any, hidden: torch.Tensor, targets: torch.Tensor, outputs: tuple[str, ...] = ("log_probs",),
    head: str = "chunked",
) -> dict[str, torch.Tensor | None]:
    """LM head + log-softmax on ``[N, H]`` states only; returns TOKEN_FIELDS -> ``[N]`` (or None).

    ``head="chunked"`` is TRL's kernel (fp32 statistics, ZeRO-3 head gather, entropy and metric
    fields). ``head="torch"`` is a plain projection + log_softmax in the model dtype, for float64
    checks; it yields only ``log_probs``.
    """
    lm_head = model.get_output_embeddings()
    weight, bias = lm_head.weight, lm_head.bias
    hidden = hidden.to(weight.device)
    targets = targets.to(weight.device)
    if head == "torch":
        if set(outputs) - {"log_probs"}:
            raise ValueError(f"head='torch' computes only log_probs, not {sorted(set(outputs))}")
        logits = F.linear(hidden, weight, bias)
        log_probs = logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)
        return {"log_probs": log_probs, "entropy": None, "log_sum_sq_probs": None, "mean_logits": None,
                "is_top1": None}
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import maybe_gather_lm_head_ctx

    with maybe_gather_lm_head_ctx(weight, bias):
        fields = ChunkedLogProbFunction.apply(hidden, weight, bias, targets, 1.0, _VOCAB_CHUNK, None, 1.0,
                                              tuple(outputs))
    return dict(zip(TOKEN_FIELDS, fields, strict=True))


def judgment_token_outputs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    outputs: tuple[str, ...] = ("log_probs",),
    *,
    share_prefix: bool = True,
    layout: PairLayout | None = None,
    head: str = "chunked",
    group_first_pass: bool | None = None,
) -> dict[str, torch.Tensor | None]:
    """Per-token fields in TRL's layout: ``[2B, T-1]`` tensors, zero where ``labels[:, 1:]`` is -100.

    The drop-in equivalent of ``model(input_ids, attention_mask, labels=labels,
    fused_lm_head=True)``'s token fields, but only judgment positions reach the LM head, and with
    ``share_prefix`` each prompt is computed once. ``model`` is the causal LM (not a PEFT wrapper).
    """
    mask = labels[:, 1:] != -100
    targets = labels[:, 1:][mask]
    if share_prefix:
        layout = layout if layout is not None else pair_layout(input_ids, attention_mask, labels)
        hidden = judgment_hidden_states(model, input_ids, attention_mask, layout, group_first_pass)
    else:
        hidden = two_row_hidden_states(model, input_ids, attention_mask, labels)
    fields = head_token_outputs(model, hidden, targets, outputs, head)
    # masked_scatter keeps an all-masked batch connected to the graph (a differentiable zero).
    return {name: None if x is None else x.new_zeros(mask.shape).masked_scatter(mask.to(x.device), x)
            for name, x in fields.items()}


def pair_log_probs(model: Any, batch: dict[str, torch.Tensor], *, share_prefix: bool = True,
                   head: str = "chunked", group_first_pass: bool | None = None) -> PairLogProbs:
    """Summed chosen/rejected judgment log-probs per pair and the SFT NLL for a TRL-collated batch.

    ``batch`` has ``input_ids``, ``attention_mask`` and ``completion_mask`` as
    ``trl.trainer.dpo_trainer.DataCollatorForPreference`` returns them. The SFT term is TRL's: the
    mean NLL over all chosen judgment tokens of the batch.
    """
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    fields = judgment_token_outputs(model, batch["input_ids"], batch.get("attention_mask"), labels,
                                    share_prefix=share_prefix, head=head, group_first_pass=group_first_pass)
    per_token = fields["log_probs"]
    logps = per_token.sum(1)
    chosen, rejected = logps.chunk(2)
    chosen_mask = batch["completion_mask"][:, 1:].chunk(2)[0].bool()
    sft = -per_token.chunk(2)[0][chosen_mask.to(per_token.device)].mean()
    return PairLogProbs(chosen=chosen, rejected=rejected, sft_nll=sft)


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
