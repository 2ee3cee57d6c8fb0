"""Everything the window stage remembers about one partition of ``rtd.validated``.

The whole partition is one value (one table key, one changelog record) on
purpose: the open windows, the watermark inputs, the late counts and the
position in the input (``input_offset`` and ``origins``) change together in one
atomic write. After a crash the worker either finds the write (and skips the
input it covered) or does not (and re-applies that input to the older state),
so every decision about lateness and closing is replayed identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from rtdstream.origins import OriginMarks
from rtdstream.tables.aggregate import Aggregate
from rtdstream.tables.specs import WindowSpec

#: Open windows of one source: spec -> window start (epoch ms) -> aggregate.
SourceWindows = dict[WindowSpec, dict[int, Aggregate]]


@dataclass(frozen=True, slots=True)
class ClosedWindow:
    """A final result: emitted once to ``rtd.windows`` when the watermark passes ``end``."""

    source: str
    spec: WindowSpec
    start: int
    aggregate: Aggregate

    @property
    def end(self) -> int:
        return self.start + self.spec.size

    def record(self) -> dict[str, Any]:
        """The ``rtd.windows`` JSON value; (source, window, start) is its natural key."""
        return {
            "source": self.source,
            "window": self.spec.label,
            "size": self.spec.size,
            "step": self.spec.step,
            "start": self.start,
            "end": self.end,
            **self.aggregate.fields(),
        }


@dataclass(eq=False)
class PartitionState:
    #: Highest rtd.validated offset applied; anything at or below it is a replay.
    input_offset: int = -1
    #: The newest rtd.readings part applied per input partition and source, to skip
    #: readings the validation stage sent again after its own restart.
    origins: OriginMarks = field(default_factory=OriginMarks)
    #: Latest reading time seen on the partition (None before the first reading).
    max_time: int | None = None
    #: Watermark floor raised by idle ticks (None until a tick closed something).
    floor: int | None = None
    windows: dict[str, SourceWindows] = field(default_factory=dict)
    #: Late readings per source since the partition was created.
    late: dict[str, int] = field(default_factory=dict)
    #: Earliest end among the open windows, so closing is a comparison until a window is due.
    _next_end: int | None = field(default=None, repr=False)

    def watermark(self, grace: int) -> int | None:
        """Windows ending at or before this are closed; None while nothing was seen."""
        if self.max_time is None:
            return self.floor
        behind = self.max_time - grace
        return behind if self.floor is None else max(behind, self.floor)

    def add(self, source: str, spec: WindowSpec, start: int, aggregate: Aggregate) -> None:
        """Merge ``aggregate`` into a window, opening it if needed (the aggregate is not kept)."""
        starts = self.windows.setdefault(source, {}).setdefault(spec, {})
        window = starts.get(start)
        if window is None:
            starts[start] = aggregate.copy()
            end = start + spec.size
            if self._next_end is None or end < self._next_end:
                self._next_end = end
        else:
            window.merge(aggregate)

    def latest_end_started_by(self, time: int) -> int | None:
        """The latest end of an open window that starts at or before ``time``."""
        ends = [
            start + spec.size
            for specs in self.windows.values()
            for spec, starts in specs.items()
            for start in starts
            if start <= time
        ]
        return max(ends, default=None)

    def close(self, watermark: int | None) -> list[ClosedWindow]:
        """Remove and return every open window that ends at or before ``watermark``."""
        if watermark is None or self._next_end is None or watermark < self._next_end:
            return []
        closed: list[ClosedWindow] = []
        next_end: int | None = None
        for source in list(self.windows):
            specs = self.windows[source]
            for spec in list(specs):
                starts = specs[spec]
                for start in [s for s in starts if s + spec.size <= watermark]:
                    closed.append(ClosedWindow(source, spec, start, starts.pop(start)))
                if starts:
                    end = min(starts) + spec.size
                    next_end = end if next_end is None else min(next_end, end)
                else:
                    del specs[spec]
            if not specs:
                del self.windows[source]
        self._next_end = next_end
        return closed

    def open_windows(self, source: str) -> list[dict[str, Any]]:
        """The current values of a source's open windows, oldest first per window label."""
        return [
            {"window": spec.label, "start": start, "end": start + spec.size, **aggregate.fields()}
            for spec, starts in self.windows.get(source, {}).items()
            for start, aggregate in sorted(starts.items())
        ]

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "input_offset": self.input_offset,
                **self.origins.to_json(),
                "max_time": self.max_time,
                "floor": self.floor,
                "windows": {
                    source: {
                        spec.label: [[start, *aggregate.to_row()] for start, aggregate in starts.items()]
                        for spec, starts in specs.items()
                    }
                    for source, specs in self.windows.items()
                },
                "late": self.late,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> PartitionState:
        obj = orjson.loads(data)
        state = cls(
            input_offset=obj["input_offset"],
            origins=OriginMarks.from_json(obj),
            max_time=obj["max_time"],
            floor=obj["floor"],
            late=obj["late"],
        )
        for source, specs in obj["windows"].items():
            for label, rows in specs.items():
                spec = _spec(label)
                for start, *row in rows:
                    state.add(source, spec, start, Aggregate.from_row(row))
        return state


@lru_cache(maxsize=64)
def _spec(label: str) -> WindowSpec:
    return WindowSpec.from_label(label)
