"""The sink's ledger: what the database already holds of each partition, kept in the rows' transaction.

Each batch is one transaction that also records what it covers: per
partition, the last Kafka offset (``sink_offsets``) and, for readings, the
newest ``rtd.readings`` origin per input partition and source
(``sink_source_origins``, :mod:`rtdstream.origins`), both read under a lock when
the transaction starts. A batch replayed after the sink's crash, or handed to
another worker by a rebalance, finds its offsets stored; readings the
validation stage sent again after its own crash (same origins, new offsets,
maybe other batch boundaries) find their origins stored. Either way
:meth:`OffsetLedger.claim` leaves them out, so nothing is written twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from rtdstream.models import Mark
from rtdstream.origins import OriginMarks
from rtdstream.sink import schema
from rtdstream.sink.records import Item, SinkBatch
from rtdstream.sink.statements import Statements, stamp

log = logging.getLogger(__name__)

#: The next offset Kafka will assign in a partition of the batch's topic, if known.
Highwater = Callable[[str, int], int | None]


@dataclass(slots=True)
class Claim:
    """The part of a batch a transaction writes, and what it stores about it."""

    fresh: list[Item] = field(default_factory=list)
    #: partition -> last offset of the batch
    offsets: dict[int, int] = field(default_factory=dict)
    #: (partition, rtd.readings partition, source) -> newest (offset, index) of origin written
    origins: dict[tuple[int, int, str], Mark] = field(default_factory=dict)
    #: partitions whose topic was recreated: what was stored about them is void
    recreated: set[int] = field(default_factory=set)


class OffsetLedger:
    """Reads, under a lock, what is stored about a batch's partitions, and stores what the batch adds."""

    def __init__(self, highwater: Highwater | None = None) -> None:
        self._highwater = highwater

    async def claim(self, conn: AsyncConnection, batch: SinkBatch) -> Claim:
        """Lock what the database holds of the batch's partitions and keep the messages it lacks.

        Two kinds of repeats are dropped: messages at or below the stored
        offset (this sink consumed them before a crash or a rebalance), and
        readings whose origin, the part of an ``rtd.readings`` message they
        were validated from, is not newer than the newest origin written for
        their input partition and source (the validation stage re-sent them
        after its own crash, at new offsets).
        """
        last = batch.last_offsets()
        partitions = sorted(last)
        offsets = await self._stored_offsets(conn, batch.topic, partitions)
        has_readings = any(item.readings is not None for item in batch.items)
        marks = await self._stored_marks(conn, batch.topic, partitions) if has_readings else {}
        claim = Claim(recreated=self._recreated(batch.topic, offsets))
        for partition in claim.recreated:
            del offsets[partition]
            marks.pop(partition, None)
        claim.offsets = {p: offset for p, offset in last.items() if offset > offsets.get(p, -1)}
        for item in batch.items:
            if item.offset <= offsets.get(item.partition, -1):
                continue
            if item.readings is not None:
                fresh = marks.setdefault(item.partition, OriginMarks()).take(item.readings)
                if fresh is None:
                    continue
                if fresh.origin[0] >= 0:  # batches from other producers carry no origin
                    claim.origins[(item.partition, fresh.origin[0], fresh.source)] = fresh.mark
                item = replace(item, readings=fresh)
            claim.fresh.append(item)
        return claim

    async def _stored_offsets(self, conn: AsyncConnection, topic: str, partitions: list[int]) -> dict[int, int]:
        table = schema.sink_offsets
        query = (
            sa.select(table.c.partition, table.c.offset)
            .where(table.c.topic == topic, table.c.partition.in_(partitions))
            .order_by(table.c.partition)
            .with_for_update()
        )
        return {partition: offset for partition, offset in (await conn.execute(query)).all()}

    async def _stored_marks(
        self, conn: AsyncConnection, topic: str, partitions: list[int]
    ) -> dict[int, OriginMarks]:
        """Per partition of ``topic``: the origins written, per source, over the floors of older versions."""
        marks: dict[int, OriginMarks] = {}
        floors, per_source = schema.sink_origins, schema.sink_source_origins
        floor_rows = await conn.execute(
            sa.select(floors.c.partition, floors.c.origin_partition, floors.c.origin_offset, floors.c.origin_index)
            .where(floors.c.topic == topic, floors.c.partition.in_(partitions))
        )
        for partition, origin_partition, offset, index in floor_rows.all():
            marks.setdefault(partition, OriginMarks()).floors[origin_partition] = (offset, index)
        rows = await conn.execute(
            sa.select(
                per_source.c.partition, per_source.c.origin_partition, per_source.c.source,
                per_source.c.origin_offset, per_source.c.origin_index,
            )
            .where(per_source.c.topic == topic, per_source.c.partition.in_(partitions))
            .order_by(per_source.c.partition, per_source.c.origin_partition, per_source.c.source)
            .with_for_update()
        )
        for partition, origin_partition, source, offset, index in rows.all():
            marks.setdefault(partition, OriginMarks()).marks[(origin_partition, source)] = (offset, index)
        return marks

    def _recreated(self, topic: str, offsets: dict[int, int]) -> set[int]:
        """Partitions whose stored offset lies past their end: a new topic under the old name.

        Offsets never go back within one topic, so this happens only when the
        topic was deleted and created again (e.g. a restarted in-memory
        broker); what was stored about it then says nothing about the new one.
        """
        stale = set()
        for partition, offset in offsets.items():
            end = self._highwater(topic, partition) if self._highwater else None
            if end is not None and offset >= end:
                log.warning(
                    "sink: stored offset %d of %s[%d] is past the partition's end (%d); the topic was "
                    "recreated, so its messages are written from the start",
                    offset, topic, partition, end,
                )
                stale.add(partition)
        return stale

    async def remember(
        self, conn: AsyncConnection, statements: Statements, topic: str, claim: Claim, now: datetime
    ) -> None:
        """Store the batch's last offsets and newest origins, in the transaction of its rows."""
        for table in (schema.sink_origins, schema.sink_source_origins) if claim.recreated else ():
            await conn.execute(
                sa.delete(table).where(table.c.topic == topic, table.c.partition.in_(sorted(claim.recreated)))
            )
        updated_at = stamp(now)
        if claim.offsets:
            await statements.offsets.execute(
                conn, [(topic, p, offset, updated_at) for p, offset in claim.offsets.items()]
            )
        if claim.origins:
            await statements.origins.execute(
                conn,
                [(topic, p, origin_p, source, offset, index, updated_at)
                 for (p, origin_p, source), (offset, index) in claim.origins.items()],
            )
