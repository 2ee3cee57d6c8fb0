"""Read-only history queries for the web view.

Every query is served by an index the sink maintains anyway: (source, time)
for readings, (source, window, start) and (source, start) for windows, with
no sort. Times go in and come out as epoch milliseconds; a database the worker
has not migrated yet reads as empty rather than failing, so the web view can
start first.

Pages are ordered by a key unique within the query, so a page can end between
any two rows: time for readings and start for one window label (both unique
constraints), (start, id) for all labels of a source. The id adds no sort:
(source, start) is not unique, so InnoDB and SQLite read it as (source,
start, id). Adding the id where the key is already unique would: MariaDB then
sorts every row in range, as it does not extend a unique index by the id.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Position:
    """Where a row sits in a history order: its time (a window's start) and its id.

    Time alone does not place a row: window aggregates of several sizes share a
    start, so a page boundary on time alone loses or repeats the rows of one
    start whenever more of them exist than fit on a page. With the id every row
    is before or after a position, never level with it. (Where the time is
    unique, as for readings, the id is carried but not needed.)
    """

    time: int
    id: int


@dataclass(frozen=True, slots=True)
class Page:
    """One page of rows and, when more rows follow, the position to continue after."""

    rows: list[dict[str, Any]]
    next: Position | None


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
        after: Position | None = None,
    ) -> Page:
        """Readings of ``source`` with ``start <= time < end`` (None: open), at most ``limit``, by time.

        From the row after ``after``: pass a page's ``next`` to continue where it ended.
        """
        r = readings_table.c
        query = sa.select(r.id, r.source, r.time, r.speed, r.ingested_at).where(r.source == source)
        query = _time_range(query, r.time, start, end)
        page = await self._page(query, r.time, None, order=order, limit=limit, after=after)
        for row in page.rows:
            row["ingested_at"] = _epoch_ms(row["ingested_at"])
        return page

    async def windows(
        self,
        source: str,
        *,
        window: str | None = None,
        start: int | None = None,
        end: int | None = None,
        limit: int = 100,
        order: str = "desc",
        after: Position | None = None,
    ) -> Page:
        """Final window aggregates of ``source`` (one window label, or all) whose start is in [start, end).

        From the row after ``after``: pass a page's ``next`` to continue where it ended.
        """
        w = window_aggregates.c
        query = sa.select(
            w.id, w.source, w.window, w.size_ms.label("size"), w.step_ms.label("step"), w.start, w.end,
            w.count, w.min, w.max, w.sum, w.mean, w.first_time, w.last_time, w.last_speed,
        ).where(w.source == source)
        if window is not None:
            query = query.where(w.window == window)
        query = _time_range(query, w.start, start, end)
        tiebreak = w.id if window is None else None  # the aggregates of several labels share a start
        return await self._page(query, w.start, tiebreak, order=order, limit=limit, after=after)

    async def max_reading_id(self) -> int | None:
        """The highest readings id (one primary-key lookup); 0 for an empty table, None without one."""
        rows = await self._rows(sa.select(sa.func.max(readings_table.c.id).label("id")))
        return int(rows[0]["id"]) if rows and rows[0]["id"] is not None else (0 if rows else None)

    async def readings_after(self, after_id: int) -> tuple[int, int] | None:
        """(readings with an id above ``after_id``, the highest id), read by primary key; None without the table.

        The ids are not a count: MariaDB reserves the ids of a multi-row
        ``INSERT ... SELECT`` (the sink's) in doubling blocks and drops what a
        statement leaves unused.
        """
        r = readings_table.c
        newer = sa.select(sa.func.count()).where(r.id > after_id).scalar_subquery()
        top = sa.select(sa.func.coalesce(sa.func.max(r.id), 0)).scalar_subquery()
        rows = await self._rows(sa.select(newer.label("newer"), top.label("top")))
        return (int(rows[0]["newer"]), int(rows[0]["top"])) if rows else None

    async def window_buckets(
        self, source: str, *, window: str, start: int, end: int, step: int
    ) -> list[dict[str, Any]]:
        """The aggregates of one window label in [start, end) folded into buckets of ``step`` ms, by start.

        For long history ranges: a day of one-minute windows is 1,440 rows read by
        the (source, window, start) index, never the readings themselves. Each
        bucket is ``{start, count, min, max, mean}``; a bucket without a window is absent.
        """
        w = window_aggregates.c
        bucket = (w.start - w.start % step).label("start")
        query = (
            sa.select(
                bucket,
                sa.func.sum(w.count).label("count"),
                sa.func.min(w.min).label("min"),
                sa.func.max(w.max).label("max"),
                (sa.func.sum(w.sum) / sa.func.sum(w.count)).label("mean"),
            )
            .where(w.source == source, w.window == window, w.start >= start, w.start < end)
            .group_by(bucket)
            .order_by(bucket)
        )
        rows = await self._rows(query)
        for row in rows:
            row["start"], row["count"] = int(row["start"]), int(row["count"])
            row["min"], row["max"], row["mean"] = float(row["min"]), float(row["max"]), float(row["mean"])
        return rows

    async def _page(
        self,
        query: sa.Select[Any],
        key: sa.Column[int],
        tiebreak: sa.Column[int] | None,
        *,
        order: str,
        limit: int,
        after: Position | None,
    ) -> Page:
        """Up to ``limit`` rows past ``after`` by (key, tiebreak), or by key alone where it is unique.

        ``query`` selects the id as "id", for the position. One row more than
        ``limit`` is read, so ``next`` is None exactly when no rows follow.
        """
        if order not in ORDERS:
            raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        if after is not None:
            query = query.where(_past(key, tiebreak, order, after))
        rows = await self._rows(_ordered(query, key, tiebreak, order).limit(limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        last = Position(rows[-1][key.name], rows[-1]["id"]) if more else None
        for row in rows:
            del row["id"]
        return Page(rows, last)

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


def _past(
    key: sa.ColumnElement[int], tiebreak: sa.ColumnElement[int] | None, order: str, after: Position
) -> sa.ColumnElement[bool]:
    """Rows strictly past ``after`` in the page order.

    Spelled out rather than as a row comparison ``(key, id) > (t, i)``: the
    leading bound on ``key`` alone is what MariaDB turns into an index range.
    """
    if order == "asc":
        if tiebreak is None:
            return key > after.time
        return sa.and_(key >= after.time, sa.or_(key > after.time, tiebreak > after.id))
    if tiebreak is None:
        return key < after.time
    return sa.and_(key <= after.time, sa.or_(key < after.time, tiebreak < after.id))


def _ordered(
    query: sa.Select[Any], key: sa.ColumnElement[int], tiebreak: sa.ColumnElement[int] | None, order: str
) -> sa.Select[Any]:
    columns = [key] if tiebreak is None else [key, tiebreak]
    return query.order_by(*(c.asc() if order == "asc" else c.desc() for c in columns))


def _epoch_ms(value: datetime) -> int:
    """Epoch milliseconds of a stored UTC DATETIME (naive, as both back ends return it)."""
    return round(value.replace(tzinfo=UTC).timestamp() * 1000)


def _is_missing_table(error: exc.DBAPIError) -> bool:
    args = getattr(error.orig, "args", ())
    if args and args[0] == _MYSQL_NO_TABLE:
        return True
    return "no such table" in str(error.orig)
