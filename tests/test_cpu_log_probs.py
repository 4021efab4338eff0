"""The CPU LM-head log-probs against TRL's own ChunkedLogProbFunction: same fields, same gradients."""

from __future__ import annotations

import pytest
import torch
from trl.kernels import ChunkedLogProbFunction

from conj_train.train import cpu_log_probs
from conj_train.train.cpu_log_probs import FIELDS, cpu_chunked_log_probs

ALL = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _inputs(n: int = 70, h: int = 32, v: int = 1000, bias: bool = False, seed: int = 0) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen)
    weight = torch.randn(v, h, generator=gen) * 0.3
    b = torch.randn(v, generator=gen) * 0.1 if bias else None
    targets = torch.randint(0, v, (n,), generator=gen)
    return hidden, weight, b, targets


def _run(fn: str, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
         outputs: tuple[str, ...], autocast: bool, entropy_grad: bool) -> tuple[dict, list]:
    leaves = [x.clone().requires_grad_() for x in (hidden, weight) + ((bias,) if bias is not None else ())]
    h, w, b = leaves[0], leaves[1], leaves[2] if bias is not None else None
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        if fn == "trl":
            # TRL's vocabulary tile of 384 splits the 1,000-token vocabulary in three, as 32768 splits a real one.
            fields = ChunkedLogProbFunction.apply(h, w, b, targets, 1.0, 384, None, 1.0, outputs)
        else:
            fields = cpu_chunked_log_probs(h, w, b, targets, outputs)
    out = dict(zip(FIELDS, fields, strict=True))
    gen = torch.Generator().manual_seed(1)
    loss = (out["log_probs"] * torch.randn(len(targets), generator=gen)).sum()
    if entropy_grad:
        loss = loss + (out["entropy"] * torch.randn(len(targets), generator=gen)).sum()
    loss.backward()
    return out, [x.grad for x in leaves]


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize(("bias", "entropy_grad"), [(False, False), (True, False), (False, True)])
def test_fields_and_gradients_equal_trls_kernel(autocast: bool, bias: bool, entropy_grad: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_log_probs, "TOKEN_CHUNK", 32)  # 70 tokens: three chunks, the last one short
    inputs = _inputs(bias=bias)
    theirs, their_grads = _run("trl", *inputs, ALL, autocast, entropy_grad)
    ours, our_grads = _run("cpu", *inputs, ALL, autocast, entropy_grad)
    for name in ALL:
        assert ours[name].dtype == theirs[name].dtype, name
        if name == "is_top1":
            assert torch.equal(ours[name], theirs[name])
        else:
            torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-5, msg=name)
    for mine, trl in zip(our_grads, their_grads, strict=True):
        assert mine.dtype == trl.dtype
        assert ((mine - trl).norm() / trl.norm()).item() < 1e-5


def test_only_the_requested_fields_are_returned() -> None:
    hidden, weight, _, targets = _inputs()
    out = dict(zip(FIELDS, cpu_chunked_log_probs(hidden, weight, None, targets, ("log_probs", "mean_logits")),
                   strict=True))
    assert out["entropy"] is None and out["is_top1"] is None and out["log_sum_sq_probs"] is None
    assert out["log_probs"].shape == out["mean_logits"].shape == (70,)


def test_is_top1_counts_only_the_first_maximum() -> None:
    # Logits [1, 1, 0] for both tokens: target 0 is the first maximum (top-1), target 1 ties with an
    # earlier token (not top-1), as TRL's rule says.
    hidden = torch.tensor([[1.0], [1.0]])
    weight = torch.tensor([[1.0], [1.0], [0.0]])
    targets = torch.tensor([0, 1])
    ours = cpu_chunked_log_probs(hidden, weight, None, targets, ("log_probs", "is_top1"))[4]
    theirs = ChunkedLogProbFunction.apply(hidden, weight, None, targets, 1.0, 2, None, 1.0,
                                          ("log_probs", "is_top1"))[4]
    assert ours.tolist() == theirs.tolist() == [True, False]
