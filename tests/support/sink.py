"""Fixtures and helpers of the sink tests: the same test against MariaDB and SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from rtdstream.models import ReadingBatch, encode_batch
from rtdstream.sink.database import create_engine
from rtdstream.sink.migrate import upgrade

#: A plausible epoch-ms start for test readings (2026-11-25).
T0 = 1_795_625_575_000


@pytest.fixture(params=["sqlite", "mysql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh empty database: a SQLite file, or a new database on the machine's MariaDB."""
    fixture = "sqlite_url" if request.param == "sqlite" else "mysql_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
async def blank_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A writer engine on the fresh database, which has no tables yet."""
    created = create_engine(database_url, writer=True)
    try:
        yield created
    finally:
        await created.dispose()


@pytest.fixture
async def engine(blank_engine: AsyncEngine) -> AsyncEngine:
    """A writer engine on the fresh database, migrated to the newest revision with the legacy table."""
    await upgrade(blank_engine, legacy=True)
    return blank_engine


async def query(engine: AsyncEngine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    async with engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(sa.text(sql), params)).all()]


def envelopes(source: str, count: int, size: int, *, start: int = T0, origin_partition: int | None = None) -> list[bytes]:
    """``count`` rtd.validated messages of ``size`` readings each, times 1 ms apart from ``start``.

    With ``origin_partition`` message i says it was validated from offset i of
    that rtd.readings partition, as the validation agent's batches do.
    """
    return [
        encode_batch(
            ReadingBatch(
                source,
                [start + i * size + j for j in range(size)],
                [(i * size + j) % 50 for j in range(size)],
                origin=(origin_partition, i, 0) if origin_partition is not None else (-1, -1, 0),
            )
        )
        for i in range(count)
    ]
