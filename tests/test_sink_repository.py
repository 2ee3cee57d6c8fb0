"""History queries of the web view, on rows the sink wrote, against MariaDB and SQLite."""

from __future__ import annotations

import time

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from rtdstream.broker import free_port
from rtdstream.models import ReadingBatch, encode_batch
from rtdstream.sink.records import SinkBatch, decode_readings, decode_window
from rtdstream.sink.repository import HistoryRepository
from rtdstream.sink.writer import SinkWriter
from rtdstream.topics import VALIDATED, WINDOWS
from rtdstream.web.history import StoredHistory
from tests.support.sink import T0, envelopes


async def _nothing_rejected(topic: str, rejected: list) -> None:
    raise AssertionError(rejected)


def window(source: str, label: str, start: int, count: int) -> bytes:
    size = 60_000 if label == "60s/10s" else 10_000
    return orjson.dumps({
        "source": source, "window": label, "size": size, "step": 10_000, "start": start, "end": start + size,
        "count": count, "min": 1, "max": 9, "sum": 5 * count, "mean": 5.0, "first_time": start,
        "last_time": start + 500, "last_speed": 9,
    })


@pytest.fixture
async def repository(engine: AsyncEngine) -> HistoryRepository:
    """Readings of two sources and some windows, written by the sink."""
    writer = SinkWriter(engine, send_dead_letters=_nothing_rejected)
    readings = [
        encode_batch(ReadingBatch("alpha", [T0 + i * 1000 for i in range(10)], list(range(10)))),
        encode_batch(ReadingBatch("beta", [T0 + 500, T0 + 1500], [7, 8.5])),
    ]
    await writer.write_until_done(SinkBatch(VALIDATED, [decode_readings(m, 0, i) for i, m in enumerate(readings)]))
    windows = [
        window("alpha", "10s", T0, 10), window("alpha", "10s", T0 + 10_000, 3),
        window("alpha", "60s/10s", T0, 13), window("beta", "10s", T0, 2),
    ]
    await writer.write_until_done(SinkBatch(WINDOWS, [decode_window(m, 0, i) for i, m in enumerate(windows)]))
    return HistoryRepository(engine)


async def test_sources_and_latest(repository: HistoryRepository) -> None:
    assert await repository.ping()
    assert await repository.sources() == [
        {"source": "alpha", "count": 10, "first_time": T0, "last_time": T0 + 9000},
        {"source": "beta", "count": 2, "first_time": T0 + 500, "last_time": T0 + 1500},
    ]
    assert await repository.latest() == [
        {"source": "alpha", "time": T0 + 9000, "speed": 9},
        {"source": "beta", "time": T0 + 1500, "speed": 8.5},
    ]


async def test_readings_in_a_range_page_by_page(repository: HistoryRepository) -> None:
    newest = (await repository.readings("alpha", limit=3)).rows
    assert [(r["time"], r["speed"]) for r in newest] == [(T0 + 9000, 9), (T0 + 8000, 8), (T0 + 7000, 7)]
    assert set(newest[0]) == {"source", "time", "speed", "ingested_at"}
    assert abs(newest[0]["ingested_at"] - time.time() * 1000) < 120_000

    older = (await repository.readings("alpha", end=newest[-1]["time"], limit=3)).rows
    assert [r["time"] for r in older] == [T0 + 6000, T0 + 5000, T0 + 4000]

    ranged = (await repository.readings("alpha", start=T0 + 2000, end=T0 + 5000, order="asc")).rows
    assert [r["time"] for r in ranged] == [T0 + 2000, T0 + 3000, T0 + 4000]
    assert (await repository.readings("nobody")).rows == []


async def test_windows_by_label_and_start(repository: HistoryRepository) -> None:
    tumbling = (await repository.windows("alpha", window="10s", order="asc")).rows
    assert [(w["start"], w["count"]) for w in tumbling] == [(T0, 10), (T0 + 10_000, 3)]
    assert tumbling[0] == {
        "source": "alpha", "window": "10s", "size": 10_000, "step": 10_000, "start": T0, "end": T0 + 10_000,
        "count": 10, "min": 1, "max": 9, "sum": 50, "mean": 5.0, "first_time": T0, "last_time": T0 + 500,
        "last_speed": 9,
    }
    every = (await repository.windows("alpha", start=T0, end=T0 + 1)).rows
    assert sorted(w["window"] for w in every) == ["10s", "60s/10s"]
    assert (await repository.windows("beta", window="60s/10s")).rows == []


async def test_pages_continue_after_their_last_row_within_one_start(repository: HistoryRepository) -> None:
    # alpha's 10s and 60s/10s windows share the start T0: a page of one row ends between them
    for order in ("asc", "desc"):
        served, after = [], None
        while True:
            page = await repository.windows("alpha", limit=1, order=order, after=after)
            assert len(page.rows) == 1 and "id" not in page.rows[0]
            served += [(w["start"], w["window"]) for w in page.rows]
            if page.next is None:
                break
            assert page.next.time == page.rows[-1]["start"]
            after = page.next
        expected = [(T0, "10s"), (T0, "60s/10s"), (T0 + 10_000, "10s")]
        assert sorted(served) == expected
        assert [start for start, _ in served] == sorted((s for s, _ in expected), reverse=order == "desc")


async def test_a_full_last_page_says_nothing_follows(repository: HistoryRepository) -> None:
    page = await repository.readings("beta", limit=2, order="asc")
    assert [r["time"] for r in page.rows] == [T0 + 500, T0 + 1500] and page.next is None
    first = await repository.readings("beta", limit=1, order="asc")
    rest = await repository.readings("beta", limit=1, order="asc", after=first.next)
    assert [r["time"] for r in rest.rows] == [T0 + 1500] and rest.next is None


async def test_bad_order_or_limit_is_a_value_error(repository: HistoryRepository) -> None:
    with pytest.raises(ValueError, match="order"):
        await repository.readings("alpha", order="sideways")
    with pytest.raises(ValueError, match="limit"):
        await repository.windows("alpha", limit=0)


async def test_database_without_tables_reads_as_empty(database_url: str) -> None:
    repository = HistoryRepository.from_url(database_url)
    try:
        assert await repository.ping()
        assert await repository.sources() == []
        assert await repository.latest() == []
        assert (await repository.readings("alpha")).rows == []
        assert (await repository.windows("alpha")).rows == []
    finally:
        await repository.close()


async def test_ping_is_false_when_the_database_is_gone() -> None:
    repository = HistoryRepository.from_url(f"mysql+aiomysql://root@127.0.0.1:{free_port()}/test")
    try:
        assert await repository.ping() is False
    finally:
        await repository.close()


async def test_the_stored_count_follows_the_rows_not_the_ids(engine: AsyncEngine) -> None:
    """The health panel's stored rate counts rows: the ids have gaps where the sink writes with ``INSERT ... SELECT``.

    On MariaDB the first four transactions, of 26 readings, took ids up to 29:
    the highest id's growth, which the rate used to be, said 29.
    """
    writer = SinkWriter(engine, send_dead_letters=_nothing_rejected)
    history = StoredHistory(HistoryRepository(engine))
    assert await history.stored_total() == 0
    sizes = (5, 3, 6, 12)
    for offset, size in enumerate(sizes):
        [message] = envelopes("gamma", 1, size, start=T0 + offset * 1000)
        await writer.write_until_done(SinkBatch(VALIDATED, [decode_readings(message, 0, offset)]))
    assert await history.stored_total() == sum(sizes)
    [message] = envelopes("delta", 1, 9)
    await writer.write_until_done(SinkBatch(VALIDATED, [decode_readings(message, 1, 0)]))
    assert await history.stored_total() == sum(sizes) + 9
    assert await history.stored_total() == sum(sizes) + 9  # nothing new, nothing counted twice
