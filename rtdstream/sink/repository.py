"""Read-only history queries for the web view.

Every query is served by an index the sink maintains anyway: (source, time)
for readings, (source, window, start) and (source, start) for windows. Times
go in and come out as epoch milliseconds; a database the worker has not
migrated yet reads as empty rather than failing, so the web view can start
first.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncEngine

from rtdstream.sink.database import create_engine
from rtdstream.sink.schema import readings as readings_table
from rtdstream.sink.schema import window_aggregates

#: Error codes of "no such table": MySQL 1146; SQLite has no code, only its message.
_MYSQL_NO_TABLE = 1146
ORDERS = ("asc", "desc")


class HistoryRepository:
    """Read-only history queries for the web view (async SQLAlchemy 2 core; MySQL/MariaDB and SQLite)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, url: str) -> HistoryRepository:
        """A repository with its own engine (closed by :meth:`close`)."""
        return cls(create_engine(url))

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> bool:
        """True when the database answers."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except (exc.SQLAlchemyError, OSError):
            return False
        return True

    async def sources(self) -> list[dict[str, Any]]:
        """Every source with its number of readings and first/last reading time, by source."""
        r = readings_table.c
        query = (
            sa.select(
                r.source,
                sa.func.count().label("count"),
                sa.func.min(r.time).label("first_time"),
                sa.func.max(r.time).label("last_time"),
            )
            .group_by(r.source)
            .order_by(r.source)
        )
        return await self._rows(query)

    async def latest(self) -> list[dict[str, Any]]:
        """The newest reading of every source, by source."""
        r = readings_table.c
        newest = sa.select(r.source, sa.func.max(r.time).label("time")).group_by(r.source).subquery()
        query = (
            sa.select(r.source, r.time, r.speed)
            .join(newest, sa.and_(r.source == newest.c.source, r.time == newest.c.time))
            .order_by(r.source)
        )
        return await self._rows(query)

    async def readings(
        self,
        source: str,
        *,
        start: int | None = None,
        end: int | None = None,
        limit: int = 100,
        order: str = "desc",
    ) -> list[dict[str, Any]]:
        """Readings of ``source`` with ``start <= time < end`` (None: open), at most ``limit``, by time.

        Page by time: pass the last row's time + 1 as the next ``start``
        (order "asc") or its time as the next ``end`` (order "desc").
        """
        r = readings_table.c
        query = sa.select(r.source, r.time, r.speed, r.ingested_at).where(r.source == source)
        query = _time_range(query, r.time, start, end)
        rows = await self._rows(_ordered(query, r.time, order, limit))
        for row in rows:
            row["ingested_at"] = _epoch_ms(row["ingested_at"])
        return rows

    async def windows(
        self,
        source: str,
        *,
        window: str | None = None,
        start: int | None = None,
        end: int | None = None,
        limit: int = 100,
        order: str = "desc",
    ) -> list[dict[str, Any]]:
        """Final window aggregates of ``source`` (one window label, or all) whose start is in [start, end)."""
        w = window_aggregates.c
        query = sa.select(
            w.source, w.window, w.size_ms.label("size"), w.step_ms.label("step"), w.start, w.end,
            w.count, w.min, w.max, w.sum, w.mean, w.first_time, w.last_time, w.last_speed,
        ).where(w.source == source)
        if window is not None:
            query = query.where(w.window == window)
        query = _time_range(query, w.start, start, end)
        return await self._rows(_ordered(query, w.start, order, limit))

    async def _rows(self, query: sa.Select[Any]) -> list[dict[str, Any]]:
        try:
            async with self.engine.connect() as conn:
                result = await conn.execute(query)
                return [dict(row) for row in result.mappings()]
        except (exc.OperationalError, exc.ProgrammingError) as error:
            if _is_missing_table(error):
                return []
            raise


def _time_range(query: sa.Select[Any], column: sa.ColumnElement[int], start: int | None, end: int | None) -> sa.Select[Any]:
    if start is not None:
        query = query.where(column >= start)
    if end is not None:
        query = query.where(column < end)
    return query


def _ordered(query: sa.Select[Any], column: sa.ColumnElement[int], order: str, limit: int) -> sa.Select[Any]:
    if order not in ORDERS:
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return query.order_by(column.asc() if order == "asc" else column.desc()).limit(limit)


def _epoch_ms(value: datetime) -> int:
    """Epoch milliseconds of a stored UTC DATETIME (naive, as both back ends return it)."""
    return round(value.replace(tzinfo=UTC).timestamp() * 1000)


def _is_missing_table(error: exc.DBAPIError) -> bool:
    args = getattr(error.orig, "args", ())
    if args and args[0] == _MYSQL_NO_TABLE:
        return True
    return "no such table" in str(error.orig)
