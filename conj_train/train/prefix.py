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
per-token fields and the ZeRO-3 head gather are TRL's own; on CPU the same computation in CPU-sized
passes, :mod:`conj_train.train.cpu_log_probs`). Gradients flow through the kept K/V.

Exactness: pass 1 is TRL's chosen computation; in pass 2 a query sees exactly the keys it sees in
TRL's rejected row (its prompt + its own causal prefix), at the same RoPE positions; other slots
are masked. Only the summation order differs, so results agree to float rounding
(tests/test_prefix.py).

The batch layout and the pass-2 mask are :mod:`conj_train.train.prefix_layout`; the cache objects
that hand the prompt K/V from pass 1 to pass 2 are :mod:`conj_train.train.prefix_cache`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from conj_train.train.cpu_log_probs import cpu_chunked_log_probs
from conj_train.train.prefix_cache import (
    ExtendCache,
    PrefixStore,
    RecordCache,
    cache_argument,
    rows_in_order,
    with_cache,
    with_checkpointed_cache,
)
from conj_train.train.prefix_layout import PairLayout, pair_layout, rejected_attention_mask

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


def _backbone(model: Any) -> Any:
    return getattr(model, model.base_model_prefix)


def _shards_parameters(model: Any) -> bool:
    """ZeRO-3/FSDP gather parameters per module call: every process must make the same calls."""
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled() or any(type(m).__name__.startswith("FSDP") for m in model.modules())


def _first_pass(backbone: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                layout: PairLayout, store: PrefixStore, grouped: bool) -> torch.Tensor:
    """Pass 1 over the prompt + chosen rows; returns ``[B, max_first - 1, H]`` (padding rows zero)."""
    n = layout.n_pairs
    # The last judgment token is only a label, never an input.
    width = layout.max_first - 1
    if not grouped or not layout.first_padded:
        # Without padding, no mask keeps SDPA's causal fast path.
        mask = attention_mask[:n, :width] if layout.first_padded and attention_mask is not None else None
        return backbone(input_ids=input_ids[:n, :width], attention_mask=mask,
                        **with_cache(backbone, RecordCache(store)), use_cache=False).last_hidden_state
    # One call per distinct row length: no padding, no mask, causal fast path for every row.
    by_length: dict[int, list[int]] = {}
    for row, length in enumerate(layout.first_lens):
        by_length.setdefault(length, []).append(row)
    outputs, rows = [], []
    for length, members in sorted(by_length.items()):
        sub = PrefixStore(store.keep)
        index = torch.tensor(members, device=input_ids.device)
        hidden = backbone(input_ids=input_ids[index, : length - 1], **with_cache(backbone, RecordCache(sub)),
                          use_cache=False).last_hidden_state
        store.groups.append(sub)
        outputs.append(hidden)
        rows.extend(members)
    store.order = torch.argsort(torch.tensor(rows, device=input_ids.device))
    return rows_in_order(outputs, width, store.order)


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
    store = PrefixStore(layout.max_prompt)
    touched = with_checkpointed_cache(backbone)
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
                          **with_cache(backbone, ExtendCache(store)), use_cache=False).last_hidden_state
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
    fields); on CPU its counterpart with CPU-sized passes (:mod:`conj_train.train.cpu_log_probs`,
    same fields and precision). ``head="torch"`` is a plain projection + log_softmax in the model dtype, for float64
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
        if hidden.device.type == "cpu":
            fields = cpu_chunked_log_probs(hidden, weight, bias, targets, tuple(outputs))
        else:
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
