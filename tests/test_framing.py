"""The bridge's stream parser: records survive any chunking, garbage becomes dead letters."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdstream.bridge.framing import BadLine, Frame, LineFramer, Record
from rtdstream.validation import Reason

records = st.fixed_dictionaries(
    {"time": st.integers(946_684_800_000, 2_000_000_000_000).map(str), "speed": st.integers(0, 50).map(str)},
    optional={"source": st.sampled_from(["sensor-1", "sensor-2", "a.b:c"])},
)
line_endings = st.sampled_from([b"\n", b"\r\n"])
garbage_lines = st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b).filter(
    lambda b: not _is_json(b) and not b.strip().startswith((b":", b"data:", b"event:", b"id:", b"retry:"))
)


def _is_json(data: bytes) -> bool:
    try:
        orjson.loads(data.strip())
        return True
    except orjson.JSONDecodeError:
        return not data.strip()  # blank lines are skipped, not garbage


def feed_in_chunks(framer: LineFramer, data: bytes, cuts: list[int]) -> list[Frame]:
    frames: list[Frame] = []
    start = 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        frames += framer.feed(data[start:cut])
        start = cut
    return frames + framer.close()


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.tuples(records, line_endings, st.booleans()), max_size=30),
    st.lists(st.integers(0, 10_000), max_size=40),
)
def test_any_chunking_of_valid_records_yields_exactly_those_records_in_order(items, cuts) -> None:
    stream = b""
    for record, ending, sse in items:
        line = orjson.dumps(record)
        stream += (b"data: " + line if sse else line) + ending
    frames = feed_in_chunks(LineFramer(), stream, cuts)
    assert all(isinstance(frame, Record) for frame in frames)
    assert [frame.value for frame in frames] == [record for record, _, _ in items]


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(st.one_of(records.map(lambda r: ("record", r)), garbage_lines.map(lambda g: ("garbage", g))), max_size=30),
    st.lists(st.integers(0, 10_000), max_size=40),
)
def test_garbage_between_records_becomes_dead_letters_and_never_an_exception(items, cuts) -> None:
    stream = b"".join((orjson.dumps(v) if kind == "record" else v) + b"\n" for kind, v in items)
    frames = feed_in_chunks(LineFramer(), stream, cuts)
    assert [f.value for f in frames if isinstance(f, Record)] == [v for kind, v in items if kind == "record"]
    bad = [f for f in frames if isinstance(f, BadLine)]
    assert [f.raw for f in bad] == [v.strip() for kind, v in items if kind == "garbage"]
    assert all(f.reason in (Reason.NOT_JSON, Reason.BAD_ENCODING) and f.detail for f in bad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.lists(st.integers(0, 3000), max_size=20))
def test_arbitrary_bytes_never_raise(data: bytes, cuts: list[int]) -> None:
    frames = feed_in_chunks(LineFramer(max_line_bytes=100), data, cuts)
    assert all(isinstance(frame, (Record, BadLine)) for frame in frames)


def test_two_records_in_one_chunk_and_one_record_split_across_chunks() -> None:
    framer = LineFramer()
    first = framer.feed(b'{"time":"1795625575478","speed":"16"}\n{"time":"1795625575479","speed":"17"}\n{"ti')
    second = framer.feed(b'me":"1795625575480","speed":"18"}\n')
    assert [f.value["speed"] for f in first + second] == ["16", "17", "18"]


def test_sse_framing_comments_and_blank_lines_are_understood() -> None:
    framer = LineFramer()
    frames = framer.feed(
        b": keep-alive\r\n\r\nevent: reading\r\nid: 7\r\ndata: {\"time\":\"1795625575478\",\"speed\":\"3\"}\r\n\r\n"
    )
    assert [f.value for f in frames] == [{"time": "1795625575478", "speed": "3"}]


def test_endless_line_is_cut_off_reported_once_and_the_stream_resynchronises() -> None:
    framer = LineFramer(max_line_bytes=64)
    frames: list[Frame] = []
    frames += framer.feed(b'{"time":"1795625575478","speed":"1"}\n' + b"x" * 50)
    for _ in range(100):  # a megabyte-long line arrives in small chunks
        frames += framer.feed(b"y" * 10_000)
    frames += framer.feed(b'zzz\n{"time":"1795625575479","speed":"2"}\n')
    assert [type(f).__name__ for f in frames] == ["Record", "BadLine", "Record"]
    assert frames[1].reason == Reason.LINE_TOO_LONG and len(frames[1].raw) == 64
    assert frames[2].value["speed"] == "2"


def test_last_line_without_newline_counts_when_the_stream_ends() -> None:
    framer = LineFramer()
    assert framer.feed(b'{"time":"1795625575478","speed":"5"}') == []
    assert [f.value["speed"] for f in framer.close()] == ["5"]
