"""The validation rules as a table: each input, and what a user would expect of it."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdstream.models import encode_batch
from rtdstream.validation import DEFAULT_SOURCE, Reason, validate_message

NOW = 1_795_625_575_478
MAX = 4096


def as_bytes(value: object | bytes) -> bytes:
    return value if isinstance(value, bytes) else orjson.dumps(value)


def run(value: object | bytes, key: bytes | None = None):
    return validate_message(as_bytes(value), key, now_ms=NOW, max_bytes=MAX)


GOOD = [
    # (input, source, time, speed)
    ({"time": "1795625575478", "speed": "16"}, DEFAULT_SOURCE, 1795625575478, 16),
    ({"time": 1795625575478, "speed": 16.5}, DEFAULT_SOURCE, 1795625575478, 16.5),
    ({"time": "1795625575478", "speed": "0"}, DEFAULT_SOURCE, 1795625575478, 0),
    ({"time": "1795625575478", "speed": " 12 "}, DEFAULT_SOURCE, 1795625575478, 12),
    ({"time": "1795625575478", "speed": "1e3"}, DEFAULT_SOURCE, 1795625575478, 1000.0),
    ({"time": 1795625575478.0, "speed": 3}, DEFAULT_SOURCE, 1795625575478, 3),
    ({"time": "1795625575478", "speed": "7", "source": "sensor-1"}, "sensor-1", 1795625575478, 7),
    ({"time": "1795625575478", "speed": "7", "extra": [1, 2]}, DEFAULT_SOURCE, 1795625575478, 7),
    ({"time": str(NOW + 86_400_000), "speed": "1"}, DEFAULT_SOURCE, NOW + 86_400_000, 1),
    # beyond exact doubles, from a string as from a number: what a DOUBLE column holds
    ({"time": "1795625575478", "speed": "9" * 25}, DEFAULT_SOURCE, 1795625575478, float("9" * 25)),
    ({"time": "1795625575478", "speed": 2**60}, DEFAULT_SOURCE, 1795625575478, float(2**60)),
]


@pytest.mark.parametrize(("value", "source", "time", "speed"), GOOD)
def test_good_reading_is_coerced(value: dict, source: str, time: int, speed: float) -> None:
    result = run(value)
    assert result.rejections == []
    (batch,) = result.batches.values()
    assert (batch.source, batch.times, batch.speeds) == (source, [time], [speed])
    assert type(batch.speeds[0]) is type(speed)  # "16" stays an int, so newData shows "16"
    encode_batch(batch)  # and the validation stage can pass it on


BAD = [
    # (input, reason, words the detail must contain)
    (b"not json", Reason.NOT_JSON, ""),
    (b"\xff\xfe", Reason.BAD_ENCODING, "utf-8"),
    (b"", Reason.NOT_JSON, "empty"),
    (b"x" * (MAX + 1), Reason.OVERSIZE, f"> {MAX}"),
    ([1, 2], Reason.WRONG_TYPE, "array"),
    ("text", Reason.WRONG_TYPE, "string"),
    (None, Reason.WRONG_TYPE, "null"),
    ({"speed": "1"}, Reason.MISSING_FIELD, "time"),
    ({"time": "1795625575478"}, Reason.MISSING_FIELD, "speed"),
    ({"time": True, "speed": "1"}, Reason.WRONG_FIELD_TYPE, "boolean"),
    ({"time": [1], "speed": "1"}, Reason.WRONG_FIELD_TYPE, "array"),
    ({"time": "1795625575478", "speed": None}, Reason.WRONG_FIELD_TYPE, "null"),
    ({"time": "1795625575478", "speed": {"v": 1}}, Reason.WRONG_FIELD_TYPE, "object"),
    ({"time": 1795625575478.5, "speed": "1"}, Reason.WRONG_FIELD_TYPE, "whole"),
    ({"time": "soon", "speed": "1"}, Reason.NON_NUMERIC, "soon"),
    ({"time": "-5", "speed": "1"}, Reason.NON_NUMERIC, "-5"),
    ({"time": "1795625575478", "speed": "fast"}, Reason.NON_NUMERIC, "fast"),
    ({"time": "1795625575478", "speed": ""}, Reason.NON_NUMERIC, "speed"),
    ({"time": "1795625575478", "speed": "NaN"}, Reason.NOT_FINITE, "NaN"),
    ({"time": "1795625575478", "speed": "-Infinity"}, Reason.NOT_FINITE, "Infinity"),
    ({"time": "1795625575478", "speed": "1e400"}, Reason.NOT_FINITE, "1e400"),
    ({"time": "1795625575478", "speed": -1}, Reason.NEGATIVE_SPEED, "-1"),
    ({"time": "1795625575478", "speed": "-0.5"}, Reason.NEGATIVE_SPEED, "-0.5"),
    ({"time": "946684799999", "speed": "1"}, Reason.TIME_TOO_OLD, "2000"),
    ({"time": str(NOW + 86_400_001), "speed": "1"}, Reason.TIME_IN_FUTURE, "day"),
    ({"time": "1795625575478", "speed": "1", "source": 42}, Reason.BAD_SOURCE, "42"),
    ({"time": "1795625575478", "speed": "1", "source": "a b"}, Reason.BAD_SOURCE, "a b"),
    ({"time": "1795625575478", "speed": "1", "source": "x" * 65}, Reason.BAD_SOURCE, "xxx"),
    ({"source": "s", "readings": []}, Reason.WRONG_FIELD_TYPE, "non-empty"),
    ({"source": "s", "readings": {"time": 1}}, Reason.WRONG_FIELD_TYPE, "array"),
    ({"source": "", "readings": [{"time": "1795625575478", "speed": "1"}]}, Reason.BAD_SOURCE, "envelope"),
]


@pytest.mark.parametrize(("value", "reason", "detail"), BAD)
def test_bad_input_is_rejected_with_its_reason(value: object, reason: Reason, detail: str) -> None:
    result = run(value)
    assert result.accepted == 0
    (rejection,) = result.rejections
    assert rejection.reason == reason
    assert detail.lower() in rejection.detail.lower()
    assert rejection.raw == as_bytes(value)[:MAX]  # the raw bytes travel with the rejection


def test_envelope_keeps_good_readings_and_rejects_bad_ones_individually() -> None:
    envelope = {
        "source": "sensor-1",
        "readings": [
            {"time": "1795625575478", "speed": "1"},
            {"time": "1795625575479", "speed": "oops"},
            {"time": "1795625575480", "speed": "3", "source": "sensor-2"},
            7,
            {"time": "1795625575481", "speed": "4"},
        ],
    }
    result = run(envelope)
    assert {s: (b.times, b.speeds) for s, b in result.batches.items()} == {
        "sensor-1": ([1795625575478, 1795625575481], [1, 4]),
        "sensor-2": ([1795625575480], [3]),
    }
    assert [(r.reason, r.source) for r in result.rejections] == [
        (Reason.NON_NUMERIC, "sensor-1"),
        (Reason.WRONG_TYPE, "sensor-1"),
    ]
    # each rejected reading carries its own JSON, not the whole envelope
    assert orjson.loads(result.rejections[0].raw) == {"time": "1795625575479", "speed": "oops"}


def test_message_key_is_the_default_source() -> None:
    result = run({"time": "1795625575478", "speed": "1"}, key=b"dock-7")
    assert list(result.batches) == ["dock-7"]
    # an unusable key falls back to the default source instead of rejecting a good reading
    result = run({"time": "1795625575478", "speed": "1"}, key=b"\xff bad key")
    assert list(result.batches) == [DEFAULT_SOURCE]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300) | st.builds(orjson.dumps, st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["time", "speed", "source", "readings", "x"]), inner, max_size=4),
    max_leaves=12,
)), st.none() | st.binary(max_size=20))
def test_any_bytes_are_either_accepted_or_rejected_with_a_reason(raw: bytes, key: bytes | None) -> None:
    result = validate_message(raw, key, now_ms=NOW, max_bytes=MAX)
    for rejection in result.rejections:
        assert rejection.reason in set(Reason)
        assert isinstance(rejection.detail, str) and rejection.detail
    for batch in result.batches.values():
        assert len(batch.times) == len(batch.speeds) > 0
        assert all(isinstance(t, int) and t >= 946_684_800_000 for t in batch.times)
        assert all(s >= 0 for s in batch.speeds)
        encode_batch(batch)  # whatever is accepted, rtd.validated can carry
