"""Exactly-once writes of consumed Kafka batches into the database.

The writer writes one batch as one transaction: the rows it lacks (the
:class:`~rtdstream.sink.ledger.OffsetLedger` leaves out what a crash or a
rebalance replays) with the compiled statements of
:mod:`rtdstream.sink.statements`, and what the batch covers, recorded by the
ledger in the same transaction. That is what makes even the key-less legacy
``Data`` table exact; the upserts on natural keys are a second line of defence
for ``readings`` and ``window_aggregates``. Rows the database refuses go to
``rtd.dlq``. Whether to try again after a failed attempt is
:mod:`rtdstream.sink.retrying`'s decision.

A commit whose reply is lost (the connection drops after MariaDB committed)
fails the attempt though the rows are stored. The retry's ledger finds them and
writes nothing, and the metrics count what the lost commit wrote
(``SinkBatch.committing``): ``rtd_sink_rows_written_total`` stays the rows the
worker wrote, which the tests compare with the rows the tables hold.

The caller acknowledges the Kafka messages only after
:meth:`SinkWriter.write_until_done` returns, so Kafka's committed offset
(where consumption resumes) never passes a row that is not in the database.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rtdstream import metrics
from rtdstream.sink import schema
from rtdstream.sink.database import is_row_error, reason
from rtdstream.sink.ledger import Highwater, OffsetLedger
from rtdstream.sink.records import STAGE, Item, Outcome, Rejected, SinkBatch
from rtdstream.sink.retrying import write_until_done
from rtdstream.sink.statements import Row, Statement, Statements, reading_rows, stamp, window_rows
from rtdstream.validation import Reason

log = logging.getLogger(__name__)

#: Sends rejected messages and rows to ``rtd.dlq`` and returns once the broker has them.
DeadLetterSender = Callable[[str, list[Rejected]], Awaitable[None]]
_NOT_IN_DLQ_RECORD = ("updated_at", "createdAt", "updatedAt")

__all__ = ["DeadLetterSender", "Highwater", "SinkWriter"]


class SinkWriter:
    """Writes batches of consumed messages to ``readings`` (and ``Data``) or ``window_aggregates``."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        send_dead_letters: DeadLetterSender,
        legacy: bool = False,
        highwater: Highwater | None = None,
    ) -> None:
        self.engine = engine
        self.legacy = legacy
        self._send_dead_letters = send_dead_letters
        self._ledger = OffsetLedger(highwater)
        self._statements: Statements | None = None

    async def close(self) -> None:
        await self.engine.dispose()

    async def write_until_done(self, batch: SinkBatch) -> None:
        """Write ``batch``, waiting out database outages (:mod:`rtdstream.sink.retrying`); a bug ends the worker."""
        await write_until_done(self.write, batch)

    async def write(self, batch: SinkBatch) -> None:
        """One attempt at the batch's transaction; rows the database refuses go to ``rtd.dlq``."""
        try:
            await self._transaction(batch, isolate=False)
        except Exception as error:
            if not is_row_error(error):
                raise
            log.warning(
                "sink: the database refused rows of a batch from %s (%s); "
                "writing the rest and sending the refused rows to rtd.dlq",
                batch.topic, reason(error),
            )
            await self._transaction(batch, isolate=True)

    async def _transaction(self, batch: SinkBatch, *, isolate: bool) -> None:
        now = schema.utc_now()
        async with self.engine.begin() as conn:
            if self._statements is None:
                self._statements = Statements.compile(conn.dialect)
            statements = self._statements
            claim = await self._ledger.claim(conn, batch)
            written, rejected = await self._write_items(conn, statements, claim.fresh, now, isolate=isolate)
            await self._ledger.remember(conn, statements, batch.topic, claim, now)
            if rejected:
                await self._send_dead_letters(batch.topic, rejected)
            outcome = Outcome(written, rejected, replayed=len(batch.items) - len(claim.fresh))
            if batch.committing is not None and not claim.fresh:
                # The earlier attempt's commit landed, its reply did not: what it wrote is this
                # batch's outcome, not a replay (the ledger, read under its lock, says all is stored).
                outcome = batch.committing
            batch.committing = outcome
        batch.written = True
        _count(outcome)

    async def _write_items(
        self, conn: AsyncConnection, statements: Statements, items: list[Item], now: datetime, *, isolate: bool
    ) -> tuple[dict[str, int], list[Rejected]]:
        """Upsert the rows of ``items``: (rows written per table, rejections for ``rtd.dlq``)."""
        rejected = [item.rejected for item in items if item.rejected]
        written: dict[str, int] = {}

        async def put(statement: Statement, rows: list[Row], origins: list[Item]) -> tuple[list[Row], list[Item]]:
            rows, origins, refused = await self._insert(conn, statement, rows, origins, isolate=isolate)
            if rows:
                written[statement.table] = len(rows)
            rejected.extend(refused)
            return rows, origins

        readings, origins = await put(statements.readings, *reading_rows(items))
        if self.legacy:
            seconds = stamp(now, timespec="seconds")  # Sequelize keeps whole seconds
            legacy = [(str(time), str(speed), seconds, seconds) for _, time, speed in readings]
            await put(statements.legacy, legacy, origins)
        await put(statements.windows, *window_rows(items, stamp(now)))
        return written, rejected

    async def _insert(
        self, conn: AsyncConnection, statement: Statement, rows: list[Row], origins: list[Item], *, isolate: bool
    ) -> tuple[list[Row], list[Item], list[Rejected]]:
        """Execute ``statement`` for ``rows``: (rows written, their origins, rejections of refused rows).

        Without ``isolate`` it is one statement and a refusal raises. With it,
        the rows go in under savepoints, halving the failing ranges until each
        refused row stands alone: k bad rows of n cost about k*log2(n) statements.
        """
        if not rows:
            return rows, origins, []
        if not isolate:
            await statement.execute(conn, rows)
            return rows, origins, []
        refused: dict[int, BaseException] = {}
        await self._isolate(conn, statement, rows, 0, len(rows), refused)
        kept = [index for index in range(len(rows)) if index not in refused]
        rejections = []
        for index, error in sorted(refused.items()):
            values = statement.as_dict(rows[index])
            rejections.append(Rejected(
                Reason.DB_REJECTED, reason(error), _dead_letter_json(values),
                origins[index].partition, origins[index].offset, source=values.get("source"), table=statement.table,
            ))
        return [rows[index] for index in kept], [origins[index] for index in kept], rejections

    async def _isolate(
        self, conn: AsyncConnection, statement: Statement, rows: list[Row],
        low: int, high: int, refused: dict[int, BaseException],
    ) -> None:
        try:
            async with conn.begin_nested():
                await statement.execute(conn, rows[low:high])
        except Exception as error:
            if not is_row_error(error):
                raise
            if high - low == 1:
                refused[low] = error
                return
            middle = (low + high) // 2
            await self._isolate(conn, statement, rows, low, middle, refused)
            await self._isolate(conn, statement, rows, middle, high, refused)


def _dead_letter_json(values: dict[str, Any]) -> bytes:
    return orjson.dumps({key: value for key, value in values.items() if key not in _NOT_IN_DLQ_RECORD})


def _count(outcome: Outcome) -> None:
    """Add a committed transaction's outcome to the sink's metrics."""
    for table, count in outcome.written.items():
        metrics.SINK_ROWS_WRITTEN.labels(table).inc(count)
    for rejection in outcome.rejected:
        metrics.READINGS_REJECTED.labels(STAGE, rejection.reason).inc()
    metrics.SINK_REPLAYED.inc(outcome.replayed)
