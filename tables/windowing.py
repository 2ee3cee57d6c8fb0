"""How one ``rtd.validated`` message changes a partition's window state.

Pure logic, no I/O: the agent feeds messages in offset order and sends what
comes out. Given the same state and the same message this always produces the
same state and the same output, which is what makes a replay after a crash
emit identical final results.

Event time: a reading counts in the windows of its own time. The watermark of
a partition is ``max(max_time - grace, floor)``; a window closes when the
watermark reaches its end. A reading whose window had already closed when the
reading arrived is late for that window: it is left out of it, counted per
source and reported, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rtdstream.models import IdleTick, ReadingBatch, Speed
from rtdstream.tables.aggregate import by_pane
from rtdstream.tables.specs import WindowSpec, pane_width
from rtdstream.tables.state import ClosedWindow, PartitionState


@dataclass(frozen=True, slots=True)
class LateReading:
    source: str
    time: int
    speed: Speed
    #: How far the watermark was past the reading's time when it arrived.
    lateness_ms: int
    #: Labels of the windows the reading missed (it still counts in the others).
    windows: tuple[str, ...]


@dataclass(slots=True)
class Changes:
    """What applying messages produced: final results, late readings, sources with new values."""

    closed: list[ClosedWindow] = field(default_factory=list)
    late: list[LateReading] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)


class Windowing:
    """The window rules of a worker: which windows exist and how long to wait for stragglers."""

    def __init__(self, specs: Sequence[WindowSpec], grace_ms: int) -> None:
        if not specs:
            raise ValueError("at least one window is needed")
        self.specs = tuple(specs)
        self.grace = grace_ms
        self.pane = pane_width(self.specs)

    def apply(
        self, state: PartitionState, offset: int, message: ReadingBatch | IdleTick, changes: Changes
    ) -> bool:
        """Apply the message at ``offset`` unless the state already holds it; False for a replay.

        Replays are recognised twice over: by the input offset (this stage
        restarted) and by the batch's origin (the validation stage restarted
        and sent the same readings again under a new offset, maybe in batches
        of other boundaries: only the readings not applied yet are applied).
        """
        if offset <= state.input_offset:
            return False
        state.input_offset = offset
        if isinstance(message, IdleTick):
            self._apply_tick(state, message)
        elif (fresh := state.origins.take(message)) is None:
            return False
        else:
            self._apply_batch(state, fresh, changes)
        for closed in state.close(self.watermark(state)):
            changes.closed.append(closed)
            changes.touched.add(closed.source)
        return True

    def skip(self, state: PartitionState, offset: int) -> None:
        """Step over an input message that cannot be applied (it went to rtd.dlq), like over an applied one."""
        state.input_offset = max(state.input_offset, offset)

    def watermark(self, state: PartitionState) -> int | None:
        return state.watermark(self.grace)

    def _apply_batch(self, state: PartitionState, batch: ReadingBatch, changes: Changes) -> None:
        if not batch.times:
            return
        watermark = self.watermark(state)
        missed: dict[int, tuple[str, ...]] = {}
        for pane, aggregate in by_pane(batch.times, batch.speeds, self.pane).items():
            pane_start = pane * self.pane
            missed_labels: list[str] = []
            for spec in self.specs:
                for start in spec.starts(pane_start):
                    if watermark is not None and start + spec.size <= watermark:
                        if spec.label not in missed_labels:
                            missed_labels.append(spec.label)
                    else:
                        state.add(batch.source, spec, start, aggregate)
            if missed_labels:
                missed[pane] = tuple(missed_labels)
        batch_max = max(batch.times)
        if state.max_time is None or batch_max > state.max_time:
            state.max_time = batch_max
        changes.touched.add(batch.source)
        if missed:
            assert watermark is not None
            self._record_late(state, batch, watermark, missed, changes)

    def _record_late(
        self,
        state: PartitionState,
        batch: ReadingBatch,
        watermark: int,
        missed: dict[int, tuple[str, ...]],
        changes: Changes,
    ) -> None:
        late = [
            LateReading(batch.source, time, speed, watermark - time, missed[time // self.pane])
            for time, speed in zip(batch.times, batch.speeds)
            if time // self.pane in missed
        ]
        state.late[batch.source] = state.late.get(batch.source, 0) + len(late)
        changes.late.extend(late)

    def _apply_tick(self, state: PartitionState, tick: IdleTick) -> None:
        """Close what was open when the partition went idle, by raising the watermark floor.

        Windows opened by readings that arrived after the tick was made (they
        start after ``tick.max_time``) stay open unless the floor passes them.
        """
        end = state.latest_end_started_by(tick.max_time)
        if end is not None and (state.floor is None or end > state.floor):
            state.floor = end
