"""The statistics of a window, and how readings and partial results combine into them.

An :class:`Aggregate` is mergeable: the aggregate of a window is the merge of
the aggregates of its panes, in arrival order. That is what lets a batch be
aggregated once per pane instead of once per window per reading. ``last_speed``
is the speed of the reading with the latest time; between equal times the one
that arrived last wins, which keeps the result a function of the input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rtdstream.models import Speed


@dataclass(slots=True)
class Aggregate:
    count: int
    min: Speed
    max: Speed
    sum: Speed
    first_time: int
    last_time: int
    last_speed: Speed

    @classmethod
    def of(cls, time: int, speed: Speed) -> Aggregate:
        return cls(1, speed, speed, speed, time, time, speed)

    @classmethod
    def of_readings(cls, times: Sequence[int], speeds: Sequence[Speed]) -> Aggregate:
        """One aggregate over non-empty columns, with C-speed builtins."""
        last_time = max(times)
        last_index = len(times) - 1 - times[::-1].index(last_time)
        return cls(len(times), min(speeds), max(speeds), sum(speeds), min(times), last_time, speeds[last_index])

    def add(self, time: int, speed: Speed) -> None:
        self.count += 1
        self.sum += speed
        if speed < self.min:
            self.min = speed
        elif speed > self.max:
            self.max = speed
        self.first_time = min(self.first_time, time)
        if time >= self.last_time:
            self.last_time = time
            self.last_speed = speed

    def merge(self, later: Aggregate) -> None:
        """Fold in the aggregate of readings that arrived after these."""
        self.count += later.count
        self.sum += later.sum
        self.min = min(self.min, later.min)
        self.max = max(self.max, later.max)
        self.first_time = min(self.first_time, later.first_time)
        if later.last_time >= self.last_time:
            self.last_time = later.last_time
            self.last_speed = later.last_speed

    def copy(self) -> Aggregate:
        return Aggregate(
            self.count, self.min, self.max, self.sum, self.first_time, self.last_time, self.last_speed
        )

    def fields(self) -> dict[str, Any]:
        """The statistics as the JSON fields of rtd.windows and rtd.partials records."""
        return {
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "sum": self.sum,
            "mean": self.sum / self.count,
            "first_time": self.first_time,
            "last_time": self.last_time,
            "last_speed": self.last_speed,
        }

    def to_row(self) -> list[Speed]:
        return [self.count, self.min, self.max, self.sum, self.first_time, self.last_time, self.last_speed]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Aggregate:
        return cls(*row)


def by_pane(times: Sequence[int], speeds: Sequence[Speed], width: int) -> dict[int, Aggregate]:
    """Aggregates of the readings per pane (time // width), in one pass.

    Most batches of a live source fall in one pane, which takes the builtin path.
    """
    first_pane, last_pane = min(times) // width, max(times) // width
    if first_pane == last_pane:
        return {first_pane: Aggregate.of_readings(times, speeds)}
    panes: dict[int, Aggregate] = {}
    for time, speed in zip(times, speeds):
        pane = time // width
        aggregate = panes.get(pane)
        if aggregate is None:
            panes[pane] = Aggregate.of(time, speed)
        else:
            aggregate.add(time, speed)
    return panes
