"""The benchmarks' device handling: checks, synchronisation, memory readings, the header line.

CPU and CUDA only. Every CUDA call sits behind ``device == "cuda"``, so a CPU run never touches it.
"""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version


def check(device: str, clock: str = "wall") -> None:
    """Refuse a CUDA run without a visible GPU, or one timed by process CPU time (GPU work is not in it)."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    if device == "cuda" and clock != "wall":
        raise SystemExit("--clock cpu measures process CPU time, which misses GPU work: use --clock wall")


def sync(device: str) -> None:
    """Wait for queued GPU work (a timing must cover it)."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def name(device: str) -> str:
    """The GPU's name, or the CPU's model name."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "absent"


def describe(device: str) -> str:
    """One line: the device (memory, bf16 peak on a GPU) and the versions that set the figures."""
    import torch
    from _limits import bf16_peak_flops  # bench/ is on sys.path when run as a script

    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        peak = bf16_peak_flops(name(device))
        where = (f"{name(device)} ({props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs, "
                 f"bf16 peak {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown (set PEAK_TFLOPS)'}), "
                 f"CUDA {torch.version.cuda}")
    else:
        where = f"CPU {name(device)}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    libs = ", ".join(f"{d} {_version(d)}" for d in ("transformers", "trl", "accelerate"))
    return f"device: {where}; torch {torch.__version__}, {libs}, Python {platform.python_version()}"


def rss_mb() -> float:
    """Current resident set size in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (``VmHWM``: its own, unlike ``ru_maxrss``, which a
    child inherits from its parent's high-water mark)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak_rss() -> bool:
    """Restart this process's peak RSS (``VmHWM``) from its current RSS (Linux >= 4.0, ``clear_refs``
    5), so that a later :func:`peak_rss_mb` covers only what ran after it; False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def cuda_allocated_mb() -> float:
    """Memory held by tensors on the GPU now, MB."""
    import torch

    return torch.cuda.memory_allocated() / 2**20


def cuda_reset_peak() -> None:
    """Start a new ``max_memory_allocated`` window."""
    import torch

    torch.cuda.reset_peak_memory_stats()


def cuda_peak_mb() -> float:
    """Most memory held by tensors on the GPU since the last :func:`cuda_reset_peak`, MB."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20
