"""Exactly-once writes of consumed Kafka batches into the database.

Each batch is one transaction that also records what it covers: per
partition, the last Kafka offset (``sink_offsets``) and, for readings, the
newest ``rtd.readings`` origin per input partition and source
(``sink_source_origins``, :mod:`rtdstream.origins`), both read under a lock when
the transaction starts. A batch replayed after the sink's crash, or handed to
another worker by a rebalance, finds its offsets stored; readings the
validation stage sent again after its own crash (same origins, new offsets,
maybe other batch boundaries) find their origins stored. Either way nothing is written twice, which is what
makes even the key-less legacy ``Data`` table exact; the upserts on natural
keys are a second line of defence for ``readings`` and ``window_aggregates``.

The caller acknowledges the Kafka messages only after
:meth:`SinkWriter.write_until_done` returns, so Kafka's committed offset
(where consumption resumes) never passes a row that is not in the database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from rtdstream import metrics
from rtdstream.backoff import Backoff
from rtdstream.models import Mark
from rtdstream.origins import OriginMarks
from rtdstream.retry import exit_on_bug, is_transient
from rtdstream.sink import schema
from rtdstream.sink.database import is_row_error, reason
from rtdstream.sink.records import STAGE, Item, Rejected, SinkBatch
from rtdstream.validation import Reason

log = logging.getLogger(__name__)

#: Sends rejected messages and rows to ``rtd.dlq`` and returns once the broker has them.
DeadLetterSender = Callable[[str, list[Rejected]], Awaitable[None]]
#: The next offset Kafka will assign in a partition of the batch's topic, if known.
Highwater = Callable[[str, int], int | None]

RETRY_INITIAL = 0.5
RETRY_CAP = 15.0
#: How long a stopping sink lets a transaction in flight finish before abandoning it.
FINISH_SECONDS = 10.0
_NOT_IN_DLQ_RECORD = ("updated_at", "createdAt", "updatedAt")
#: Columns the sink writes; ``readings.ingested_at`` is the database's own commit-time stamp.
READING_COLUMNS = ("source", "time", "speed")
WINDOW_COLUMNS = tuple(column.name for column in schema.window_aggregates.columns if column.name != "id")
WINDOW_KEY = ("source", "window", "start")
Row = tuple[Any, ...]


@dataclass(slots=True)
class _Claim:
    """The part of a batch a transaction writes, and what it stores about it."""

    fresh: list[Item] = field(default_factory=list)
    #: partition -> last offset of the batch
    offsets: dict[int, int] = field(default_factory=dict)
    #: (partition, rtd.readings partition, source) -> newest (offset, index) of origin written
    origins: dict[tuple[int, int, str], Mark] = field(default_factory=dict)
    #: partitions whose topic was recreated: what was stored about them is void
    recreated: set[int] = field(default_factory=set)


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
        self._highwater = highwater
        self._statements: Statements | None = None

    async def close(self) -> None:
        await self.engine.dispose()

    async def write_until_done(self, batch: SinkBatch) -> None:
        """Write ``batch``, retrying with capped backoff for as long as the database is away.

        Not returning is the backpressure: the agent takes no new input while
        its batch waits. On cancellation (the worker stopping) a transaction in
        flight may finish first; ``batch.written`` tells whether it did. An
        error that is no outage (:func:`rtdstream.retry.is_transient`) ends the
        worker instead: the batch is not acknowledged, so a restart writes it.
        """
        backoff = Backoff(initial=RETRY_INITIAL, cap=RETRY_CAP)
        failures = 0
        loop = asyncio.get_running_loop()
        first_failure = loop.time()
        while True:
            attempt = asyncio.ensure_future(self.write(batch))
            try:
                await asyncio.shield(attempt)
            except asyncio.CancelledError:
                await _finish_or_abandon(attempt)
                raise
            except Exception as error:  # noqa: BLE001  (every failure keeps the batch; none may lose it)
                if not is_transient(error):
                    exit_on_bug(f"sink: writing {len(batch.items)} message(s) from {batch.topic}", error)
                if not failures:
                    first_failure = loop.time()
                failures += 1
                delay = backoff.next()
                metrics.SINK_RETRIES.inc()
                self._log_failure(batch, error, failures, delay)
                await asyncio.sleep(delay)
            else:
                if failures:
                    log.info(
                        "sink: database back; batch from %s written after %d failed attempt(s) over %.1fs",
                        batch.topic, failures, loop.time() - first_failure,
                    )
                return

    def _log_failure(self, batch: SinkBatch, error: Exception, failures: int, delay: float) -> None:
        log.warning(
            "sink: writing %d message(s) from %s failed (attempt %d): %s; batch kept, retrying in %.1fs",
            len(batch.items), batch.topic, failures, reason(error), delay,
        )

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
            claim = await self._claim(conn, batch)
            written, rejected = await self._write_items(conn, statements, claim.fresh, now, isolate=isolate)
            await self._remember(conn, statements, batch.topic, claim, now)
            if rejected:
                await self._send_dead_letters(batch.topic, rejected)
        batch.written = True
        for table, count in written.items():
            metrics.SINK_ROWS_WRITTEN.labels(table).inc(count)
        for rejection in rejected:
            metrics.READINGS_REJECTED.labels(STAGE, rejection.reason).inc()
        metrics.SINK_REPLAYED.inc(len(batch.items) - len(claim.fresh))

    async def _claim(self, conn: AsyncConnection, batch: SinkBatch) -> _Claim:
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
        claim = _Claim(recreated=self._recreated(batch.topic, offsets))
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

    async def _remember(
        self, conn: AsyncConnection, statements: Statements, topic: str, claim: _Claim, now: datetime
    ) -> None:
        """Store the batch's last offsets and newest origins, in the transaction of its rows."""
        for table in (schema.sink_origins, schema.sink_source_origins) if claim.recreated else ():
            await conn.execute(
                sa.delete(table).where(table.c.topic == topic, table.c.partition.in_(sorted(claim.recreated)))
            )
        stamp = _stamp(now)
        if claim.offsets:
            await statements.offsets.execute(
                conn, [(topic, p, offset, stamp) for p, offset in claim.offsets.items()]
            )
        if claim.origins:
            await statements.origins.execute(
                conn,
                [(topic, p, origin_p, source, offset, index, stamp)
                 for (p, origin_p, source), (offset, index) in claim.origins.items()],
            )

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

        readings, origins = await put(statements.readings, *_reading_rows(items))
        if self.legacy:
            stamp = _stamp(now, timespec="seconds")  # Sequelize keeps whole seconds
            legacy = [(str(time), str(speed), stamp, stamp) for _, time, speed in readings]
            await put(statements.legacy, legacy, origins)
        await put(statements.windows, *_window_rows(items, _stamp(now)))
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


@dataclass(frozen=True, slots=True)
class Statement:
    """An INSERT (or upsert) compiled once, executed with rows as plain tuples.

    SQLAlchemy's per-row parameter handling took a third of the worker's CPU
    in a profile of the sink; handed tuples, the driver folds the rows into
    one multi-row INSERT with no work per row beyond escaping.

    That escaping (PyMySQL's, in Python, for every value) was still about
    4 us of the worker's CPU per reading. With ``bulk_sql`` (MySQL 8.0.4+,
    MariaDB 10.6+) several rows go as one JSON array, built by orjson, which
    the server unpacks with ``JSON_TABLE``: about 1 us per reading. The table's
    own column types and constraints still judge every value, so a refused
    row is refused as before (:func:`rtdstream.sink.database.is_row_error`).
    """

    table: str
    columns: tuple[str, ...]
    sql: str
    bulk_sql: str | None = None

    @classmethod
    def compile(
        cls, dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...],
        *, key: tuple[str, ...] = (), update: tuple[str, ...] = (), bulk: bool = False,
    ) -> Statement:
        """INSERT of ``columns``; with ``key``, one that overwrites ``update`` in a row with the same key.

        ``bulk``: also the ``JSON_TABLE`` form, where the server has it.
        """
        values = {name: sa.bindparam(name) for name in columns}
        if not key:
            statement = sa.insert(table).values(values)
        elif dialect.name == "mysql":
            statement = mysql.insert(table).values(values)
            statement = statement.on_duplicate_key_update({name: statement.inserted[name] for name in update})
        else:
            statement = sqlite.insert(table).values(values)
            statement = statement.on_conflict_do_update(
                index_elements=list(key), set_={name: statement.excluded[name] for name in update}
            )
        compiled = statement.compile(dialect=dialect)
        if tuple(compiled.positiontup or ()) != columns:
            raise RuntimeError(f"{table.name}: parameters {compiled.positiontup} are not in column order {columns}")
        bulk_sql = _json_table_insert(dialect, table, columns, update if key else ()) if bulk else None
        return cls(table.name, columns, compiled.string, bulk_sql)

    async def execute(self, conn: AsyncConnection, rows: list[Row]) -> None:
        if self.bulk_sql is not None and len(rows) > 1:
            try:
                document = orjson.dumps(rows).decode()
            except orjson.JSONEncodeError:  # an integer beyond 64 bits: let the table refuse it, as it would
                pass
            else:
                await conn.exec_driver_sql(self.bulk_sql, (document,))
                return
        await conn.exec_driver_sql(self.sql, rows)

    def as_dict(self, row: Row) -> dict[str, Any]:
        return dict(zip(self.columns, row, strict=True))


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement the sink sends, compiled on its first connection."""

    readings: Statement
    legacy: Statement
    windows: Statement
    offsets: Statement
    origins: Statement

    @classmethod
    def compile(cls, dialect: sa.Dialect) -> Statements:
        """The sink's statements for the dialect of a connection (it knows the server's reserved words)."""
        bulk = has_json_table(dialect)
        if dialect.name == "mysql":
            # On MySQL 8.0.20+ SQLAlchemy writes upserts with a row alias
            # (``VALUES (...) AS new ON DUPLICATE KEY UPDATE``), which the
            # driver cannot fold into one multi-row INSERT: it would send a
            # statement per row. A dialect that has not met the server writes
            # ``VALUES(col)``, which every MySQL and MariaDB accepts; it borrows
            # the connected dialect's quoting of reserved words.
            plain = type(dialect)()
            plain.identifier_preparer = dialect.identifier_preparer
            dialect = plain
        return cls(
            readings=Statement.compile(
                dialect, schema.readings, READING_COLUMNS, key=("source", "time"), update=("speed",), bulk=bulk
            ),
            legacy=Statement.compile(
                dialect, schema.legacy_data, ("time", "speed", "createdAt", "updatedAt"), bulk=bulk
            ),
            windows=Statement.compile(
                dialect, schema.window_aggregates, WINDOW_COLUMNS, key=WINDOW_KEY,
                update=tuple(name for name in WINDOW_COLUMNS if name not in WINDOW_KEY),
            ),
            offsets=Statement.compile(
                dialect, schema.sink_offsets, ("topic", "partition", "offset", "updated_at"),
                key=("topic", "partition"), update=("offset", "updated_at"),
            ),
            origins=Statement.compile(
                dialect, schema.sink_source_origins,
                ("topic", "partition", "origin_partition", "source", "origin_offset", "origin_index", "updated_at"),
                key=("topic", "partition", "origin_partition", "source"),
                update=("origin_offset", "origin_index", "updated_at"),
            ),
        )


def has_json_table(dialect: sa.Dialect) -> bool:
    """Whether the connected server has ``JSON_TABLE``: MySQL 8.0.4 and later, MariaDB 10.6 and later."""
    if dialect.name != "mysql" or not dialect.server_version_info:
        return False
    version = tuple(part for part in dialect.server_version_info if isinstance(part, int))
    return version >= ((10, 6) if getattr(dialect, "is_mariadb", False) else (8, 0, 4))


def _json_table_insert(
    dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...], update: tuple[str, ...]
) -> str:
    """``INSERT ... SELECT`` of ``columns`` from ``JSON_TABLE`` over one parameter, a JSON array of rows.

    The JSON_TABLE columns take each value whole (strings up to 1024 characters, numbers and
    times as the table's types), so a value the table refuses reaches the table and is
    refused there, as in a plain INSERT.
    """
    quote = dialect.identifier_preparer.quote
    names = [quote(name) for name in columns]
    unpacked = ", ".join(
        f"{name} {_json_table_type(table.c[column].type, dialect)} PATH '$[{index}]'"
        for index, (name, column) in enumerate(zip(names, columns, strict=True))
    )
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(names)}) "
        f"SELECT {', '.join(f'j.{name}' for name in names)} "
        f"FROM JSON_TABLE(%s, '$[*]' COLUMNS ({unpacked})) AS j"
    )
    if update:
        sql += " ON DUPLICATE KEY UPDATE " + ", ".join(f"{quote(name)} = j.{quote(name)}" for name in update)
    return sql


def _json_table_type(column_type: sa.types.TypeEngine[Any], dialect: sa.Dialect) -> str:
    if isinstance(column_type, sa.String):
        return "VARCHAR(1024)"
    return column_type.compile(dialect=dialect)


async def _finish_or_abandon(attempt: asyncio.Future[None]) -> None:
    """Give a transaction in flight a moment to commit (a clean stop), then cancel it."""
    await asyncio.wait([attempt], timeout=FINISH_SECONDS)
    attempt.cancel()
    if attempt.done() and not attempt.cancelled() and (error := attempt.exception()):
        log.warning("sink: the batch in flight at stop failed (%s); it is written after restart", reason(error))


def _reading_rows(items: list[Item]) -> tuple[list[Row], list[Item]]:
    rows: list[Row] = []
    origins: list[Item] = []
    for item in items:
        batch = item.readings
        if batch is None:
            continue
        source = batch.source
        rows.extend([(source, time, speed) for time, speed in zip(batch.times, batch.speeds, strict=True)])
        origins.extend([item] * len(batch))
    return rows, origins


def _window_rows(items: list[Item], stamp: str) -> tuple[list[Row], list[Item]]:
    owners = [item for item in items if item.window is not None]
    rows = [(*(item.window[name] for name in WINDOW_COLUMNS[:-1]), stamp) for item in owners]  # type: ignore[index]
    return rows, owners


def _stamp(now: datetime, timespec: str = "milliseconds") -> str:
    """A UTC DATETIME literal both databases parse, cheaper for the driver than a datetime."""
    return now.isoformat(sep=" ", timespec=timespec)


def _dead_letter_json(values: dict[str, Any]) -> bytes:
    return orjson.dumps({key: value for key, value in values.items() if key not in _NOT_IN_DLQ_RECORD})
