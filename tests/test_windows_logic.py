"""Event-time windows on the pure logic: scripted scenarios and properties against an offline oracle."""

from __future__ import annotations

from collections import defaultdict
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

T0 = 1_800_000_000_000  # a multiple of 60 s: window starts below read as offsets from it
SPECS = [WindowSpec.tumbling(1), WindowSpec.tumbling(10), WindowSpec.hopping(4, 2)]
GRACE = 2000

Key = tuple[str, str, int]  # (source, window label, start relative to T0)
Stats = tuple[int, float, float, float, int, int, float]  # count, min, max, sum, first, last, last_speed


def stats(window: ClosedWindow) -> Stats:
    a = window.aggregate
    return (a.count, a.min, a.max, a.sum, a.first_time - T0, a.last_time - T0, a.last_speed)


def batch(source: str, *pairs: tuple[int, float], origin: tuple[int, int, int]) -> ReadingBatch:
    return ReadingBatch(source, [T0 + t for t, _ in pairs], [s for _, s in pairs], origin)


#: (partition, message) in the order they reach rtd.validated; offsets count per partition.
SCRIPT: list[tuple[int, ReadingBatch | IdleTick]] = [
    (0, batch("a", (100, 10), (900, 20), origin=(0, 0, 0))),
    (0, batch("b", (1500, 5), origin=(0, 1, 0))),
    (0, batch("a", (2500, 30), (1200, 40), origin=(0, 2, 0))),  # 1200 out of order, within grace
    (0, batch("a", (5100, 7), origin=(0, 3, 0))),  # watermark 3100: closes what ends by then
    (0, batch("a", (900, 50), origin=(0, 4, 0))),  # late for 1s [0,1000) and 4s/2s [-2000,2000)
    (0, batch("b", (3000, 8), origin=(0, 5, 0))),
    (0, batch("b", (1500, 5), origin=(0, 1, 0))),  # the validation stage sent it again
    # Partition 1 goes idle after one reading: the tick closes every open window,
    # a straggler for them is late, and a later reading opens new windows.
    (1, batch("c", (100, 1), origin=(1, 0, 0))),
    (1, IdleTick(1, T0 + 100)),
    (1, batch("c", (5000, 2), origin=(1, 1, 0))),
    (1, batch("c", (12000, 3), origin=(1, 2, 0))),
]

#: Every window of SCRIPT once all are closed: (source, window, start - T0) -> statistics.
SCRIPT_WINDOWS: dict[Key, Stats] = {
    ("a", "1s", 0): (2, 10, 20, 30, 100, 900, 20),
    ("a", "1s", 1000): (1, 40, 40, 40, 1200, 1200, 40),
    ("a", "1s", 2000): (1, 30, 30, 30, 2500, 2500, 30),
    ("a", "1s", 5000): (1, 7, 7, 7, 5100, 5100, 7),
    ("a", "10s", 0): (6, 7, 50, 157, 100, 5100, 7),
    ("a", "4s/2s", -2000): (3, 10, 40, 70, 100, 1200, 40),
    ("a", "4s/2s", 0): (5, 10, 50, 150, 100, 2500, 30),
    ("a", "4s/2s", 2000): (2, 7, 30, 37, 2500, 5100, 7),
    ("a", "4s/2s", 4000): (1, 7, 7, 7, 5100, 5100, 7),
    ("b", "1s", 1000): (1, 5, 5, 5, 1500, 1500, 5),
    ("b", "1s", 3000): (1, 8, 8, 8, 3000, 3000, 8),
    ("b", "10s", 0): (2, 5, 8, 13, 1500, 3000, 8),
    ("b", "4s/2s", -2000): (1, 5, 5, 5, 1500, 1500, 5),
    ("b", "4s/2s", 0): (2, 5, 8, 13, 1500, 3000, 8),
    ("b", "4s/2s", 2000): (1, 8, 8, 8, 3000, 3000, 8),
    ("c", "1s", 0): (1, 1, 1, 1, 100, 100, 1),
    ("c", "10s", 0): (1, 1, 1, 1, 100, 100, 1),
    ("c", "4s/2s", -2000): (1, 1, 1, 1, 100, 100, 1),
    ("c", "4s/2s", 0): (1, 1, 1, 1, 100, 100, 1),
    ("c", "1s", 12000): (1, 3, 3, 3, 12000, 12000, 3),
    ("c", "10s", 10000): (1, 3, 3, 3, 12000, 12000, 3),
    ("c", "4s/2s", 10000): (1, 3, 3, 3, 12000, 12000, 3),
    ("c", "4s/2s", 12000): (1, 3, 3, 3, 12000, 12000, 3),
}
#: The late readings of SCRIPT: (source, time - T0, lateness_ms, missed windows).
SCRIPT_LATE = [("a", 900, 2200, ("1s", "4s/2s")), ("c", 5000, 5000, ("1s", "10s", "4s/2s"))]


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
    assert restored.origins == {2: (7, 1)} and restored.input_offset == 0
    # RTD_WINDOWS no longer has 5s: the saved window still closes at its own end.
    later = Windowing([WindowSpec.tumbling(1)], GRACE)
    changes = Changes()
    later.apply(restored, 1, ReadingBatch("a", [T0 + 7100], [1], (2, 8, 0)), changes)
    assert [(w.spec.label, w.start - T0, w.aggregate.count) for w in changes.closed] == [("5s", 0, 1)]


# --- properties: random readings against a straightforward offline computation ---------------

SOURCES = ["s1", "s2", "s3"]
PROPERTY_SPECS = [WindowSpec.tumbling(1), WindowSpec.tumbling(10), WindowSpec.hopping(6, 2)]


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


def offline(
    messages: list[list[tuple[str, int, int]]], grace: int, specs: list[WindowSpec] = PROPERTY_SPECS
) -> tuple[dict, dict]:
    """Group readings into windows the obvious way; a reading is left out of a window that
    ended at or before (newest time of the earlier messages - grace) when it arrived.

    Returns {(source, label, start): [count, min, max, sum, first, last, last_speed]} and late counts.
    """
    members: dict[tuple[str, str, int], list[tuple[int, int]]] = defaultdict(list)
    late: dict[str, int] = defaultdict(int)
    newest = None
    for message in messages:
        watermark = None if newest is None else newest - grace
        for source, time, speed in message:
            missed = False
            for spec in specs:
                start = time - time % spec.step - spec.size + spec.step
                while start <= time:
                    if watermark is not None and start + spec.size <= watermark:
                        missed = True
                    else:
                        members[(source, spec.label, start)].append((time, speed))
                    start += spec.step
            late[source] += missed
        newest = max([newest or 0] + [t for _, t, _ in message])
    expected = {}
    for key, readings in members.items():
        times = [t for t, _ in readings]
        speeds = [s for _, s in readings]
        last = max(times)
        last_speed = [s for t, s in readings if t == last][-1]
        expected[key] = [len(readings), min(speeds), max(speeds), sum(speeds), min(times), last, last_speed]
    return expected, {source: n for source, n in late.items() if n}


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
