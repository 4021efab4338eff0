"""``PrefixSharedDPOTrainer``: TRL 1.16's DPOTrainer with prefix-shared judgment log-probs.

TRL computes every log-prob through one call, ``model(input_ids, attention_mask, labels=labels,
fused_lm_head=True)``, for the policy, the reference (a separate model, or the PEFT model with its
adapter disabled) and the precomputed reference log-probs. ``add_fused_lm_head`` installs that call
as the causal LM's ``forward``; this trainer wraps it once more, so the same call returns the same
per-token fields computed by :mod:`conj_train.train.prefix`. Everything after it is TRL's code:
loss types and weights (sigmoid + sft ...), metrics, precompute, LoRA, DeepSpeed. Staying inside the
model's forward also keeps DDP's and ZeRO-3's hooks armed, like TRL's own head.

A batch that cannot share (e.g. ``keep_end`` truncation cut chosen and rejected prompts
differently) goes through TRL's path; whole-run conditions (model type, attention kernel,
reentrant checkpointing) switch sharing off with one logged line. Under several processes the
decision is all-reduced, so ranks never run different numbers of forward passes (ZeRO-3 gathers
parameters per module call and would hang). The first shared batch of each model is compared with
the two-row layout (no grad, eval mode); a mismatch switches sharing off for that model.

``train_sampling_strategy="group_by_length"`` works here (TRL's own trainer fails on it: its
dataset has no ``input_ids``): pairs are grouped by ``P + max(C, R)``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl import DPOTrainer
from trl.trainer.utils import FusedCausalLMOutput

from conj_train.train.prefix import judgment_token_outputs, supports_prefix_sharing
from conj_train.train.prefix_cache import uses_reentrant_checkpointing
from conj_train.train.prefix_layout import LayoutError, pair_layout

logger = logging.getLogger(__name__)

# Keyword arguments of TRL's fused call that the split layout handles (PEFT adds the None ones).
_HANDLED_KWARGS = {"input_ids", "attention_mask", "use_cache", "num_items_in_batch"}
POLICY_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")
# Largest per-token |log p| difference to the two-row layout accepted by the first-batch check (the
# kernel's log-probs are float32 whatever the model dtype, so the model dtype picks the tolerance).
VERIFY_TOLERANCE = {torch.float64: 1e-4, torch.float32: 1e-3}
HALF_MEAN_TOLERANCE = 0.05


@dataclass
class PrefixStats:
    """How often one model's fused calls took the shared path, and why they did not."""

    shared: int = 0
    fallback: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


@dataclass
class _ForwardState:
    outputs: tuple[str, ...]
    share_prefix: bool
    verify: bool
    note: Callable[[str], None]
    # The accelerator's mixed-precision context. accelerate puts autocast around the model's own
    # forward (the one this wrapper replaces for shared calls), so the shared path enters it itself;
    # otherwise a bf16 run would score the reference model in fp32 while TRL's path uses bf16. The
    # first-batch check runs with autocast off, at the weights' dtype.
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    enabled: bool = True
    verified: bool = False
    stats: PrefixStats = field(default_factory=PrefixStats)


def _all_ranks(ok: bool, device: torch.device) -> bool:
    """True only if every process says ok (one scalar all-reduce when distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return ok
    flag = torch.tensor([1 if ok else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _unsupported_call(args: tuple, kwargs: dict[str, Any], labels: torch.Tensor | None) -> str | None:
    if args or labels is None or kwargs.get("input_ids") is None:
        return "call without input_ids/labels keywords"
    extra = sorted(k for k, v in kwargs.items()
                   if k not in _HANDLED_KWARGS and v is not None and v is not False)
    return f"unsupported forward arguments {extra}" if extra else None


def _close_to_plain(shared: torch.Tensor, plain: torch.Tensor, mask: torch.Tensor,
                    dtype: torch.dtype) -> tuple[bool, float]:
    diff = (shared.double() - plain.double()).abs()[mask]
    if diff.numel() == 0:
        return True, 0.0
    tol = VERIFY_TOLERANCE.get(dtype)
    if tol is None:
        value = float(diff.mean())
        return value <= HALF_MEAN_TOLERANCE, value
    value = float(diff.max())
    return value <= tol, value


def install_prefix_forward(lm: Any, state: _ForwardState) -> bool:
    """Wrap the fused forward TRL installed on causal LM ``lm``; False if already wrapped."""
    if hasattr(lm, "_conj_prefix_state"):
        return False
    trl_forward = lm.forward

    @functools.wraps(type(lm).forward)
    def forward(self: Any, *args: Any, fused_lm_head: bool = False, labels: torch.Tensor | None = None,
                **kwargs: Any) -> Any:
        def plain() -> Any:
            return trl_forward(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)

        if not fused_lm_head or not state.enabled:
            return plain()
        reason = _unsupported_call(args, kwargs, labels)
        layout = None
        if reason is None:
            try:
                layout = pair_layout(kwargs["input_ids"], kwargs.get("attention_mask"), labels)
            except LayoutError as err:
                reason = str(err)
        training = self.training and torch.is_grad_enabled()
        if reason is None and training and uses_reentrant_checkpointing(self):
            reason = "reentrant gradient checkpointing would drop the prompt gradients"
            state.enabled = False
        device = kwargs["input_ids"].device if kwargs.get("input_ids") is not None else labels.device
        if not _all_ranks(reason is None, device):
            reason = reason or "another process's batch cannot share its prompt"
        if reason is None and state.verify and state.share_prefix and not state.verified:
            # The check is of the layout, not of the precision: at the weights' dtype, autocast off
            # (two bf16 computations of a 30-layer model differ by ~0.15 nat per token on their own).
            with torch.autocast(device.type, enabled=False):
                reason = _verify(self, state, kwargs, labels, layout, device)
        if reason is not None:
            state.stats.fallback += 1
            state.stats.reasons[reason] = state.stats.reasons.get(reason, 0) + 1
            if state.stats.reasons[reason] == 1:
                state.note(f"prefix sharing: plain TRL path for {type(self).__name__} ({reason})")
            return plain()
        state.stats.shared += 1
        with state.autocast():
            fields = judgment_token_outputs(self, kwargs["input_ids"], kwargs.get("attention_mask"), labels,
                                            state.outputs, share_prefix=state.share_prefix, layout=layout)
        mask = labels[:, 1:] != -100
        num_items = kwargs.get("num_items_in_batch")
        denominator = mask.sum().clamp(min=1) if num_items is None else num_items
        return FusedCausalLMOutput(loss=-fields["log_probs"].sum() / denominator, label_mask=mask, **fields)

    lm.forward = types.MethodType(forward, lm)
    lm._conj_prefix_state = state
    return True


def _verify(lm: Any, state: _ForwardState, kwargs: dict[str, Any], labels: torch.Tensor, layout: Any,
            device: torch.device) -> str | None:
    """Compare the split with the two-row layout on this batch once; switch sharing off on a mismatch.

    The two-row side is TRL's backbone call with the head only at judgment positions (what TRL's
    head does on CUDA), so the check costs no full-vocabulary pass over the prompts.
    """
    was_training = lm.training
    lm.eval()
    try:
        with torch.no_grad():
            args = (lm, kwargs["input_ids"], kwargs.get("attention_mask"), labels, ("log_probs",))
            shared = judgment_token_outputs(*args, share_prefix=True, layout=layout)["log_probs"]
            plain = judgment_token_outputs(*args, share_prefix=False)["log_probs"]
    finally:
        lm.train(was_training)
    mask = (labels[:, 1:] != -100).to(plain.device)
    ok, value = _close_to_plain(shared, plain, mask, lm.get_output_embeddings().weight.dtype)
    state.verified = True
    if _all_ranks(ok, device):
        return None
    state.enabled = False
    return f"first batch differs from the two-row layout by {value:.3g} per token"


class PrefixSharedDPOTrainer(DPOTrainer):
    """DPOTrainer whose chosen/rejected log-probs (and so the sft term) come from the split layout.

    Same constructor as ``trl.DPOTrainer`` plus ``prefix_sharing`` (default: ``args.prefix_sharing``
    if the config has that field, else True; False gives TRL's computation exactly) and
    ``verify_prefix_sharing`` (compare the first shared batch of each model with the two-row
    layout). ``prefix_sharing_stats()`` tells how many fused calls were shared, and why not.

    Falls back to TRL's path, with one logged line each: for the whole run when
    :func:`~conj_train.train.prefix.supports_prefix_sharing` says no (attention other than
    sdpa/eager, sliding-window/hybrid layers, MoE router logits, logit scaling/softcapping,
    multimodal or prompt-learning PEFT), under reentrant gradient checkpointing (TRL forces it for
    PEFT + ZeRO-3 with gradient checkpointing), or when the first-batch check fails; per batch when
    the batch is not (chosen; rejected) rows sharing a prompt (``keep_end`` truncation) or the call
    carries other arguments (``shift_labels``, router logits).
    """

    # The benchmark's two-row baseline subclass sets this False (same trainer, no sharing).
    share_prefix = True

    def __init__(self, *args: Any, prefix_sharing: bool | None = None, verify_prefix_sharing: bool = True,
                 **kwargs: Any) -> None:
        config = kwargs.get("args", args[2] if len(args) > 2 else None)
        if prefix_sharing is None:
            prefix_sharing = bool(getattr(config, "prefix_sharing", True))
        self._prefix_requested = prefix_sharing
        self._verify_prefix = verify_prefix_sharing
        self._prefix_states: dict[str, _ForwardState] = {}
        super().__init__(*args, **kwargs)
        self._install_prefix_forwards()

    def _note(self, message: str) -> None:
        if self.accelerator.is_main_process:
            logger.warning(message)

    def _policy_outputs(self) -> tuple[str, ...]:
        return (*POLICY_OUTPUTS, "log_sum_sq_probs") if self.use_weighting else POLICY_OUTPUTS

    def _install_on(self, name: str, model: Any, outputs: tuple[str, ...]) -> None:
        if name in self._prefix_states or model is None:
            return
        ok, reason = supports_prefix_sharing(model)
        if not ok:
            self._note(f"prefix sharing off for the {name} model: {reason}; using TRL's two-row path")
            return
        lm = model.get_base_model() if is_peft_model(model) else model
        state = _ForwardState(outputs=outputs, share_prefix=self.share_prefix, verify=self._verify_prefix,
                              note=self._note, autocast=self.accelerator.autocast)
        if install_prefix_forward(lm, state):
            self._prefix_states[name] = state

    def _install_prefix_forwards(self) -> None:
        if not self._prefix_requested:
            return
        self._install_on("policy", self.model, self._policy_outputs())
        if self.ref_model is not None:
            self._install_on("reference", self.accelerator.unwrap_model(self.ref_model), ("log_probs",))

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        # Runs inside DPOTrainer.__init__, after TRL added its fused head: install first.
        self._install_prefix_forwards()
        return super()._precompute_ref_logps(dataset, name, batch_size)

    def prefix_sharing_stats(self) -> dict[str, PrefixStats]:
        """Shared/fallback call counts per model ("policy", "reference")."""
        return {name: state.stats for name, state in self._prefix_states.items()}

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or not _has_pair_columns(dataset):
            return super()._get_train_sampler(train_dataset)
        from transformers.trainer_pt_utils import LengthGroupedSampler

        return LengthGroupedSampler(self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                    lengths=pair_lengths(dataset))


def _has_pair_columns(dataset: Any) -> bool:
    names = getattr(dataset, "column_names", None) or []
    return {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(names)


def pair_lengths(dataset: Any, batch_size: int = 8192) -> list[int]:
    """``len(prompt) + max(len(chosen), len(rejected))`` per row of a tokenized DPO dataset.

    Read through Arrow list lengths, so token ids never become Python objects.
    """
    import pyarrow.compute as pc

    columns = dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]).with_format("arrow")
    lengths: list[int] = []
    for table in columns.iter(batch_size=batch_size):
        p, c, r = (pc.list_value_length(table[name]) for name in ("prompt_ids", "chosen_ids", "rejected_ids"))
        lengths.extend(pc.add(p, pc.max_element_wise(c, r)).to_pylist())
    return lengths
