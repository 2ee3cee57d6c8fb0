"""The statements the sink sends, compiled once, and the rows they take.

SQLAlchemy's per-row parameter handling took a third of the worker's CPU in a
profile of the sink. So every statement is compiled once per dialect, and rows
are plain tuples in the statement's column order, built here next to the
column lists they must match.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from rtdstream.sink import schema
from rtdstream.sink.records import Item

#: Columns the sink writes; ``readings.ingested_at`` is the database's own commit-time stamp.
READING_COLUMNS = ("source", "time", "speed")
#: Plain str: SQLAlchemy's column names are a str subclass (quoted_name), which orjson refuses as a dict
#: key, so the rtd.dlq record of a refused window row (Statement.as_dict) would raise instead.
WINDOW_COLUMNS = tuple(str(column.name) for column in schema.window_aggregates.columns if column.name != "id")
WINDOW_KEY = ("source", "window", "start")
Row = tuple[Any, ...]

#: The longest JSON array of rows one statement carries. A statement beyond the server's
#: ``max_allowed_packet`` (16 MiB by default on MariaDB, 64 MiB on MySQL 8) is refused with the
#: connection closed, which the sink takes for an outage: it would retry the batch forever. A
#: backlog reaches that size (200 ``rtd.validated`` messages of 100 kB), so bigger batches go
#: as several statements in the same transaction. In hex (:class:`Statement`) an array takes
#: twice its size in the statement: 8 MiB at most.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Statement:
    """An INSERT (or upsert) compiled once, executed with rows as plain tuples.

    Handed tuples, the driver folds the rows into one multi-row INSERT with no
    work per row beyond escaping. That escaping (PyMySQL's, in Python, for every
    value) still cost about 4 us of client CPU per ``readings`` row (plain aiomysql,
    40,000 rows). With ``bulk_sql`` (MySQL 8.0.4+, MariaDB 10.6+) several rows go
    as one JSON array, built by orjson, which the server unpacks with
    ``JSON_TABLE``: with the rows' tuples, 0.3 us per row. The table's own column types and
    constraints still judge the values of ``readings``, all NOT NULL, so a refused
    row is refused as before (:func:`rtdstream.sink.database.is_row_error`). A
    value JSON_TABLE cannot convert becomes NULL; the legacy ``Data`` columns
    take NULL, but the sink writes only digit strings there.

    The array goes into the statement as a hexadecimal literal, not as a
    parameter: PyMySQL escapes a string parameter with ``str.translate``, which
    took 47 ms for the 1.8 MB array of 40,000 rows (1.2 us per row, more than
    all the rest of the client's work), where ``bytes.hex`` takes 1.7 ms. A hex
    literal also means the same under every ``sql_mode`` and character set.
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
                documents = _json_documents(rows)
            except orjson.JSONEncodeError:  # an integer beyond 64 bits: let the table refuse it, as it would
                pass
            else:
                head, tail = self.bulk_sql.split("%s")
                for document in documents:
                    # The driver still %-formats the text with no arguments: hex and the SQL hold no "%".
                    await conn.exec_driver_sql(f"{head}CONVERT(X'{document.hex()}' USING utf8mb4){tail}")
                return
        # PyMySQL splits a long multi-row INSERT itself (Cursor.max_stmt_length).
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


def _json_documents(rows: list[Row]) -> list[bytes]:
    """``rows`` as JSON arrays of about :data:`MAX_DOCUMENT_BYTES` at most, in order.

    The rows are split evenly by count; a sink row is at most a few hundred
    bytes, so no part strays far above the size.
    """
    whole = orjson.dumps(rows)
    parts = -(-len(whole) // MAX_DOCUMENT_BYTES)
    if parts <= 1:
        return [whole]
    size = -(-len(rows) // parts)
    return [orjson.dumps(rows[start:start + size]) for start in range(0, len(rows), size)]


def _json_table_insert(
    dialect: sa.Dialect, table: sa.Table, columns: tuple[str, ...], update: tuple[str, ...]
) -> str:
    """``INSERT ... SELECT`` of ``columns`` from ``JSON_TABLE`` over one parameter, a JSON array of rows.

    The JSON_TABLE columns take each value whole (strings up to 1024 characters, integers as
    65 digits, other numbers and times as the table's types), so a value the table refuses
    reaches the table and is refused there, as in a plain INSERT. (Typed as the table's BIGINT,
    JSON_TABLE itself would clamp 2**63 to the largest BIGINT, and the row would be stored.)
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
    if isinstance(column_type, sa.Integer):
        return "DECIMAL(65,0)"
    return column_type.compile(dialect=dialect)


def reading_rows(items: list[Item]) -> tuple[list[Row], list[Item]]:
    """The ``readings`` rows of ``items``, and for each the item it came from (for ``rtd.dlq``)."""
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


def window_rows(items: list[Item], updated_at: str) -> tuple[list[Row], list[Item]]:
    """The ``window_aggregates`` rows of ``items``, and the item of each."""
    owners = [item for item in items if item.window is not None]
    rows = [(*(item.window[name] for name in WINDOW_COLUMNS[:-1]), updated_at) for item in owners]  # type: ignore[index]
    return rows, owners


def stamp(now: datetime, timespec: str = "milliseconds") -> str:
    """A UTC DATETIME literal both databases parse, cheaper for the driver than a datetime."""
    return now.isoformat(sep=" ", timespec=timespec)
