"""What each Kafka message brings to the sink: rows to write, or a rejection for ``rtd.dlq``.

Decoding never raises (an agent that raises on input restarts and replays the
same input forever): a message that is not what its topic promises becomes a
:class:`Rejected` with a :class:`~rtdstream.validation.Reason`, and still
counts as consumed, so its offset is stored like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from rtdstream.models import IdleTick, ReadingBatch, dead_letter, decode_validated
from rtdstream.validation import Reason

STAGE = "sink"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A message or row for ``rtd.dlq``: why, the bytes, and where they came from."""

    reason: Reason
    detail: str
    raw: bytes
    partition: int
    offset: int
    source: str | None = None
    table: str | None = None

    def dead_letter(self, topic: str) -> bytes:
        extra = {"table": self.table} if self.table else {}
        return dead_letter(
            self.reason, self.raw, stage=STAGE, detail=self.detail, source=self.source,
            topic=topic, partition=self.partition, offset=self.offset, **extra,
        )


@dataclass(slots=True)
class Item:
    """One consumed message: at most one of readings, window or rejected is set (none for a tick)."""

    partition: int
    offset: int
    readings: ReadingBatch | None = None
    window: dict[str, Any] | None = None
    rejected: Rejected | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one transaction of a batch wrote: counted in the metrics once it is known to be committed."""

    written: dict[str, int]
    rejected: list[Rejected]
    replayed: int


@dataclass(slots=True)
class SinkBatch:
    """The messages one transaction writes; ``written`` turns true once it is committed.

    ``committing`` is the outcome of the last attempt that reached its COMMIT. A
    commit whose reply is lost (the connection drops) may have landed: the next
    attempt's ledger tells, and the outcome counted is then this one. (Should a
    rebalance meanwhile give the partitions to another worker that writes them,
    both count the rows; the tables still hold them once.)
    """

    topic: str
    items: list[Item]
    written: bool = False
    committing: Outcome | None = None

    def last_offsets(self) -> dict[int, int]:
        """Highest offset per partition in the batch."""
        offsets: dict[int, int] = {}
        for item in self.items:
            if item.offset > offsets.get(item.partition, -1):
                offsets[item.partition] = item.offset
        return offsets


def decode_readings(value: bytes | None, partition: int, offset: int) -> Item:
    """A ``rtd.validated`` message: a batch of readings, an idle tick (nothing to write) or a rejection."""
    item = Item(partition, offset)
    raw = value or b""
    try:
        decoded = decode_validated(raw)
    except orjson.JSONDecodeError as error:
        item.rejected = Rejected(Reason.NOT_JSON, str(error), raw, partition, offset)
    except KeyError as error:
        item.rejected = Rejected(Reason.MISSING_FIELD, str(error.args[0]), raw, partition, offset)
    except (AttributeError, TypeError, ValueError) as error:
        item.rejected = Rejected(Reason.WRONG_TYPE, f"not a batch of readings: {error}", raw, partition, offset)
    else:
        if isinstance(decoded, IdleTick):
            return item
        if not _well_formed(decoded):
            item.rejected = Rejected(
                Reason.WRONG_FIELD_TYPE, "source must be a string, time and speed arrays of equal length, origin 3 integers",
                raw, partition, offset,
            )
        else:
            item.readings = decoded
    return item


def _well_formed(batch: ReadingBatch) -> bool:
    return (
        isinstance(batch.source, str)
        and isinstance(batch.times, list)
        and isinstance(batch.speeds, list)
        and len(batch.times) == len(batch.speeds)
        and len(batch.origin) == 3
        and all(isinstance(part, int) for part in batch.origin)
    )


class WindowMessage(BaseModel):
    """A final window aggregate on ``rtd.windows`` (times and size/step in epoch ms)."""

    model_config = ConfigDict(strict=True, extra="ignore")

    source: str
    window: str
    size: int
    step: int
    start: int
    end: int
    count: int
    min: float
    max: float
    sum: float
    mean: float
    first_time: int
    last_time: int
    last_speed: float

    def row(self) -> dict[str, Any]:
        """Column values of ``window_aggregates``."""
        values = self.model_dump()
        values["size_ms"] = values.pop("size")
        values["step_ms"] = values.pop("step")
        return values


_WINDOW_REASONS = {"json_invalid": Reason.NOT_JSON, "model_type": Reason.WRONG_TYPE, "missing": Reason.MISSING_FIELD}


def decode_window(value: bytes | None, partition: int, offset: int) -> Item:
    """A ``rtd.windows`` message: a window row or a rejection naming the first problem."""
    item = Item(partition, offset)
    raw = value or b""
    try:
        item.window = WindowMessage.model_validate_json(raw).row()
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        item.rejected = Rejected(
            _WINDOW_REASONS.get(first["type"], Reason.WRONG_FIELD_TYPE),
            f"{where}: {first['msg']}" if where else first["msg"],
            raw, partition, offset, source=_source_of(raw),
        )
    return item


def _source_of(raw: bytes) -> str | None:
    try:
        source = orjson.loads(raw).get("source")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return source if isinstance(source, str) else None
