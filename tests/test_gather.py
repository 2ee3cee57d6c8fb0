"""The validation stage's gathering of input messages into batches per source (pure logic)."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdstream import gather
from rtdstream.gather import Gathered
from rtdstream.models import IdleTick, decode_validated
from rtdstream.tables.state import PartitionState
from rtdstream.tables.windowing import Changes, Windowing
from rtdstream.validation import validate_message
from tests.support.windows import PROPERTY_SPECS, offline

NOW = 1_795_000_000_000
GRACE = 2000


def one_partition(source: str) -> int:
    return 0


def envelope(source: str, speeds: list[int], first_time: int) -> bytes:
    return orjson.dumps({"source": source, "readings": [
        {"time": first_time + i, "speed": speed} for i, speed in enumerate(speeds)
    ]})


def single(source: str, speed: int | str, time: int) -> bytes:
    return orjson.dumps({"time": str(time), "speed": str(speed), "source": source})


def test_one_reading_messages_of_a_source_become_one_batch_listing_each_message() -> None:
    gathered = Gathered(max_span_ms=GRACE, partition_of=one_partition)
    for offset, source in enumerate(["a", "b", "a", "a"]):
        gathered.add(validate_message(single(source, offset, NOW + offset), None, now_ms=NOW, max_bytes=1 << 20), 5, 100 + offset)
    records = {key: decode_validated(value) for key, value in gathered.validated()}
    a, b = records[b"a"], records[b"b"]
    assert (a.times, a.speeds, a.parts, a.origin) == (
        [NOW, NOW + 2, NOW + 3], [0, 2, 3], [(100, 0, 1), (102, 0, 1), (103, 0, 1)], (5, 103, 0)
    )
    assert (b.times, b.parts, b.origin) == ([NOW + 1], None, (5, 101, 0))  # one part: the plain shape
    assert gathered.accepted == 4 and not gathered.dead_letters


def test_rejected_readings_become_dead_letters_with_their_place_and_reason() -> None:
    gathered = Gathered(max_span_ms=GRACE, partition_of=one_partition)
    gathered.add(validate_message(single("a", "fast", NOW), None, now_ms=NOW, max_bytes=1 << 20), 2, 7)
    [(key, value)] = gathered.dead_letters
    record = orjson.loads(value)
    assert key == b"a" and (record["reason"], record["partition"], record["offset"]) == ("non_numeric", 2, 7)
    assert gathered.rejected == {"non_numeric": 1} and gathered.validated() == []


def test_partitions_are_never_mixed_in_one_batch() -> None:
    gathered = Gathered(max_span_ms=GRACE, partition_of=one_partition)
    gathered.add(validate_message(single("a", 1, NOW), None, now_ms=NOW, max_bytes=1 << 20), 0, 1)
    gathered.add(validate_message(single("a", 2, NOW + 1), None, now_ms=NOW, max_bytes=1 << 20), 1, 1)
    assert sorted(batch.origin for batch in gathered.batches()) == [(0, 1, 0), (1, 1, 0)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.lists(st.integers(0, 50), min_size=1, max_size=40)),
                min_size=1, max_size=30))
def test_each_source_keeps_its_readings_in_order_across_capped_batches(messages) -> None:
    gather.MAX_BATCH_READINGS = 50  # small, so batches fill up in examples of a few messages
    try:
        gathered, expected, time = Gathered(max_span_ms=GRACE, partition_of=one_partition), {}, NOW
        for offset, (source, speeds) in enumerate(messages):
            gathered.add(validate_message(envelope(source, speeds, time), None, now_ms=NOW, max_bytes=1 << 20), 0, offset)
            expected.setdefault(source, []).extend(speeds)
            time += len(speeds)
        seen: dict[str, list[int]] = {}
        for batch in gathered.batches():
            assert sum(count for _, _, count in batch.origin_parts()) == len(batch)
            assert len(batch) <= 50 or len(batch.origin_parts()) == 1  # one part is never split
            offsets = [offset for offset, _, _ in batch.origin_parts()]
            assert offsets == sorted(offsets) and batch.mark == (offsets[-1], 0)
            seen.setdefault(batch.source, []).extend(batch.speeds)
        assert seen == expected
    finally:
        gather.MAX_BATCH_READINGS = 10_000


@st.composite
def readings_in_time(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    """One-reading messages of several sources, event time moving on by up to 1.5 s a step (a backlog
    spans minutes), arrival disordered by less than the grace period."""
    count = draw(st.integers(1, 120))
    times, now = [], NOW
    for _ in range(count):
        now += draw(st.integers(0, 1500))
        times.append(now)
    jitter = draw(st.lists(st.integers(0, GRACE - 1), min_size=count, max_size=count))
    order = sorted(range(count), key=lambda i: (times[i] + jitter[i], i))
    sources = draw(st.lists(st.sampled_from("abcd"), min_size=count, max_size=count))
    return [(sources[i], times[i], draw(st.integers(0, 50))) for i in order]


@settings(max_examples=200, deadline=None)
@given(readings_in_time(), st.lists(st.integers(1, 60), min_size=1, max_size=10))
def test_gathered_batches_give_the_windows_of_the_input_order(readings, batch_sizes) -> None:
    """The window stage fed gathered batches closes exactly the windows an input-order oracle does:
    gathering reorders sources, but never by more than the grace period, so nothing turns late."""
    windowing, state, closed, offset = Windowing(PROPERTY_SPECS, GRACE), PartitionState(), {}, 0
    position = 0
    while position < len(readings):
        size = batch_sizes[offset % len(batch_sizes)]
        gathered = Gathered(max_span_ms=GRACE, partition_of=one_partition)  # one input batch of `size` messages
        for index in range(position, min(position + size, len(readings))):
            source, time, speed = readings[index]
            gathered.add(validate_message(single(source, speed, time), None, now_ms=NOW + 10**9, max_bytes=1 << 20),
                         0, index)
        for _, value in gathered.validated():
            changes = Changes()
            windowing.apply(state, offset, decode_validated(value), changes)
            offset += 1
            assert changes.late == []
            closed.update({(w.source, w.spec.label, w.start): w.aggregate.to_row() for w in changes.closed})
        position += size
    changes = Changes()
    windowing.apply(state, offset, IdleTick(0, state.max_time), changes)
    closed.update({(w.source, w.spec.label, w.start): w.aggregate.to_row() for w in changes.closed})
    expected, late = offline([[reading] for reading in readings], GRACE, PROPERTY_SPECS)
    assert late == {}
    assert closed == expected


def test_partitions_keep_segments_of_their_own() -> None:
    """A source far ahead in time cuts the segment of its own output partition only."""
    gathered = Gathered(max_span_ms=GRACE, partition_of=lambda source: 0 if source in "ab" else 1)
    for offset, (source, time) in enumerate([("a", NOW), ("c", NOW + 60_000), ("a", NOW + 1), ("c", NOW + 1)]):
        gathered.add(validate_message(single(source, 1, time), None, now_ms=NOW + 10**9, max_bytes=1 << 20), 0, offset)
    by_source = {}
    for batch in gathered.batches():
        by_source.setdefault(batch.source, []).append(len(batch))
    assert by_source == {"a": [2], "c": [1, 1]}
