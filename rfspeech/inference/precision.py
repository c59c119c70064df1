"""Synthesis precision: fp32 (exact, the default) or bf16 (opt-in, lossy, only where the hardware has it).

``precision=bf16`` runs the generator under ``torch.autocast`` with bfloat16: convolutions take
bf16 inputs and weights and accumulate in fp32 (oneDNN's AVX512_BF16 / AMX kernels on CPU, tensor
cores on CUDA). The output changes: the waveform's SNR against fp32 and the change in MCD and PESQ
on real speech are measured in BENCHMARKS.md (``python -m bench --sections precision``), never
assumed. On a CPU without bfloat16 instructions torch would emulate bf16 with conversions, slower
than fp32, so the request is refused there with one line instead of silently running slower and
lossier.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from rfspeech.errors import ConfigError

__all__ = ["PRECISIONS", "autocast", "check_precision", "cpu_bf16_flags", "cpu_has_bf16"]

PRECISIONS = ("fp32", "bf16")
#: /proc/cpuinfo flags of CPUs with native bfloat16 arithmetic (oneDNN's bf16 convolution kernels).
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags(cpuinfo: str | None = None) -> list[str]:
    """The bfloat16 flags this CPU reports (``/proc/cpuinfo``; ``cpuinfo`` to parse given text instead)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            return []
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return [f for f in BF16_FLAGS if f in flags]
    return []


def cpu_has_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has native bfloat16 arithmetic (AVX512_BF16 or AMX-BF16)."""
    return bool(cpu_bf16_flags(cpuinfo))


def check_precision(precision: str, device: str | torch.device = "cpu", *, cpuinfo: str | None = None) -> str:
    """``precision`` checked against the device: ``fp32`` anywhere; ``bf16`` on a CUDA GPU that supports it or a
    CPU with AVX512_BF16/AMX.

    Raises:
        ConfigError: an unknown precision, or bf16 where the hardware lacks it (one line).
    """
    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise ConfigError(f"precision={precision}: unknown precision (choose one of {', '.join(PRECISIONS)})")
    if p == "fp32":
        return p
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available() or not torch.cuda.is_bf16_supported():
            raise ConfigError("precision=bf16: this GPU does not support bfloat16; use precision=fp32")
        return p
    if dev.type != "cpu":
        raise ConfigError(f"precision=bf16 runs on cpu or cuda, not {dev.type}")
    if not cpu_has_bf16(cpuinfo):
        raise ConfigError("precision=bf16: this CPU has no bfloat16 instructions (AVX512_BF16 or AMX-BF16 in "
                          "/proc/cpuinfo); use precision=fp32")
    return p


@contextlib.contextmanager
def autocast(precision: str, device: str | torch.device = "cpu") -> Iterator[None]:
    """The context synthesis runs the generator in: nothing for fp32, bf16 autocast for bf16 (checked first)."""
    if precision == "fp32":
        yield
        return
    dev = torch.device(device)
    with torch.autocast(dev.type, dtype=torch.bfloat16):
        yield
