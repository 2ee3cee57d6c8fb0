"""Turn untrusted ``rtd.readings`` messages into validated batches and rejections.

This is pure logic with no I/O, so the agent that calls it can never crash on
input (an exception inside a Faust agent restarts the agent) and the rules can
be tested as a table. A message is either an envelope ``{"source": s, "readings": [...]}`` (what the bridge
sends) or a single reading ``{"time": ..., "speed": ..., "source"?: ...}``
(what other producers send). The original simulator's strings are coerced:
``"time": "1795625575478"`` becomes an int, ``"speed": "16"`` a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from rtdstream.config import is_valid_source_id
from rtdstream.models import ReadingBatch, Speed

#: 2000-01-01T00:00:00Z: readings before it are clock errors, not history.
EARLIEST_TIME_MS = 946_684_800_000
#: How far ahead of this machine's clock a reading may be.
MAX_FUTURE_MS = 86_400_000
DEFAULT_SOURCE = "default"


class Reason(StrEnum):
    """Why a record went to ``rtd.dlq``; the values are metric labels and stay stable."""

    NOT_JSON = "not_json"
    BAD_ENCODING = "bad_encoding"
    OVERSIZE = "oversize"
    WRONG_TYPE = "wrong_type"
    MISSING_FIELD = "missing_field"
    WRONG_FIELD_TYPE = "wrong_field_type"
    NON_NUMERIC = "non_numeric"
    NOT_FINITE = "not_finite"
    NEGATIVE_SPEED = "negative_speed"
    TIME_TOO_OLD = "time_too_old"
    TIME_IN_FUTURE = "time_in_future"
    BAD_SOURCE = "bad_source"
    LINE_TOO_LONG = "line_too_long"
    LATE = "late"
    DB_REJECTED = "db_rejected"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    detail: str
    raw: bytes
    source: str | None = None


@dataclass(slots=True)
class Validated:
    """What one message yields: batches per source (in first-seen order) and rejections."""

    batches: dict[str, ReadingBatch] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(len(batch) for batch in self.batches.values())


class _Invalid(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def validate_message(
    raw: bytes | None, key: bytes | None, *, now_ms: int, max_bytes: int
) -> Validated:
    """Validate one Kafka message; never raises on any input."""
    result = Validated()
    raw = raw or b""
    default_source = _source_from_key(key)
    if len(raw) > max_bytes:
        result.rejections.append(
            Rejection(Reason.OVERSIZE, f"{len(raw)} bytes > {max_bytes}", raw[:max_bytes], default_source)
        )
        return result
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        result.rejections.append(Rejection(json_error_reason(exc), str(exc), raw, default_source))
        return result
    if not isinstance(obj, dict):
        result.rejections.append(
            Rejection(Reason.WRONG_TYPE, f"message is a JSON {_json_type(obj)}, not an object", raw, default_source)
        )
        return result
    if "readings" in obj:
        _validate_envelope(obj, raw, default_source, now_ms, result)
    else:
        _add_reading(obj, raw, default_source, now_ms, result)
    return result


def _validate_envelope(
    envelope: dict[str, Any], raw: bytes, default_source: str, now_ms: int, result: Validated
) -> None:
    source = envelope.get("source", default_source)
    readings = envelope["readings"]
    if not isinstance(source, str) or not is_valid_source_id(source):
        result.rejections.append(Rejection(Reason.BAD_SOURCE, f"envelope source {source!r}", raw, None))
        return
    if not isinstance(readings, list) or not readings:
        result.rejections.append(
            Rejection(Reason.WRONG_FIELD_TYPE, "readings must be a non-empty array", raw, source)
        )
        return
    for reading in readings:
        _add_reading(reading, None, source, now_ms, result)


def _add_reading(
    obj: Any, raw: bytes | None, default_source: str, now_ms: int, result: Validated
) -> None:
    try:
        source, time, speed = validate_reading(obj, default_source, now_ms)
    except _Invalid as invalid:
        raw_bytes = raw if raw is not None else orjson.dumps(obj)
        source = obj.get("source") if isinstance(obj, dict) else None
        # The dead letter's key and source field: never an id that failed validation (it may be 1 MB long).
        if not (isinstance(source, str) and is_valid_source_id(source)):
            source = default_source
        result.rejections.append(Rejection(invalid.reason, invalid.detail, raw_bytes, source))
        return
    batch = result.batches.get(source)
    if batch is None:
        batch = result.batches[source] = ReadingBatch(source)
    batch.append(time, speed)


def json_error_reason(error: orjson.JSONDecodeError) -> Reason:
    """Why bytes are not a JSON document: bad UTF-8, a number no double can hold, or not JSON."""
    message = str(error).lower()
    if "utf-8" in message:
        return Reason.BAD_ENCODING
    if "infinity" in message:  # valid JSON such as 1e400 or a 400-digit integer
        return Reason.NOT_FINITE
    return Reason.NOT_JSON


def validate_reading(obj: Any, default_source: str, now_ms: int) -> tuple[str, int, Speed]:
    """(source, time, speed) of a valid reading; raises :class:`_Invalid` with the reason."""
    if not isinstance(obj, dict):
        raise _Invalid(Reason.WRONG_TYPE, f"reading is a JSON {_json_type(obj)}, not an object")
    if "time" not in obj:
        raise _Invalid(Reason.MISSING_FIELD, "time")
    if "speed" not in obj:
        raise _Invalid(Reason.MISSING_FIELD, "speed")
    source = obj.get("source", default_source)
    # The default is checked already (the envelope's source, or the key's), and readings repeat it.
    if source != default_source and not (isinstance(source, str) and is_valid_source_id(source)):
        raise _Invalid(Reason.BAD_SOURCE, f"source {source!r}")
    time = _coerce_time(obj["time"])
    if time < EARLIEST_TIME_MS:
        raise _Invalid(Reason.TIME_TOO_OLD, f"time {time} is before 2000-01-01")
    if time > now_ms + MAX_FUTURE_MS:
        raise _Invalid(Reason.TIME_IN_FUTURE, f"time {time} is more than a day ahead of {now_ms}")
    speed = _coerce_speed(obj["speed"])
    return source, time, speed


def _coerce_time(value: Any) -> int:
    if type(value) is str and value.isdigit() and value.isascii() and len(value) <= 16:
        return int(value)  # the common case first: the original simulator's "1795625575478"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Invalid(Reason.WRONG_FIELD_TYPE, f"time is a JSON {_json_type(value)}")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Invalid(Reason.NOT_FINITE, "time")
        if not value.is_integer():
            raise _Invalid(Reason.WRONG_FIELD_TYPE, "time must be whole epoch milliseconds")
        return int(value)
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 16:
        raise _Invalid(Reason.NON_NUMERIC, f"time {value[:40]!r} is not epoch milliseconds")
    return int(text)


def _coerce_speed(value: Any) -> Speed:
    if type(value) is str and value.isdigit() and value.isascii() and len(value) <= 15:
        return int(value)  # the common case first: the original simulator's "16", exact in a double
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _Invalid(Reason.WRONG_FIELD_TYPE, f"speed is a JSON {_json_type(value)}")
    speed: Speed = _parse_number(value) if isinstance(value, str) else value
    if isinstance(speed, int) and abs(speed) > 2**53:
        # Beyond exact doubles: what a DOUBLE column holds. (A string of 20 digits once went on as an
        # integer orjson cannot encode, and the validation stage failed on it at every replay.)
        speed = float(speed)
    if isinstance(speed, float) and not math.isfinite(speed):
        raise _Invalid(Reason.NOT_FINITE, f"speed {value!r}"[:60])
    if speed < 0:
        raise _Invalid(Reason.NEGATIVE_SPEED, f"speed {speed}")
    return speed


def _parse_number(text: str) -> Speed:
    stripped = text.strip()
    if len(stripped) > 32 or not stripped.isascii():
        raise _Invalid(Reason.NON_NUMERIC, f"speed {text[:40]!r}")
    try:
        return int(stripped)
    except ValueError:
        pass
    try:
        return float(stripped)
    except ValueError:
        raise _Invalid(Reason.NON_NUMERIC, f"speed {text[:40]!r}") from None


def _source_from_key(key: bytes | None) -> str:
    if key:
        try:
            source = key.decode("utf-8")
        except UnicodeDecodeError:
            return DEFAULT_SOURCE
        if is_valid_source_id(source):
            return source
    return DEFAULT_SOURCE


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return names.get(type(value), type(value).__name__)
