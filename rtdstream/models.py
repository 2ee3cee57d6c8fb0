"""The records that travel between stages, and their JSON encoding.

Readings travel in batches of one source (a Faust agent's per-message cost
dominates), stored column-wise so the window and sink stages can run ``min``,
``max``, ``sum`` and ``zip`` over plain lists. Everything on the wire is JSON
encoded with orjson; decoding of untrusted bytes happens only in the
validation stage, so the decoders here trust their input's shape.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

Speed = int | float


@dataclass(slots=True)
class ReadingBatch:
    """Validated readings of one source, in arrival order.

    ``origin`` is ``(partition, offset, index)`` of the ``rtd.readings``
    message the batch came from: replays of that message produce the same
    origin, which lets the window stage skip batches it has already counted.
    """

    source: str
    times: list[int] = field(default_factory=list)
    speeds: list[Speed] = field(default_factory=list)
    origin: tuple[int, int, int] = (-1, -1, 0)

    def __len__(self) -> int:
        return len(self.times)

    def append(self, time: int, speed: Speed) -> None:
        self.times.append(time)
        self.speeds.append(speed)


@dataclass(frozen=True, slots=True)
class IdleTick:
    """A marker the window stage puts into its own input when a partition goes idle.

    Processing it closes the windows that were open when the tick was made.
    Because it travels through the topic, a replay after a crash closes the
    same windows at the same point of the stream.
    """

    partition: int
    max_time: int


def encode_batch(batch: ReadingBatch) -> bytes:
    return orjson.dumps(
        {"source": batch.source, "origin": batch.origin, "time": batch.times, "speed": batch.speeds}
    )


def encode_envelope(batch: ReadingBatch) -> bytes:
    """An ``rtd.readings`` message as the bridge writes it: ``{"source": s, "readings": [{time, speed}, ...]}``."""
    readings = [{"time": time, "speed": speed} for time, speed in zip(batch.times, batch.speeds)]
    return orjson.dumps({"source": batch.source, "readings": readings})


def encode_tick(tick: IdleTick) -> bytes:
    return orjson.dumps({"tick": {"partition": tick.partition, "max_time": tick.max_time}})


def decode_validated(data: bytes) -> ReadingBatch | IdleTick:
    """Decode a ``rtd.validated`` message (written by rtdstream, so trusted)."""
    obj = orjson.loads(data)
    tick = obj.get("tick")
    if tick is not None:
        return IdleTick(partition=tick["partition"], max_time=tick["max_time"])
    return ReadingBatch(
        source=obj["source"], times=obj["time"], speeds=obj["speed"], origin=tuple(obj["origin"])
    )


def legacy_payload(time: int, speed: Speed) -> dict[str, str]:
    """The original backend's ``newData`` payload: both fields as strings."""
    return {"time": str(time), "speed": str(speed)}


def raw_field(raw: bytes) -> dict[str, str]:
    """Raw bytes for a JSON record: as text when they are UTF-8, else base64."""
    try:
        return {"raw": raw.decode("utf-8"), "raw_encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"raw": base64.b64encode(raw).decode("ascii"), "raw_encoding": "base64"}


#: Most bytes of the rejected input a dead letter keeps. The record must stay under the producers'
#: request limit (Faust's default is 1,000,000 bytes) even when JSON escapes each kept byte to six;
#: a bigger one made the worker's send fail and crashed the agent that rejected a 2 MB message.
DEAD_LETTER_RAW_LIMIT = 128 * 1024
#: Most characters of a dead letter's detail (details quote input, which can be of any length).
DEAD_LETTER_DETAIL_LIMIT = 1000


def dead_letter(
    reason: str,
    raw: bytes,
    *,
    stage: str,
    detail: str = "",
    source: str | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    **extra: Any,
) -> bytes:
    """A ``rtd.dlq`` record: why, what exactly (cut to a bounded size), and where it came from."""
    record: dict[str, Any] = {
        "reason": reason,
        "detail": detail[:DEAD_LETTER_DETAIL_LIMIT],
        "stage": stage,
        "source": source,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        **raw_field(raw[:DEAD_LETTER_RAW_LIMIT]),
        **extra,
    }
    if len(raw) > DEAD_LETTER_RAW_LIMIT:
        record.update(raw_truncated=True, raw_size=len(raw))
    return orjson.dumps(record)
