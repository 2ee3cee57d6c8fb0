"""The tables the sink writes and the web view reads (SQLAlchemy Core).

The schema itself is created and changed only by the Alembic revisions in
``migrations/``; this module describes the current state for the queries. The
legacy ``Data`` table is the exception: it belongs to the original system, so
it is created (if missing) in the exact layout Sequelize gave it and is never
migrated.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

#: Surrogate keys: BIGINT on MySQL; SQLite only auto-increments an INTEGER primary key.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Wall-clock instants in UTC with milliseconds (MySQL's DATETIME drops them unless asked).
UtcMillis = sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
#: Source ids compare byte for byte: MySQL's default collations would merge "a" and "A".
MYSQL_TABLE = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

#: Table of Alembic's revision marker; a name of our own leaves room for another app's Alembic.
VERSION_TABLE = "rtdstream_alembic_version"


def utc_now() -> datetime:
    """Now in UTC as a naive datetime, the way DATETIME columns store it."""
    return datetime.now(UTC).replace(tzinfo=None)


def utc_now_default(dialect: str) -> sa.TextClause:
    """A column default of the database's UTC time with milliseconds (MySQL sessions of rtdstream run in UTC)."""
    if dialect == "mysql":
        return sa.text("CURRENT_TIMESTAMP(3)")
    return sa.text("(strftime('%Y-%m-%d %H:%M:%f', 'now'))")


metadata = sa.MetaData()

readings = sa.Table(
    "readings",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("time", sa.BigInteger, nullable=False, comment="epoch milliseconds"),
    sa.Column("speed", sa.Double, nullable=False),
    # Stamped by the database: one parameter less per row for the driver to escape.
    sa.Column("ingested_at", UtcMillis, nullable=False, server_default=sa.FetchedValue()),
    # Also the index of every per-source time-range query.
    sa.UniqueConstraint("source", "time", name="uq_readings_source_time"),
    **MYSQL_TABLE,
)

window_aggregates = sa.Table(
    "window_aggregates",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(64), nullable=False),
    sa.Column("window", sa.String(32), nullable=False, comment='label, e.g. "10s" or "60s/10s"'),
    sa.Column("size_ms", sa.BigInteger, nullable=False),
    sa.Column("step_ms", sa.BigInteger, nullable=False),
    sa.Column("start", sa.BigInteger, nullable=False, comment="epoch milliseconds, inclusive"),
    sa.Column("end", sa.BigInteger, nullable=False, comment="epoch milliseconds, exclusive"),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("min", sa.Double, nullable=False),
    sa.Column("max", sa.Double, nullable=False),
    sa.Column("sum", sa.Double, nullable=False),
    sa.Column("mean", sa.Double, nullable=False),
    sa.Column("first_time", sa.BigInteger, nullable=False),
    sa.Column("last_time", sa.BigInteger, nullable=False),
    sa.Column("last_speed", sa.Double, nullable=False),
    sa.Column("updated_at", UtcMillis, nullable=False),
    sa.UniqueConstraint("source", "window", "start", name="uq_window_aggregates_source_window_start"),
    sa.Index("ix_window_aggregates_source_start", "source", "start"),
    **MYSQL_TABLE,
)

sink_offsets = sa.Table(
    "sink_offsets",
    metadata,
    sa.Column("topic", sa.String(249), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("offset", sa.BigInteger, nullable=False, comment="last offset written"),
    sa.Column("updated_at", UtcMillis, nullable=False),
    **MYSQL_TABLE,
)

sink_origins = sa.Table(
    "sink_origins",
    metadata,
    sa.Column("topic", sa.String(249), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("origin_partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("origin_offset", sa.BigInteger, nullable=False),
    sa.Column("origin_index", sa.Integer, nullable=False),
    sa.Column("updated_at", UtcMillis, nullable=False),
    comment="newest rtd.readings origin written, per partition of the consumed topic",
    **MYSQL_TABLE,
)

#: Since 0003 the sink keeps origins per source (see rtdstream.origins); sink_origins stays as their floor.
sink_source_origins = sa.Table(
    "sink_source_origins",
    metadata,
    sa.Column("topic", sa.String(249), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("origin_partition", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("source", sa.String(64), primary_key=True),
    sa.Column("origin_offset", sa.BigInteger, nullable=False),
    sa.Column("origin_index", sa.Integer, nullable=False),
    sa.Column("updated_at", UtcMillis, nullable=False),
    comment="newest rtd.readings origin written, per partition of the consumed topic, input partition and source",
    **MYSQL_TABLE,
)

#: The original backend's table, as Sequelize's ``sync()`` creates it for
#: ``define('Data', {time: STRING, speed: STRING})``: no unique key, UTC
#: DATETIMEs without fractions. Its own MetaData keeps it out of migrations.
legacy_metadata = sa.MetaData()
legacy_data = sa.Table(
    "Data",
    legacy_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.String(255)),
    sa.Column("speed", sa.String(255)),
    sa.Column("createdAt", sa.DateTime, nullable=False),
    sa.Column("updatedAt", sa.DateTime, nullable=False),
    mysql_engine="InnoDB",
)
