"""The machine's own limits, measured in the benchmark's process: GEMM FLOP/s and copy bandwidth.

A ratio against a baseline says nothing about how far from the hardware a stage is; these give the
denominator for "share of the machine's limit" lines (model FLOP/s over GEMM FLOP/s at the same
dtype and thread count; decode tokens/s over the bytes-per-step bound). On a GPU the spec sheet's
dense bf16 peak is the second denominator (MFU).
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

# Dense bf16 tensor-core peaks (no sparsity), FLOP/s, by words in the device name; first match wins.
PEAKS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12))
# Sizes that time the kernel, not the launch: a 1024^3 matmul takes microseconds on a GPU.
GEMM_SIZE = {"cpu": 1024, "cuda": 8192}
COPY_MBYTES = {"cpu": 256, "cuda": 2048}


def bf16_peak_flops(device_name: str) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU from ``PEAK_TFLOPS`` or its name (:data:`PEAKS`); None if unknown."""
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"]) * 1e12
    for key, value in PEAKS:
        if all(part in device_name for part in key.split()):
            return value
    return None


def gemm_flops(dtype: Any, size: int | None = None, repeats: int = 5, device: str = "cpu",
               clock: Any = time.perf_counter) -> float:
    """Median FLOP/s of a ``size``^3 matmul (default :data:`GEMM_SIZE` of the device) at ``dtype`` on
    the current torch thread count.

    ``clock``: ``time.process_time`` measures CPU seconds (with one thread, steady under other load).
    """
    import torch

    size = size or GEMM_SIZE[device]
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(1 if device == "cpu" else 5):  # warm-up: thread pool, kernel selection, GPU clocks
        torch.matmul(a, b)
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


def copy_bandwidth(mbytes: int | None = None, repeats: int = 5, device: str = "cpu") -> float:
    """Median bytes/s of reading one buffer and writing another (counted as read + write bytes);
    ``mbytes`` defaults to :data:`COPY_MBYTES` of the device."""
    import torch

    mbytes = mbytes or COPY_MBYTES[device]
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
