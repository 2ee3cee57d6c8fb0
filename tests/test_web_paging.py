"""History paging over HTTP: following ``next`` serves every row exactly once, in order, at every limit.

Window aggregates of several sizes share a start, so these tables crowd many
rows onto few times, and their ids run in an order unrelated to time (the
sink writes a window when it closes, not when it starts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine

from rtdstream.config import load_settings
from rtdstream.sink import schema
from rtdstream.sink.database import create_engine
from rtdstream.sink.migrate import upgrade
from rtdstream.sink.repository import HistoryRepository
from rtdstream.web.api import HttpApi
from rtdstream.web.errors import json_errors
from tests.support.sink import T0

SOURCES = ("a", "b")
#: label -> (size, step) in ms: three tumbling sizes and a hopping window, as the issue's report had.
LABELS = {"1s": (1000, 1000), "10s": (10_000, 10_000), "60s": (60_000, 60_000), "60s/10s": (60_000, 10_000)}
ENDPOINTS = ("readings", "windows")


@dataclass(frozen=True)
class Table:
    """Rows to store: readings as (id, source, time), windows as (id, source, label, start)."""

    readings: list[tuple[int, str, int]]
    windows: list[tuple[int, str, str, int]]


@dataclass(frozen=True)
class Query:
    source: str
    window: str | None
    start: int | None
    end: int | None

    def params(self, endpoint: str, order: str, limit: int) -> dict[str, str]:
        params = {"source": self.source, "order": order, "limit": str(limit)}
        if self.start is not None:
            params["from"] = str(self.start)
        if self.end is not None:
            params["to"] = str(self.end)
        if endpoint == "windows" and self.window is not None:
            params["window"] = self.window
        return params

    def expected(self, table: Table, endpoint: str) -> list[tuple[Any, ...]]:
        """(time, identity) of every row the query selects, in no particular order."""
        if endpoint == "readings":
            rows = [(time, (time,)) for _, source, time in table.readings if source == self.source]
        else:
            rows = [
                (start, (label, start)) for _, source, label, start in table.windows
                if source == self.source and self.window in (None, label)
            ]
        return [row for row in rows if self._in_range(row[0])]

    def _in_range(self, time: int) -> bool:
        return (self.start is None or time >= self.start) and (self.end is None or time < self.end)


@st.composite
def tables(draw: st.DrawFn) -> Table:
    """Up to 40 windows on 4 starts and 20 readings per table, ids shuffled against time."""
    window_keys = draw(st.lists(
        st.tuples(st.sampled_from(SOURCES), st.sampled_from(list(LABELS)), st.integers(0, 3).map(_ten_s)),
        unique=True, max_size=40,
    ))
    reading_keys = draw(st.lists(
        st.tuples(st.sampled_from(SOURCES), st.integers(0, 39).map(lambda k: T0 + k * 1000)), unique=True, max_size=20
    ))
    window_ids = draw(st.permutations(range(1, len(window_keys) + 1)))
    reading_ids = draw(st.permutations(range(1, len(reading_keys) + 1)))
    return Table(
        readings=[(i, *key) for i, key in zip(reading_ids, reading_keys, strict=True)],
        windows=[(i, *key) for i, key in zip(window_ids, window_keys, strict=True)],
    )


def _ten_s(k: int) -> int:
    return T0 + k * 10_000


@st.composite
def queries(draw: st.DrawFn) -> Query:
    """All labels of a source (where starts tie) or one label, over all time or a from/to range."""
    start = draw(st.none() | st.integers(0, 4).map(_ten_s))
    end = draw(st.none() | st.integers(1, 4).map(_ten_s))
    if start is not None and end is not None and end <= start:
        end = None
    window = draw(st.none() | st.sampled_from(list(LABELS)))
    return Query(draw(st.sampled_from(SOURCES)), window, start, end)


class History:
    """The HTTP API on a real database, with tables replaced per hypothesis example."""

    def __init__(self, engine: AsyncEngine, client: TestClient) -> None:
        self.engine = engine
        self.client = client

    async def store(self, table: Table) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(sa.delete(schema.readings))
            await conn.execute(sa.delete(schema.window_aggregates))
            if table.readings:
                await conn.execute(sa.insert(schema.readings), [_reading(*row) for row in table.readings])
            if table.windows:
                await conn.execute(sa.insert(schema.window_aggregates), [_window(*row) for row in table.windows])

    async def follow(self, endpoint: str, params: dict[str, str]) -> list[list[dict[str, Any]]]:
        """Every page from the first to the one whose ``next`` is null."""
        pages: list[list[dict[str, Any]]] = []
        response = await self.client.get(f"/api/{endpoint}", params=params)
        while True:
            assert response.status == 200, await response.text()
            body = await response.json()
            pages.append(body[endpoint])
            if body["next"] is None:
                return pages
            assert len(pages) <= 200, "next never ends"
            response = await self.client.get(body["next"])


def _reading(id_: int, source: str, time: int) -> dict[str, Any]:
    return {"id": id_, "source": source, "time": time, "speed": float(id_), "ingested_at": schema.utc_now()}


def _window(id_: int, source: str, label: str, start: int) -> dict[str, Any]:
    size, step = LABELS[label]
    return {
        "id": id_, "source": source, "window": label, "size_ms": size, "step_ms": step, "start": start,
        "end": start + size, "count": 1, "min": 1.0, "max": 1.0, "sum": 1.0, "mean": 1.0, "first_time": start,
        "last_time": start, "last_speed": 1.0, "updated_at": schema.utc_now(),
    }


async def serve_history(url: str) -> AsyncIterator[History]:
    """The /api handlers (no broker, no live feed: they only read the database) on a migrated database."""
    engine = create_engine(url, writer=True)
    await upgrade(engine)
    app = web.Application(middlewares=[json_errors])
    HttpApi(load_settings(), HistoryRepository(engine), feed=None).add_routes(app)  # type: ignore[arg-type]
    try:
        async with TestClient(TestServer(app)) as client:
            yield History(engine, client)
    finally:
        await engine.dispose()


@pytest.fixture
async def sqlite_history(sqlite_url: str) -> AsyncIterator[History]:
    async for history in serve_history(sqlite_url):
        yield history


@pytest.fixture
async def any_history(database_url: str) -> AsyncIterator[History]:
    async for history in serve_history(database_url):
        yield history


@dataclass(frozen=True)
class Walk:
    """The pages of one query followed from the first to the last."""

    endpoint: str
    order: str
    limit: int
    expected: Counter[tuple[Any, ...]]
    pages: list[list[dict[str, Any]]]

    def __str__(self) -> str:
        return f"{self.endpoint} order={self.order} limit={self.limit}"


async def walk_every_limit(history: History, table: Table, query: Query) -> list[Walk]:
    """Both endpoints, both orders, every limit from 1 to one past the rows selected."""
    walks = []
    for endpoint in ENDPOINTS:
        expected = Counter(ident for _, ident in query.expected(table, endpoint))
        for order in ("asc", "desc"):
            for limit in range(1, expected.total() + 2):
                pages = await history.follow(endpoint, query.params(endpoint, order, limit))
                walks.append(Walk(endpoint, order, limit, expected, pages))
    return walks


def assert_each_row_once_in_order(walks: list[Walk]) -> None:
    for walk in walks:
        served = [_identity(walk.endpoint, row) for page in walk.pages for row in page]
        assert Counter(served) == walk.expected, f"{walk}: served {served}"
        times = [ident[-1] for ident in served]
        assert times == sorted(times, reverse=walk.order == "desc"), f"{walk}: out of order {times}"
        assert all(len(page) <= walk.limit for page in walk.pages), f"{walk}: a page over the limit"


def assert_whole_pages(walks: list[Walk]) -> None:
    """Every page full but the last, and no empty last page after a full one."""
    for walk in walks:
        assert all(len(page) == walk.limit for page in walk.pages[:-1]), f"{walk}: short page in {walk.pages}"
        assert len(walk.pages) == max(1, -(-walk.expected.total() // walk.limit)), f"{walk}: {len(walk.pages)} pages"


def _identity(endpoint: str, row: dict[str, Any]) -> tuple[Any, ...]:
    return (row["time"],) if endpoint == "readings" else (row["window"], row["start"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=tables(), query=queries())
async def test_following_next_serves_every_row_once_in_order(
    sqlite_history: History, table: Table, query: Query
) -> None:
    await sqlite_history.store(table)
    assert_each_row_once_in_order(await walk_every_limit(sqlite_history, table, query))


def issue_minute(source: str) -> Table:
    """About a minute of aggregates as the issue reported them: 1s, 10s, 60s and a 60s/10s hopping window.

    Ids follow the order in which windows close (by end), as the sink writes them.
    """
    keys = [("1s", T0 + s * 1000) for s in range(60)]
    keys += [("10s", T0 + s * 10_000) for s in range(6)]
    keys += [("60s", T0)]
    keys += [("60s/10s", T0 + s * 10_000) for s in range(-5, 6)]
    keys.sort(key=lambda key: (key[1] + LABELS[key[0]][0], key[0]))
    windows = [(i, source, label, start) for i, (label, start) in enumerate(keys, start=1)]
    readings = [(i, source, T0 + i * 700) for i in range(1, 80)]
    return Table(readings, windows)


async def test_a_minute_of_windows_pages_whole_on_either_database(any_history: History) -> None:
    table = issue_minute("sensor-1")
    await any_history.store(table)
    for query in (Query("sensor-1", None, None, None), Query("sensor-1", None, T0, T0 + 30_000)):
        walks = await walk_every_limit(any_history, table, query)
        assert_each_row_once_in_order(walks)
        assert_whole_pages(walks)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_malformed_cursor_is_a_400_naming_it(sqlite_history: History, endpoint: str) -> None:
    for cursor in ("", "%%%", "WzEsMiwzXQ", "' OR 1=1 --", "A" * 200):
        response = await sqlite_history.client.get(f"/api/{endpoint}", params={"source": "a", "cursor": cursor})
        assert response.status == 400
        assert (await response.json())["parameter"] == "cursor"
