"""The GPU check's memory counters: torch.cuda's on CUDA, None on the CPU.

One object every stage measures through, so a stage never asks which device it is on.
"""

from __future__ import annotations


class Gpu:
    """torch.cuda's memory counters on CUDA; None everywhere on the CPU."""

    def __init__(self, device: str):
        import torch

        self.torch = torch
        self.on = device.startswith("cuda")

    def sync(self) -> None:
        if self.on:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.on:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mib(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated() / 2**20, 1) if self.on else None

    def allocated_mib(self) -> float | None:
        return round(self.torch.cuda.memory_allocated() / 2**20, 1) if self.on else None

    def free_mib(self) -> float | None:
        if not self.on:
            return None
        free, _ = self.torch.cuda.mem_get_info()
        return round(free / 2**20, 1)

    def name(self) -> str:
        return self.torch.cuda.get_device_name(0) if self.on else "cpu"

    def total_mib(self) -> float | None:
        return round(self.torch.cuda.get_device_properties(0).total_memory / 2**20) if self.on else None
