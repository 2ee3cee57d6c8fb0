"""Event-time windows on the pure logic: scripted scenarios and properties against an offline oracle."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdstream.config import load_settings
from rtdstream.models import IdleTick, ReadingBatch
from rtdstream.tables.aggregate import Aggregate, by_pane
from rtdstream.tables.specs import WindowSpec, pane_width, window_specs
from rtdstream.tables.state import ClosedWindow, PartitionState
from rtdstream.tables.windowing import Changes, Windowing
from tests.support.windows import (
    PROPERTY_SPECS,
    SCRIPT,
    SCRIPT_LATE,
    SCRIPT_WINDOWS,
    T0,
    Key,
    Stats,
    batch,
    offline,
)

SPECS = [WindowSpec.tumbling(1), WindowSpec.tumbling(10), WindowSpec.hopping(4, 2)]
GRACE = 2000

def stats(window: ClosedWindow) -> Stats:
    a = window.aggregate
    return (a.count, a.min, a.max, a.sum, a.first_time - T0, a.last_time - T0, a.last_speed)


@dataclass
class Partition:
    """One partition's state fed like the agent feeds it, optionally saved and reloaded between messages."""

    windowing: Windowing
    reload: bool = False

    def __post_init__(self) -> None:
        self.state = PartitionState()
        self.offset = 0
        self.closed: dict[Key, Stats] = {}
        self.emissions = 0
        self.late: list = []

    def send(self, message: ReadingBatch | IdleTick, offset: int | None = None) -> Changes:
        if offset is None:
            offset, self.offset = self.offset, self.offset + 1
        changes = Changes()
        self.windowing.apply(self.state, offset, message, changes)
        if self.reload:
            self.state = PartitionState.decode(self.state.encode())
        for window in changes.closed:
            key = (window.source, window.spec.label, window.start - T0)
            assert key not in self.closed, f"{key} closed twice"
            self.closed[key] = stats(window)
        self.emissions += len(changes.closed)
        self.late.extend(changes.late)
        return changes

    def readings(self, source: str, *pairs: tuple[int, float]) -> Changes:
        return self.send(batch(source, *pairs, origin=(0, self.offset, 0)))

    def finish(self) -> None:
        """Close everything still open, the way an idle tick does."""
        if self.state.max_time is not None:
            self.send(IdleTick(0, self.state.max_time))
        assert not self.state.windows


@pytest.mark.parametrize("reload", [False, True], ids=["in-memory", "reloaded-every-message"])
def test_scripted_sequence_gives_exact_windows_and_late_counts(reload: bool) -> None:
    windowing = Windowing(SPECS, GRACE)
    partitions = [Partition(windowing, reload), Partition(windowing, reload)]
    for step, (partition, message) in enumerate(SCRIPT):
        changes = partitions[partition].send(message)
        if step == 2:
            assert partitions[0].closed == {}  # watermark 500: nothing ends that early
        if step == 3:
            assert set(partitions[0].closed) == {
                ("a", "1s", 0), ("a", "1s", 1000), ("a", "1s", 2000), ("b", "1s", 1000),
                ("a", "4s/2s", -2000), ("b", "4s/2s", -2000),
            }
        if step == 6:
            assert changes.touched == set()  # the re-sent batch was recognised by its origin
        if step == 8:
            assert set(partitions[1].closed) == {
                ("c", "1s", 0), ("c", "10s", 0), ("c", "4s/2s", -2000), ("c", "4s/2s", 0)
            }
    # this stage restarted and reads offset 1 again
    partitions[0].send(batch("b", (1500, 5), origin=(0, 1, 0)), offset=1)
    for partition in partitions:
        partition.finish()

    assert partitions[0].closed | partitions[1].closed == SCRIPT_WINDOWS
    late = partitions[0].late + partitions[1].late
    assert [(r.source, r.time - T0, r.lateness_ms, r.windows) for r in late] == SCRIPT_LATE
    assert [r.speed for r in late] == [50, 2]
    assert (partitions[0].state.late, partitions[1].state.late) == ({"a": 1}, {"c": 1})


def test_a_window_closes_when_the_partition_advances_without_its_source() -> None:
    p = Partition(Windowing(SPECS, GRACE))
    p.readings("quiet", (500, 1))
    p.readings("busy", (3500, 2))  # watermark 1500 passes the end of quiet's 1s window
    assert ("quiet", "1s", 0) in p.closed
    assert ("busy", "1s", 3000) not in p.closed


def test_a_tick_keeps_windows_opened_after_it_was_made() -> None:
    p = Partition(Windowing(SPECS, GRACE))
    p.readings("a", (100, 1))
    p.readings("a", (20500, 2))  # arrived after the tick below was made
    p.send(IdleTick(0, T0 + 100))
    assert ("a", "10s", 0) in p.closed
    assert ("a", "1s", 20000) not in p.closed and ("a", "10s", 20000) not in p.closed


def test_windows_sent_to_a_partition_are_emitted_once_even_when_replayed() -> None:
    p = Partition(Windowing(SPECS, GRACE))
    p.readings("a", (100, 1))
    p.readings("a", (9000, 2))
    emitted = p.emissions
    for offset in range(2):  # this stage restarted and reads both messages again
        p.send(ReadingBatch("a", [T0], [99], (0, offset, 0)), offset=offset)
    assert p.emissions == emitted
    assert p.state.windows["a"][WindowSpec.tumbling(10)][T0].count == 2


def test_settings_define_the_windows_and_labels() -> None:
    specs = window_specs(load_settings(RTD_WINDOWS="1s,10s,60s", RTD_HOPPING_WINDOW="60s/10s"))
    assert [spec.label for spec in specs] == ["1s", "10s", "60s", "60s/10s"]
    assert [(s.size, s.step) for s in specs] == [(1000, 1000), (10000, 10000), (60000, 60000), (60000, 10000)]
    assert pane_width(specs) == 1000
    assert pane_width([WindowSpec.tumbling(1.5), WindowSpec.tumbling(1)]) == 500
    assert all(WindowSpec.from_label(spec.label) == spec for spec in specs)
    assert list(WindowSpec.hopping(60, 10).starts(T0 + 5000)) == [T0 - 50_000 + 10_000 * i for i in range(6)]


def test_pane_aggregates_match_a_plain_loop_and_keep_the_last_arrival_on_equal_times() -> None:
    times = [T0 + t for t in (5, 999, 5, 1000, 999, 2500)]
    speeds = [1, 2, 3, 4, 5, 6.5]
    panes = by_pane(times, speeds, 1000)
    assert {p - T0 // 1000: a.to_row() for p, a in panes.items()} == {
        0: [4, 1, 5, 11, T0 + 5, T0 + 999, 5],
        1: [1, 4, 4, 4, T0 + 1000, T0 + 1000, 4],
        2: [1, 6.5, 6.5, 6.5, T0 + 2500, T0 + 2500, 6.5],
    }
    one_pane = by_pane(times[:3], speeds[:3], 1000)  # the builtin path
    assert one_pane[T0 // 1000].to_row() == [3, 1, 3, 6, T0 + 5, T0 + 999, 2]
    assert Aggregate.of(T0, 3).fields()["mean"] == 3


def test_state_survives_encoding_with_windows_of_a_removed_spec() -> None:
    state = PartitionState()
    windowing = Windowing([WindowSpec.tumbling(5)], GRACE)
    windowing.apply(state, 0, ReadingBatch("a", [T0 + 100], [4], (2, 7, 1)), Changes())
    restored = PartitionState.decode(state.encode())
    assert restored.encode() == state.encode()
    assert restored.origins.marks == {(2, "a"): (7, 1)} and restored.input_offset == 0
    # RTD_WINDOWS no longer has 5s: the saved window still closes at its own end.
    later = Windowing([WindowSpec.tumbling(1)], GRACE)
    changes = Changes()
    later.apply(restored, 1, ReadingBatch("a", [T0 + 7100], [1], (2, 8, 0)), changes)
    assert [(w.spec.label, w.start - T0, w.aggregate.count) for w in changes.closed] == [("5s", 0, 1)]


# --- properties: random readings against a straightforward offline computation ---------------

SOURCES = ["s1", "s2", "s3"]


@st.composite
def arrivals(draw: st.DrawFn, max_disorder: int) -> list[list[tuple[str, int, int]]]:
    """Messages of one partition, each readings of one source; times disordered by < max_disorder."""
    count = draw(st.integers(1, 150))
    gaps = draw(st.lists(st.integers(0, 400), min_size=count, max_size=count))
    jitter = draw(st.lists(st.integers(0, max_disorder - 1), min_size=count, max_size=count))
    sources = draw(st.lists(st.sampled_from(SOURCES), min_size=count, max_size=count))
    speeds = draw(st.lists(st.integers(0, 50), min_size=count, max_size=count))
    times, now = [], T0 + draw(st.integers(0, 59_999))
    for gap in gaps:
        now += gap
        times.append(now)
    # Arrival order: by time plus a jitter below max_disorder, so a reading arrives
    # before any reading more than max_disorder newer than itself.
    order = sorted(range(count), key=lambda i: (times[i] + jitter[i], i))
    cuts = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    messages: list[list[tuple[str, int, int]]] = []
    for position, i in enumerate(order):
        reading = (sources[i], times[i], speeds[i])
        if messages and messages[-1][0][0] == reading[0] and not cuts[position]:
            messages[-1].append(reading)
        else:
            messages.append([reading])
    return messages


def run_windowing(messages: list[list[tuple[str, int, int]]], grace: int) -> tuple[dict, PartitionState]:
    windowing = Windowing(PROPERTY_SPECS, grace)
    state, closed = PartitionState(), {}
    for offset, message in enumerate(messages):
        changes = Changes()
        batch = ReadingBatch(message[0][0], [t for _, t, _ in message], [s for _, _, s in message], (0, offset, 0))
        windowing.apply(state, offset, batch, changes)
        for window in changes.closed:
            closed[(window.source, window.spec.label, window.start)] = window.aggregate.to_row()
    changes = Changes()
    windowing.apply(state, len(messages), IdleTick(0, state.max_time), changes)
    for window in changes.closed:
        closed[(window.source, window.spec.label, window.start)] = window.aggregate.to_row()
    return closed, state


@settings(max_examples=150, deadline=None)
@given(arrivals(max_disorder=GRACE))
def test_readings_disordered_within_grace_give_the_offline_aggregates(messages) -> None:
    closed, state = run_windowing(messages, GRACE)
    expected, late = offline(messages, GRACE)
    assert late == {}
    assert closed == expected
    assert state.late == {}


@settings(max_examples=150, deadline=None)
@given(arrivals(max_disorder=6000))
def test_readings_beyond_grace_are_late_exactly_for_the_windows_already_closed(messages) -> None:
    closed, state = run_windowing(messages, GRACE)
    expected, late = offline(messages, GRACE)
    assert closed == expected
    assert state.late == late
