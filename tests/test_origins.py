"""Replays of the validation stage, with other batch boundaries, are applied exactly once (pure logic)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rtdstream.models import ReadingBatch, decode_validated, encode_batch
from rtdstream.origins import OriginMarks

SOURCES = ["a", "b", "c"]

#: An input message: (offset, source, reading count); readings are (offset, position) pairs.
Message = tuple[int, str, int]


def coalesce(messages: list[Message], cuts: list[bool]) -> list[ReadingBatch]:
    """Batches as the validation stage makes them: per input batch (cut where ``cuts`` says), one per source."""
    batches: list[ReadingBatch] = []
    pending: dict[str, ReadingBatch] = {}
    for (offset, source, count), cut in zip(messages, cuts):
        batch = pending.setdefault(source, ReadingBatch(source, parts=[]))
        for position in range(count):
            batch.append(offset, position)
        batch.parts.append((offset, 0, count))
        batch.origin = (3, offset, 0)
        if cut:
            batches.extend(pending.values())
            pending = {}
    batches.extend(pending.values())
    return batches


@st.composite
def runs(draw: st.DrawFn) -> tuple[list[Message], list[bool], int, int, list[bool]]:
    count = draw(st.integers(1, 40))
    messages = [(offset, draw(st.sampled_from(SOURCES)), draw(st.integers(1, 3))) for offset in range(count)]
    first_cuts = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    replay_cuts = draw(st.lists(st.booleans(), min_size=count, max_size=count))
    # The replay starts after the last input batch acknowledged, and that batch's output had all landed.
    ends = [0] + [offset + 1 for offset, cut in enumerate(first_cuts) if cut]
    committed = draw(st.sampled_from(ends))
    at_least = len(coalesce(messages[:committed], first_cuts[:committed]))
    return messages, first_cuts, committed, draw(st.integers(at_least, 4 * count)), replay_cuts


@settings(max_examples=300, deadline=None)
@given(runs())
def test_every_reading_is_taken_once_when_a_prefix_landed_and_the_input_is_replayed(run) -> None:
    messages, first_cuts, committed, landed, replay_cuts = run
    first = coalesce(messages, first_cuts)
    # The crash: the broker kept a prefix of what was sent; the input from `committed` on is validated again.
    delivered = first[:landed] + coalesce(messages[committed:], replay_cuts[committed:])
    marks, taken = OriginMarks(), []
    for batch in delivered:
        reloaded = decode_validated(encode_batch(batch))  # as the next stage reads it
        assert isinstance(reloaded, ReadingBatch)
        fresh = marks.take(reloaded)
        if fresh is not None:
            taken.extend(zip(fresh.times, fresh.speeds))
            marks = OriginMarks.from_json(marks.to_json())  # and as it restores its state
    expected = [(offset, position) for offset, _, count in messages for position in range(count)]
    # Exactly once each; per source in input order.
    assert sorted(taken) == expected
    for source in SOURCES:
        mine = [(o, p) for o, p in taken if messages[o][1] == source]
        assert mine == sorted(mine)


def test_a_floor_from_before_per_source_marks_holds_for_every_source() -> None:
    marks = OriginMarks(floors={3: (10, 0)})
    old = ReadingBatch("b", [1], [1], origin=(3, 10, 0))
    assert marks.take(old) is None
    newer = ReadingBatch("b", [1, 2], [1, 2], origin=(3, 11, 0), parts=[(10, 0, 1), (11, 0, 1)])
    fresh = marks.take(newer)
    assert fresh is not None and fresh.times == [2] and marks.marks == {(3, "b"): (11, 0)}


def test_batches_of_other_producers_carry_no_origin_and_are_always_new() -> None:
    batch = ReadingBatch("x", [1], [1])
    marks = OriginMarks()
    assert marks.take(batch) is batch and marks.take(batch) is batch
