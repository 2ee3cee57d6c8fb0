"""The benchmark's database: a fresh one (or an empty given one), and the questions asked of it.

Counting rows and reading latencies happens after the load stops, so these
queries do not compete with the sink while it is measured; the one query made
during the run (:meth:`BenchDatabase.newest_time`) is a single index lookup.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from rtdstream.bench.histogram import Histogram
from rtdstream.errors import UserError
from rtdstream.sink.database import create_engine, masked, reason
from rtdstream.sink.migrate import upgrade
from rtdstream.sink.schema import readings

#: At most this many rows are read back to measure the latency into MySQL (every n-th by id).
LATENCY_SAMPLE_ROWS = 200_000


class BenchDatabaseError(UserError):
    """The benchmark cannot use its database."""


class BenchDatabase:
    """The database the sink writes during a run; owns it (and drops it) when it created it."""

    def __init__(self, url: str, *, created: bool) -> None:
        self.url = url
        self.created = created
        self.engine: AsyncEngine = create_engine(url)

    @classmethod
    async def fresh(cls, server_url: str) -> BenchDatabase:
        """A new ``rtd_bench_<time>_<random>`` database on the server of ``server_url``."""
        name = f"rtd_bench_{time.strftime('%Y%m%d_%H%M%S')}_{secrets.token_hex(2)}"
        server = create_engine(server_url)
        try:
            async with server.begin() as conn:
                await conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
        except sa.exc.DBAPIError as error:
            raise BenchDatabaseError(f"cannot create database {name} on {masked(server_url)}: {reason(error)}") from None
        finally:
            await server.dispose()
        return cls(sa.make_url(server_url).set(database=name).render_as_string(hide_password=False), created=True)

    @property
    def name(self) -> str:
        return str(sa.make_url(self.url).database)

    async def prepare(self) -> None:
        """Migrate to the current schema and make sure no earlier run's readings are there."""
        try:
            await upgrade(self.engine)
            rows = await self.count()
        except sa.exc.DBAPIError as error:
            raise BenchDatabaseError(f"cannot use database {masked(self.url)}: {reason(error)}") from None
        if rows:
            raise BenchDatabaseError(
                f"database {masked(self.url)} already holds {rows} readings; "
                "give an empty database or leave --database-url out for a fresh one"
            )

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(readings))).scalar_one()

    async def newest_time(self, source: str) -> int | None:
        """The newest committed reading time of ``source`` (one lookup in the (source, time) index)."""
        async with self.engine.connect() as conn:
            query = sa.select(sa.func.max(readings.c.time)).where(readings.c.source == source)
            return (await conn.execute(query)).scalar_one()

    async def counts_between(self, bounds: dict[str, tuple[int, int | None]]) -> dict[str, int]:
        """Per source, the stored readings from ``first`` to ``last`` (None: the newest) inclusive."""
        r = readings.c
        counts = {}
        async with self.engine.connect() as conn:
            for source, (first, last) in bounds.items():
                query = sa.select(sa.func.count()).where(r.source == source, r.time >= first)
                if last is not None:
                    query = query.where(r.time <= last)
                counts[source] = (await conn.execute(query)).scalar_one()
        return counts

    async def commit_latencies(self) -> tuple[Histogram, dict[int, Histogram]]:
        """Latency of readings into MySQL, from a sample of rows: ``ingested_at - time``.

        ``ingested_at`` is the database's clock when the INSERT statement ran,
        so this misses the rest of the transaction (the offsets upsert and the
        commit, a few milliseconds). Returned whole and per second of arrival.
        """
        async with self.engine.connect() as conn:
            top = (await conn.execute(sa.select(sa.func.max(readings.c.id)))).scalar_one() or 0
            every = max(1, top // LATENCY_SAMPLE_ROWS)
            query = sa.select(readings.c.time, readings.c.ingested_at).where(readings.c.id % every == 0)
            rows = (await conn.execute(query)).all()
        overall = Histogram()
        by_second: dict[int, Histogram] = {}
        for reading_time, ingested in rows:
            ingested_ms = utc_ms(ingested)
            latency = ingested_ms - reading_time
            overall.update([latency])
            by_second.setdefault(ingested_ms // 1000, Histogram()).update([latency])
        return overall, by_second

    async def remove_rows_of(self, source_prefix: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(readings).where(readings.c.source.like(f"{source_prefix}%")))

    async def close(self, *, drop: bool) -> None:
        """Dispose of the engine, and drop the database when asked (only ever one this class created)."""
        await self.engine.dispose()
        if drop and self.created:
            server = create_engine(sa.make_url(self.url).set(database=None).render_as_string(hide_password=False))
            try:
                async with server.begin() as conn:
                    await conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{self.name}`")
            finally:
                await server.dispose()


def utc_ms(moment: datetime) -> int:
    return round(moment.replace(tzinfo=UTC).timestamp() * 1000)
