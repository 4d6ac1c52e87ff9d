"""What a benchmark ran on, recorded beside every result: speed figures mean little without it."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def describe() -> dict:
    """CPU model and vector extensions, cores, GPU and library versions."""
    cpu, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "bf16_cpu": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        # kernels held below the CPU's own instruction set (e.g. AVX2 kernels on an AVX-512 CPU), if any
        "isa_limits": {
            k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ
        },
    }
