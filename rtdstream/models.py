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


#: ``(offset, index, count)``: ``count`` readings from the ``index``-th source batch of the
#: ``rtd.readings`` message at ``offset``.
Part = tuple[int, int, int]
#: ``(offset, index)`` of the newest part applied from an input partition: a replay is at or below it.
Mark = tuple[int, int]


@dataclass(slots=True)
class ReadingBatch:
    """Validated readings of one source, in arrival order.

    ``origin`` is ``(partition, offset, index)`` of the ``rtd.readings``
    message the batch's last readings came from. A batch that gathers several
    input messages lists them in ``parts``, oldest first; without ``parts`` the
    whole batch is one part, at ``origin``. A replay of the input after a crash
    produces the same parts (each input message validates the same way), though
    not necessarily the same batches: :meth:`since` is how later stages keep
    exactly the parts they have not applied yet.
    """

    source: str
    times: list[int] = field(default_factory=list)
    speeds: list[Speed] = field(default_factory=list)
    origin: tuple[int, int, int] = (-1, -1, 0)
    parts: list[Part] | None = None

    def __len__(self) -> int:
        return len(self.times)

    def append(self, time: int, speed: Speed) -> None:
        self.times.append(time)
        self.speeds.append(speed)

    def origin_parts(self) -> list[Part]:
        return self.parts if self.parts is not None else [(self.origin[1], self.origin[2], len(self.times))]

    @property
    def mark(self) -> Mark:
        """The newest part's position: what a stage remembers once it applied this batch."""
        return self.origin[1], self.origin[2]

    def since(self, mark: Mark | None) -> ReadingBatch | None:
        """The readings of the parts newer than ``mark``: the batch itself, a tail of it, or None."""
        if mark is None or self.origin[0] < 0:
            return self
        parts = self.origin_parts()
        skip = skipped = 0
        while skip < len(parts) and (parts[skip][0], parts[skip][1]) <= mark:
            skipped += parts[skip][2]
            skip += 1
        if skip == 0:
            return self
        if skip == len(parts):
            return None
        return ReadingBatch(
            self.source, self.times[skipped:], self.speeds[skipped:], self.origin, parts[skip:]
        )


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
    record: dict[str, Any] = {"source": batch.source, "origin": batch.origin, "time": batch.times, "speed": batch.speeds}
    if batch.parts is not None and len(batch.parts) > 1:
        record["parts"] = batch.parts
    return orjson.dumps(record)


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
    parts = obj.get("parts")
    return ReadingBatch(
        source=obj["source"], times=obj["time"], speeds=obj["speed"], origin=tuple(obj["origin"]),
        parts=[tuple(part) for part in parts] if parts is not None else None,
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
