"""Window definitions: which windows a reading falls into, in epoch milliseconds.

A window is named by its label (``"10s"`` for a tumbling window, ``"60s/10s"``
for a hopping one) and a label alone is enough to rebuild its spec. That lets
the worker close windows it finds in saved state even after RTD_WINDOWS changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import reduce

from rtdstream.config import WindowSettings, format_duration, parse_duration


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Windows of ``size`` ms starting every ``step`` ms (tumbling when they are equal)."""

    size: int
    step: int

    def __post_init__(self) -> None:
        if not 0 < self.step <= self.size or self.size % self.step:
            raise ValueError(f"window size {self.size} ms must be a positive multiple of step {self.step} ms")

    @classmethod
    def tumbling(cls, seconds: float) -> WindowSpec:
        size = round(seconds * 1000)
        return cls(size, size)

    @classmethod
    def hopping(cls, seconds: float, step_seconds: float) -> WindowSpec:
        return cls(round(seconds * 1000), round(step_seconds * 1000))

    @classmethod
    def from_label(cls, label: str) -> WindowSpec:
        """The spec a label names: ``"10s"`` or ``"60s/10s"``."""
        size, _, step = label.partition("/")
        if step:
            return cls.hopping(parse_duration(size), parse_duration(step))
        return cls.tumbling(parse_duration(size))

    @property
    def label(self) -> str:
        size = format_duration(self.size / 1000)
        return size if self.step == self.size else f"{size}/{format_duration(self.step / 1000)}"

    def starts(self, time: int) -> range:
        """Starts of the windows that contain ``time``, oldest first."""
        last = time - time % self.step
        return range(last - self.size + self.step, last + 1, self.step)


def window_specs(settings: WindowSettings) -> list[WindowSpec]:
    """The windows RTD_WINDOWS and RTD_HOPPING_WINDOW ask for, without repeats."""
    specs = [WindowSpec.tumbling(size) for size in settings.window_sizes]
    if settings.hopping:
        specs.append(WindowSpec.hopping(*settings.hopping))
    return list(dict.fromkeys(specs))


def pane_width(specs: Iterable[WindowSpec]) -> int:
    """The widest slice of time that never straddles a window boundary of any spec.

    Every boundary is a multiple of some step, so slices of gcd(sizes, steps)
    ms fall wholly inside or outside each window: a batch is aggregated once
    per slice ("pane") and the panes are merged into windows.
    """
    return reduce(math.gcd, (n for spec in specs for n in (spec.size, spec.step)))
