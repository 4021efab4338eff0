"""The machine's own limits, measured in the benchmark's process: GEMM FLOP/s and copy bandwidth.

A ratio against a baseline says nothing about how far from the hardware a stage is; these give the
denominator for "share of the machine's limit" lines (model FLOP/s over GEMM FLOP/s at the same
dtype and thread count; decode tokens/s over the bytes-per-step bound).
"""

from __future__ import annotations

import statistics
import time
from typing import Any


def gemm_flops(dtype: Any, size: int = 1024, repeats: int = 5, device: str = "cpu",
               clock: Any = time.perf_counter) -> float:
    """Median FLOP/s of a ``size``^3 matmul at ``dtype`` on the current torch thread count.

    ``clock``: ``time.process_time`` measures CPU seconds (with one thread, steady under other load).
    """
    import torch

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.matmul(a, b)  # warm-up: thread pool, kernel selection
    times = []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = clock()
        torch.matmul(a, b)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(clock() - start)
    return 2 * size**3 / statistics.median(times)


def copy_bandwidth(mbytes: int = 256, repeats: int = 5, device: str = "cpu") -> float:
    """Median bytes/s of reading one buffer and writing another (counted as read + write bytes)."""
    import torch

    src = torch.empty(mbytes * 2**20, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return 2 * src.numel() / statistics.median(times)


def matmul_parameters(model: Any) -> tuple[int, int]:
    """(parameters in the decoder body's linear layers, parameters of the LM head) of a causal LM.

    Embedding lookups are not matmuls, so a tied input embedding counts once, as the head.
    """
    import torch

    head = model.get_output_embeddings().weight
    body = sum(m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Linear) and m.weight is not head)
    return body, head.numel()
