"""The overview of every source at once: a compact per-source summary, about once a second.

A fleet dashboard of 500 sources cannot subscribe to every source: at 5,000
readings/s that is 5,000 readings a second per browser, decoded and mostly
thrown away, for tiles that show one number and a sparkline. So the web view
summarises instead, once per :data:`TICK` for all clients together: per source
the last reading, its readings/s over the tick, and one sparkline point (the
mean of the tick's readings). The ``fleet`` event carries only the sources that
changed (had readings, or had a rate to fall back to 0), in columns, so its
size follows the active sources, not the known ones, and a silent source costs
nothing. A client that starts watching gets :meth:`FleetSummary.snapshot` once:
every source with its last minute of sparkline.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rtdstream.models import Speed

#: Seconds between two ``fleet`` events.
TICK = 1.0
#: Sparkline points kept per source: one per tick, so the last minute.
SPARK_POINTS = 60
#: Sources summarised at most (ids come from producers; the least recently active is forgotten).
MAX_SOURCES = 10_000


@dataclass(slots=True, eq=False)
class SourceActivity:
    """What one source did since the last tick, and its sparkline."""

    count: int = 0
    total: float = 0.0
    last_time: int | None = None
    last_speed: Speed | None = None
    rate: float = 0.0
    spark_time: deque[int] = field(default_factory=lambda: deque(maxlen=SPARK_POINTS))
    spark_value: deque[float] = field(default_factory=lambda: deque(maxlen=SPARK_POINTS))

    def add(self, times: Sequence[int], speeds: Sequence[Speed]) -> None:
        self.count += len(times)
        self.total += sum(speeds)
        for time, speed in zip(times, speeds):
            if self.last_time is None or time >= self.last_time:
                self.last_time, self.last_speed = time, speed


class FleetSummary:
    """Per-source activity, folded into one compact event per tick for every client."""

    def __init__(self, *, max_sources: int = MAX_SOURCES) -> None:
        self.max_sources = max_sources
        self._sources: OrderedDict[str, SourceActivity] = OrderedDict()
        #: Readings seen since the process started (the health panel's "in" rate).
        self.readings_total = 0

    def __len__(self) -> int:
        return len(self._sources)

    def add(self, source: str, times: Sequence[int], speeds: Sequence[Speed]) -> None:
        """Count a batch of live readings: O(batch), no allocation per reading."""
        self._touch(source).add(times, speeds)
        self.readings_total += len(times)

    def seed(self, source: str, time: int, speed: Speed) -> None:
        """Know a stored source's last value (so a silent source shows, as stale), unless newer is known."""
        activity = self._sources.get(source)
        if activity is None:
            activity = self._touch(source)
            activity.last_time, activity.last_speed = time, speed

    def tick(self, now_ms: int, elapsed: float) -> dict[str, Any]:
        """Close the tick that lasted ``elapsed`` seconds: the ``fleet`` event of the sources that changed.

        Columns ``source``, ``time``, ``speed`` (the last reading), ``rate``
        (readings/s over the tick) and ``point`` (the sparkline point of this
        tick, the mean of its readings, or null for a source that went quiet).
        """
        event: dict[str, Any] = {"now": now_ms, "source": [], "time": [], "speed": [], "rate": [], "point": []}
        for source, activity in self._sources.items():
            if activity.count == 0 and activity.rate == 0.0:
                continue
            point = None
            if activity.count:
                point = activity.total / activity.count
                activity.spark_time.append(now_ms)
                activity.spark_value.append(point)
            activity.rate = activity.count / elapsed if elapsed > 0 else 0.0
            activity.count, activity.total = 0, 0.0
            event["source"].append(source)
            event["time"].append(activity.last_time)
            event["speed"].append(activity.last_speed)
            event["rate"].append(round(activity.rate, 1))
            event["point"].append(point)
        return event

    def snapshot(self, now_ms: int, idle_timeout: float) -> dict[str, Any]:
        """Every source with its last reading, rate and sparkline: what a new watcher starts from."""
        return {
            "now": now_ms,
            "tick": TICK,
            "idle_timeout": idle_timeout,
            "sources": [self._entry(source, activity) for source, activity in sorted(self._sources.items())],
        }

    def forget(self, sources: Iterable[str]) -> None:
        for source in sources:
            self._sources.pop(source, None)

    def _touch(self, source: str) -> SourceActivity:
        activity = self._sources.get(source)
        if activity is None:
            activity = self._sources[source] = SourceActivity()
            while len(self._sources) > self.max_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        return activity

    @staticmethod
    def _entry(source: str, activity: SourceActivity) -> dict[str, Any]:
        return {
            "source": source,
            "time": activity.last_time,
            "speed": activity.last_speed,
            "rate": round(activity.rate, 1),
            "spark_time": list(activity.spark_time),
            "spark": list(activity.spark_value),
        }
