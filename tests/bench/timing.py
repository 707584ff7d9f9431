"""Timing helpers shared by the benchmark scripts: a figure is never one timing but
min / median / max over several runs, and what is compared is measured side by side
in one run (a shared machine drifts between runs)."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Spread:
    """The values one figure took over several runs; ``f"{s:.1f}"`` prints
    ``min/median/max``."""

    values: tuple[float, ...]

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def scaled(self, factor: float) -> Spread:
        return Spread(tuple(v * factor for v in self.values))

    def __format__(self, spec: str) -> str:
        """``>20.2f``: each value as ``.2f``, the whole right-aligned in 20."""
        align, width, number = re.fullmatch(r"([<>^]?)(\d*)(.*)", spec).groups()
        text = "/".join(format(v, number) for v in (self.min, self.median, self.max))
        return format(text, f"{align or '>'}{width}")


def spread(values: Iterable[float]) -> Spread:
    values = tuple(values)
    if not values:
        raise ValueError("no values")
    return Spread(values)


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Spread:
    """Wall time of ``fn()`` over ``repeats`` runs, after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return spread(times)


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    return timed(fn, repeats).median
