"""What the web view knows about each source: last value, recent readings, latest windows.

This is what makes a dashboard never blank: a client that connects gets every
source's last value, and one that subscribes gets a short history. The table
is bounded (source ids come from producers, and a hostile one could invent
millions): past :data:`MAX_SOURCES` the least recently updated source is
forgotten, and only the live view loses it; the database keeps its history.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rtdstream.models import ReadingBatch, Speed

MAX_SOURCES = 10_000
#: Window names per source whose latest aggregate is kept (tumbling sizes plus hopping).
MAX_WINDOWS_PER_SOURCE = 32


class Throttle:
    """At most one value per ``interval``; a newer value replaces one that waits for its slot.

    This is the coalescing of live events: a dashboard needs the newest value,
    not every value, and a source faster than the rate must not flood clients.
    """

    __slots__ = ("interval", "next_at", "pending")

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at = 0.0
        self.pending: Any = None

    def offer(self, value: Any, now: float) -> tuple[Any, bool]:
        """(value to send now or None, whether a waiting value was replaced)."""
        replaced = self.pending is not None
        self.pending = value
        return self.take_due(now), replaced

    def take_due(self, now: float) -> Any:
        """The waiting value if its slot has come (and start the next interval), else None."""
        if self.pending is None or now < self.next_at:
            return None
        value, self.pending = self.pending, None
        self.next_at = now + self.interval
        return value


@dataclass(slots=True, eq=False)
class SourceState:
    source: str
    history: deque[tuple[int, Speed]]
    live: Throttle
    partials: Throttle
    last: tuple[int, Speed] | None = None
    #: Whether the history ring has been merged with the database's (once, on first subscribe).
    restored: bool = False
    #: Latest final aggregate per window name.
    windows: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    #: Readings waiting for the next ``readings`` batch event (only while someone subscribes).
    batch_times: list[int] = field(default_factory=list)
    batch_speeds: list[Speed] = field(default_factory=list)
    #: Monotonic time the last ``readings`` batch of this source left.
    batch_sent_at: float = float("-inf")

    def add(self, times: Iterable[int], speeds: Iterable[Speed]) -> None:
        for time, speed in zip(times, speeds):
            self.history.append((time, speed))
            if self.last is None or time >= self.last[0]:
                self.last = (time, speed)

    def add_window(self, aggregate: dict[str, Any]) -> None:
        name = str(aggregate["window"])
        current = self.windows.get(name)
        if current is not None and current.get("start", 0) > aggregate.get("start", 0):
            return  # a replayed older window must not hide the newest one
        self.windows[name] = aggregate
        self.windows.move_to_end(name)
        while len(self.windows) > MAX_WINDOWS_PER_SOURCE:
            self.windows.popitem(last=False)

    def take_batch(self) -> tuple[list[int], list[Speed]]:
        times, speeds = self.batch_times, self.batch_speeds
        self.batch_times, self.batch_speeds = [], []
        return times, speeds

    @property
    def has_pending(self) -> bool:
        return bool(self.batch_times) or self.live.pending is not None or self.partials.pending is not None

    def last_reading(self) -> dict[str, Any] | None:
        if self.last is None:
            return None
        return {"source": self.source, "time": self.last[0], "speed": self.last[1]}

    def recent(self) -> list[dict[str, Any]]:
        return [{"time": time, "speed": speed} for time, speed in self.history]


class SourceTable:
    """Every source the web view has seen, least recently updated first, at most ``max_sources``."""

    def __init__(self, *, history: int, live_interval: float, max_sources: int = MAX_SOURCES) -> None:
        self.history = history
        self.live_interval = live_interval
        self.max_sources = max_sources
        self._states: OrderedDict[str, SourceState] = OrderedDict()
        #: The smallest source id ever seen: what ``newData`` carries unless RTD_NEWDATA_SOURCE says.
        #: Stored sources count (the web view loads them at start), so it is stable across restarts
        #: and the same in every web process; a source forgotten for room is not forgotten here.
        self.first_id: str | None = None

    def __len__(self) -> int:
        return len(self._states)

    def get(self, source: str) -> SourceState | None:
        return self._states.get(source)

    def touch(self, source: str) -> SourceState:
        """The state of ``source``, created if new, marked as the most recently updated."""
        state = self._states.get(source)
        if state is None:
            state = self._states[source] = SourceState(
                source,
                deque(maxlen=self.history),
                live=Throttle(self.live_interval),
                partials=Throttle(self.live_interval),
            )
            if self.first_id is None or source < self.first_id:
                self.first_id = source
            while len(self._states) > self.max_sources:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(source)
        return state

    def add_batch(self, batch: ReadingBatch) -> SourceState:
        state = self.touch(batch.source)
        state.add(batch.times, batch.speeds)
        return state

    def set_last(self, source: str, time: int, speed: Speed) -> None:
        """Remember a source's newest stored reading, unless the feed already brought newer ones."""
        if source not in self._states:
            self.touch(source).add((time,), (speed,))

    def restore(
        self, source: str, readings: Iterable[Mapping[str, Any]], windows: Iterable[dict[str, Any]]
    ) -> SourceState:
        """Merge stored readings and window aggregates into what the feed brought since start-up."""
        state = self.touch(source)
        merged = dict(state.history)
        for row in readings:
            merged.setdefault(row["time"], row["speed"])
        times = sorted(merged)
        state.history.clear()
        state.add(times, (merged[time] for time in times))
        for row in sorted(windows, key=lambda row: row["start"]):
            if row.get("window") is not None:
                state.add_window(row)
        state.restored = True
        return state

    def latest(self, sources: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The last reading of every source (or of ``sources``) that has one, ordered by source id."""
        states = self._states.values() if sources is None else filter(None, map(self._states.get, sources))
        readings = (state.last_reading() for state in states)
        return sorted((r for r in readings if r is not None), key=lambda r: r["source"])
