"""The sink's transactions against the real MariaDB and SQLite: idempotent, exact, nothing lost.

These drive :class:`SinkWriter` directly with batches shaped like the ones
the agents build from Kafka events; the worker-level tests (kill -9, outage
in a running pipeline) are in test_sink_pipeline.py.
"""

from __future__ import annotations

import asyncio
import logging
import re

import orjson
import pytest
import sqlalchemy as sa
from aiomysql.cursors import RE_INSERT_VALUES
from sqlalchemy.dialects.mysql.aiomysql import dialect as aiomysql_dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from rtdstream import metrics
from rtdstream.models import IdleTick, ReadingBatch, encode_batch, encode_tick
from rtdstream.sink.database import create_engine
from rtdstream.sink.migrate import upgrade
from rtdstream.sink.records import Rejected, SinkBatch, decode_readings, decode_window
from rtdstream.sink.statements import Statements
from rtdstream.sink.writer import SinkWriter
from rtdstream.topics import VALIDATED, WINDOWS
from tests.support.mariadb import MariaDB
from tests.support.sink import T0, envelopes, query
from tests.support.tcp_proxy import TcpProxy


class DeadLetters:
    """Collects what the writer would send to rtd.dlq."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    async def __call__(self, topic: str, rejected: list[Rejected]) -> None:
        self.records.extend(orjson.loads(rejection.dead_letter(topic)) for rejection in rejected)


def batch_of(messages: list[bytes], *, first_offset: int = 0, partition: int = 0, topic: str = VALIDATED) -> SinkBatch:
    decode = decode_window if topic == WINDOWS else decode_readings
    return SinkBatch(topic, [decode(m, partition, first_offset + i) for i, m in enumerate(messages)])


def window_message(**changes: object) -> bytes:
    message = {
        "source": "s1", "window": "10s", "size": 10_000, "step": 10_000, "start": T0, "end": T0 + 10_000,
        "count": 3, "min": 1.0, "max": 5, "sum": 9, "mean": 3.0, "first_time": T0 + 5, "last_time": T0 + 900,
        "last_speed": 5,
    }
    return orjson.dumps({**message, **changes})


async def test_replayed_batch_writes_nothing_twice(engine: AsyncEngine) -> None:
    dead = DeadLetters()
    writer = SinkWriter(engine, send_dead_letters=dead, legacy=True)
    messages = envelopes("s1", 10, 20) + [encode_tick(IdleTick(0, T0))]

    first = batch_of(messages)
    await writer.write_until_done(first)
    await writer.write_until_done(batch_of(messages))  # the same offsets again, as after a crash

    assert first.written
    assert await query(engine, "SELECT COUNT(*), COUNT(DISTINCT time) FROM readings") == [(200, 200)]
    assert await query(engine, "SELECT COUNT(*), COUNT(DISTINCT time) FROM Data") == [(200, 200)]
    assert await query(engine, "SELECT topic, `partition`, `offset` FROM sink_offsets") == [(VALIDATED, 0, 10)]
    assert dead.records == []


async def test_partly_replayed_batch_writes_only_the_new_messages(engine: AsyncEngine) -> None:
    writer = SinkWriter(engine, send_dead_letters=DeadLetters(), legacy=True)
    messages = envelopes("s1", 10, 5)

    await writer.write_until_done(batch_of(messages[:6]))
    await writer.write_until_done(batch_of(messages))  # offsets 0-5 again, then 6-9

    assert await query(engine, "SELECT COUNT(*) FROM readings") == [(50,)]
    assert await query(engine, "SELECT COUNT(*) FROM Data") == [(50,)]


async def test_batches_validated_again_after_a_crash_are_written_once(engine: AsyncEngine) -> None:
    """After its own crash the validation stage re-sends batches with their origin, at new offsets."""
    writer = SinkWriter(engine, send_dead_letters=DeadLetters(), legacy=True)
    messages = envelopes("s1", 6, 10, origin_partition=2)

    await writer.write_until_done(batch_of(messages[:4]))
    await writer.write_until_done(batch_of(messages[2:], first_offset=4))  # origins 2, 3 again, then 4, 5

    assert await query(engine, "SELECT COUNT(*) FROM readings") == [(60,)]
    assert await query(engine, "SELECT COUNT(*) FROM Data") == [(60,)]
    assert await query(engine, "SELECT origin_partition, source, origin_offset FROM sink_source_origins") == [
        (2, "s1", 5)
    ]


async def test_readings_validated_again_in_other_batches_are_written_once(engine: AsyncEngine) -> None:
    """Two sources interleave in one input partition; the replay gathers the same input differently."""
    writer = SinkWriter(engine, send_dead_letters=DeadLetters(), legacy=True)

    def gathered(source: str, offsets: list[int]) -> bytes:
        return encode_batch(ReadingBatch(
            source, [T0 + offset for offset in offsets], [offset for offset in offsets],
            origin=(2, offsets[-1], 0), parts=[(offset, 0, 1) for offset in offsets],
        ))

    # First run: input 0-5 in one batch; a's batch landed, b's did not before the crash.
    await writer.write_until_done(batch_of([gathered("a", [0, 2, 4])]))
    # The replay validates 0-3 and then 4-5.
    replay = [gathered("a", [0, 2]), gathered("b", [1, 3]), gathered("a", [4]), gathered("b", [5])]
    await writer.write_until_done(batch_of(replay, first_offset=1))

    assert await query(engine, "SELECT COUNT(*) FROM Data") == [(6,)]
    assert await query(engine, "SELECT source, COUNT(*) FROM readings GROUP BY source ORDER BY source") == [
        ("a", 3), ("b", 3)
    ]


async def test_origins_of_an_older_version_are_a_floor_for_every_source(engine: AsyncEngine) -> None:
    writer = SinkWriter(engine, send_dead_letters=DeadLetters(), legacy=True)
    async with engine.begin() as conn:
        await conn.execute(sa.text(
            "INSERT INTO sink_origins VALUES ('rtd.validated', 0, 2, 3, 0, '2026-01-01 00:00:00.000')"
        ))
    await writer.write_until_done(batch_of(envelopes("s1", 6, 1, origin_partition=2)))
    assert await query(engine, "SELECT COUNT(*) FROM Data") == [(2,)]  # origins 4 and 5


async def test_same_readings_in_new_messages_update_one_row(engine: AsyncEngine) -> None:
    writer = SinkWriter(engine, send_dead_letters=DeadLetters())
    await writer.write_until_done(batch_of([encode_batch(ReadingBatch("s1", [T0, T0 + 1], [10, 11]))]))
    # A producer sent the same readings again (new offset), one with a corrected speed.
    await writer.write_until_done(
        batch_of([encode_batch(ReadingBatch("s1", [T0, T0 + 1], [10, 12.5]))], first_offset=1)
    )

    assert await query(engine, "SELECT time, speed FROM readings ORDER BY time") == [(T0, 10.0), (T0 + 1, 12.5)]


async def test_window_upsert_updates_in_place(engine: AsyncEngine) -> None:
    writer = SinkWriter(engine, send_dead_letters=DeadLetters())
    await writer.write_until_done(batch_of([window_message()], topic=WINDOWS))
    await writer.write_until_done(
        batch_of([window_message(count=4, sum=19, max=10, mean=4.75, last_speed=10, last_time=T0 + 950),
                  window_message(window="60s/10s", size=60_000, end=T0 + 60_000)],
                 topic=WINDOWS, first_offset=1)
    )

    rows = await query(
        engine, "SELECT `window`, size_ms, step_ms, `count`, `sum`, `max`, mean, last_time, last_speed "
        "FROM window_aggregates ORDER BY `window`",
    )
    assert rows == [
        ("10s", 10_000, 10_000, 4, 19.0, 10.0, 4.75, T0 + 950, 10.0),
        ("60s/10s", 60_000, 10_000, 3, 9.0, 5.0, 3.0, T0 + 900, 5.0),
    ]


async def test_refused_rows_go_to_dlq_with_the_database_reason(engine: AsyncEngine) -> None:
    dead = DeadLetters()
    writer = SinkWriter(engine, send_dead_letters=dead, legacy=True)
    before = metrics.READINGS_REJECTED.labels("sink", "db_rejected")._value.get()
    messages = envelopes("s1", 3, 10) + [
        encode_batch(ReadingBatch("s2", [T0, 2**63, T0 + 2], [1, 2, None])),  # BIGINT overflow, NULL speed
        b"not json",
    ]

    await writer.write_until_done(batch_of(messages))
    await writer.write_until_done(batch_of(messages))  # a replay sends nothing twice

    assert await query(engine, "SELECT COUNT(*) FROM readings") == [(31,)]
    assert await query(engine, "SELECT COUNT(*) FROM Data") == [(31,)]
    by_reason = sorted((r["reason"], r["raw"], r["offset"]) for r in dead.records)
    assert by_reason == [
        ("db_rejected", '{"source":"s2","time":1795625575002,"speed":null}', 3),
        ("db_rejected", '{"source":"s2","time":9223372036854775808,"speed":2}', 3),
        ("not_json", "not json", 4),
    ]
    details = " | ".join(r["detail"] for r in dead.records if r["reason"] == "db_rejected").lower()
    assert "speed" in details and ("null" in details or "not null" in details)
    assert "range" in details or "too large" in details
    assert all(r["stage"] == "sink" and r["topic"] == VALIDATED for r in dead.records)
    assert metrics.READINGS_REJECTED.labels("sink", "db_rejected")._value.get() - before == 2


async def test_an_out_of_range_time_alone_in_a_batch_is_refused_not_clamped(engine: AsyncEngine) -> None:
    """One bad row among good ones goes through the many-row statement (JSON_TABLE on MariaDB), not row by row."""
    dead = DeadLetters()
    writer = SinkWriter(engine, send_dead_letters=dead, legacy=True)
    await writer.write_until_done(batch_of([encode_batch(ReadingBatch("s1", [T0, 2**63, T0 + 2], [1, 2, 3]))]))

    assert await query(engine, "SELECT time FROM readings ORDER BY time") == [(T0,), (T0 + 2,)]
    assert [(r["reason"], r["raw"]) for r in dead.records] == [
        ("db_rejected", '{"source":"s1","time":9223372036854775808,"speed":2}'),
    ]


async def test_window_messages_of_another_shape_are_dead_lettered(engine: AsyncEngine) -> None:
    dead = DeadLetters()
    writer = SinkWriter(engine, send_dead_letters=dead)
    message = orjson.loads(window_message())
    del message["count"]
    await writer.write_until_done(
        batch_of([orjson.dumps(message), b"[1, 2]", window_message(count="3"), window_message()], topic=WINDOWS)
    )

    assert [(r["reason"], r["offset"]) for r in dead.records] == [
        ("missing_field", 0), ("wrong_type", 1), ("wrong_field_type", 2),
    ]
    assert "count" in dead.records[0]["detail"]
    assert await query(engine, "SELECT COUNT(*) FROM window_aggregates") == [(1,)]


async def test_recreated_topic_does_not_hide_its_messages(engine: AsyncEngine, caplog: pytest.LogCaptureFixture) -> None:
    writer = SinkWriter(engine, send_dead_letters=DeadLetters(), legacy=True)
    await writer.write_until_done(batch_of(envelopes("s1", 10, 1, origin_partition=0)))
    # The broker was restarted empty: offsets and origins start at 0 again and the partition ends at 3.
    writer = SinkWriter(engine, send_dead_letters=DeadLetters(), legacy=True, highwater=lambda topic, p: 3)
    with caplog.at_level(logging.WARNING):
        await writer.write_until_done(batch_of(envelopes("s1", 3, 1, start=T0 + 1000, origin_partition=0)))

    assert await query(engine, "SELECT COUNT(*) FROM readings") == [(13,)]
    assert await query(engine, "SELECT COUNT(*) FROM Data") == [(13,)]
    assert "recreated" in caplog.text
    assert await query(engine, "SELECT `offset` FROM sink_offsets") == [(2,)]
    assert await query(engine, "SELECT origin_offset FROM sink_source_origins") == [(2,)]


async def test_one_multi_row_insert_per_table(mysql_url: str, mariadb: MariaDB) -> None:
    """MariaDB counts the INSERT statements of a session: a batch costs one per table, whatever its size."""
    engine = create_async_engine(mysql_url, pool_size=1, max_overflow=0)
    try:
        await upgrade(engine, legacy=True)

        async def inserts_so_far() -> int:
            """INSERT statements, plain and ``INSERT ... SELECT`` (the JSON_TABLE form of readings and Data)."""
            async with engine.connect() as conn:
                status = await conn.execute(sa.text("SHOW SESSION STATUS WHERE Variable_name IN "
                                                    "('Com_insert', 'Com_insert_select')"))
                return sum(int(value) for _, value in status.all())

        before = await inserts_so_far()
        await SinkWriter(engine, send_dead_letters=DeadLetters(), legacy=True).write_until_done(
            batch_of(envelopes("s1", 40, 100))
        )
        assert await inserts_so_far() - before == 3  # readings, Data, sink_offsets
        assert mariadb.query(mysql_url.rsplit("/", 1)[1], "SELECT COUNT(*) FROM readings") == [(4000,)]
    finally:
        await engine.dispose()


async def test_a_batch_beyond_the_server_s_largest_packet_is_written_in_one_transaction(
    mysql_url: str, mariadb: MariaDB
) -> None:
    """A backlog's batch can exceed max_allowed_packet as one statement; refused, it would be retried forever."""
    engine = create_async_engine(mysql_url, pool_size=1, max_overflow=0)
    try:
        await upgrade(engine, legacy=False)
        (largest,) = (await query(engine, "SELECT @@max_allowed_packet"))[0]
        per_message = 5000
        messages = largest // (15 * per_message) + 1
        rows = messages * per_message
        assert len(orjson.dumps([("s1", T0 + i, i % 50) for i in range(rows)])) > largest  # as one statement
        batch = batch_of(envelopes("s1", messages, per_message))
        await asyncio.wait_for(SinkWriter(engine, send_dead_letters=DeadLetters(), legacy=False).write(batch), 120)
        assert batch.written
        count, first, last = (await query(engine, "SELECT COUNT(*), MIN(time), MAX(time) FROM readings"))[0]
        assert (count, first, last) == (rows, T0, T0 + rows - 1)
    finally:
        await engine.dispose()


async def test_the_json_array_keeps_every_character_of_a_value(mysql_url: str) -> None:
    """The array goes into the statement as a literal: quotes, backslashes, "%" and non-ASCII text must survive."""
    engine = create_async_engine(mysql_url, pool_size=1, max_overflow=0)
    sources = ["it's", 'back\\slash "quoted"', "50%s of 100%", "Zürich-北京-😀", "tab\tnew\nline"]
    try:
        await upgrade(engine, legacy=False)
        async with engine.begin() as conn:
            statements = Statements.compile(conn.dialect)
            assert statements.readings.bulk_sql is not None  # the JSON_TABLE path is the one under test
            await statements.readings.execute(conn, [(source, T0 + i, i + 0.5) for i, source in enumerate(sources)])
        stored = await query(engine, "SELECT source, time, speed FROM readings ORDER BY time")
        assert [tuple(row) for row in stored] == [(source, T0 + i, i + 0.5) for i, source in enumerate(sources)]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("server", [(10, 11, 19), (8, 0, 19), (8, 4, 3)], ids=["mariadb", "mysql-8.0.19", "mysql-8.4"])
def test_mysql_upserts_stay_one_multi_row_insert_on_every_server(server: tuple[int, int, int]) -> None:
    """aiomysql folds rows into one INSERT only for ``VALUES (...)`` followed by nothing but ON DUPLICATE KEY."""
    dialect = aiomysql_dialect()
    dialect.server_version_info = server
    dialect.is_mariadb = server[0] >= 10
    dialect._requires_alias_for_on_duplicate_key = not dialect.is_mariadb and server >= (8, 0, 20)  # as at connect
    statements = Statements.compile(dialect)

    for statement in (statements.readings, statements.windows, statements.offsets, statements.origins,
                      statements.legacy):
        assert RE_INSERT_VALUES.match(statement.sql), statement.sql
    assert statements.readings.sql == (
        "INSERT INTO readings (source, time, speed) VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE speed = VALUES(speed)"
    )
    # Servers with JSON_TABLE (MariaDB 10.6+, MySQL 8.0.4+) take the rows of readings and Data as one JSON array.
    assert statements.readings.bulk_sql == (
        "INSERT INTO readings (source, time, speed) SELECT j.source, j.time, j.speed FROM JSON_TABLE(%s, '$[*]' "
        "COLUMNS (source VARCHAR(1024) PATH '$[0]', time DECIMAL(65,0) PATH '$[1]', speed DOUBLE PATH '$[2]')) AS j "
        "ON DUPLICATE KEY UPDATE speed = j.speed"
    )
    assert statements.legacy.bulk_sql is not None and statements.windows.bulk_sql is None


@pytest.mark.parametrize("server", [(10, 5, 27), (8, 0, 3)], ids=["mariadb-10.5", "mysql-8.0.3"])
def test_servers_without_json_table_get_plain_inserts(server: tuple[int, int, int]) -> None:
    dialect = aiomysql_dialect()
    dialect.server_version_info = server
    dialect.is_mariadb = server[0] >= 10
    assert Statements.compile(dialect).readings.bulk_sql is None


def test_the_dlq_record_of_a_refused_row_of_any_table_is_json() -> None:
    """Column names are plain str: SQLAlchemy's quoted_name keys made orjson raise, ending the worker."""
    statements = Statements.compile(aiomysql_dialect())
    for statement in (statements.readings, statements.windows, statements.legacy):
        record = statement.as_dict(tuple(range(len(statement.columns))))
        assert orjson.loads(orjson.dumps(record)) == record


async def test_outage_keeps_the_batch_and_resumes(
    mysql_url: str, mariadb: MariaDB, caplog: pytest.LogCaptureFixture
) -> None:
    """The connection drops mid-stream: the batch waits, retries, and lands exactly once when it is back."""
    database = mysql_url.rsplit("/", 1)[1]
    with TcpProxy(mariadb.host, mariadb.port) as proxy:
        url = mysql_url.replace(f":{mariadb.port}/", f":{proxy.port}/")
        engine = create_engine(url, writer=True)
        await upgrade(engine, legacy=True)
        writer = SinkWriter(engine, send_dead_letters=DeadLetters(), legacy=True)
        messages = envelopes("s1", 30, 10)
        await writer.write_until_done(batch_of(messages[:10]))

        retries = metrics.SINK_RETRIES._value.get()
        proxy.cut()
        with caplog.at_level(logging.INFO, logger="rtdstream.sink"):
            pending = asyncio.create_task(writer.write_until_done(batch_of(messages[5:20], first_offset=5)))
            while metrics.SINK_RETRIES._value.get() - retries < 3:
                assert not pending.done()
                await asyncio.sleep(0.1)
            proxy.restore()
            await asyncio.wait_for(pending, timeout=60)
            await writer.write_until_done(batch_of(messages[20:], first_offset=20))
        await writer.close()

    assert mariadb.query(database, "SELECT COUNT(*), COUNT(DISTINCT time) FROM readings") == [(300, 300)]
    assert mariadb.query(database, "SELECT COUNT(*) FROM Data") == [(300,)]
    assert "retrying in" in caplog.text and "(attempt 3)" in caplog.text
    assert "database back" in caplog.text


async def test_a_commit_whose_reply_is_lost_is_written_and_counted_once(mysql_url: str, mariadb: MariaDB) -> None:
    """The COMMIT reaches MariaDB, the connection drops before its reply: the retry finds the batch stored.

    The rows are in the database once, and the counters say so: the retry writes nothing, and
    what the lost commit wrote is counted as written, not as a replay. Counted as a replay, the
    rows a worker wrote would fall short of what the tables hold (it happened in the
    database-outage test, by one batch).
    """
    database = mysql_url.rsplit("/", 1)[1]
    with TcpProxy(mariadb.host, mariadb.port) as proxy:
        engine = create_engine(mysql_url.replace(f":{mariadb.port}/", f":{proxy.port}/"), writer=True)
        await upgrade(engine, legacy=True)
        writer = SinkWriter(engine, send_dead_letters=DeadLetters(), legacy=True)
        before = counters()
        sa.event.listen(engine.sync_engine, "commit", lambda _conn: proxy.lose_next_reply(), once=True)
        await writer.write_until_done(batch_of(envelopes("s1", 4, 5)))
        await writer.close()

    assert mariadb.query(database, "SELECT COUNT(*) FROM Data") == [(20,)]
    # One retry: the commit did fail.
    assert {name: value - before[name] for name, value in counters().items()} == {
        "readings": 20, "Data": 20, "replayed": 0, "retries": 1,
    }


def counters() -> dict[str, float]:
    return {
        "readings": metrics.SINK_ROWS_WRITTEN.labels("readings")._value.get(),
        "Data": metrics.SINK_ROWS_WRITTEN.labels("Data")._value.get(),
        "replayed": metrics.SINK_REPLAYED._value.get(),
        "retries": metrics.SINK_RETRIES._value.get(),
    }


async def test_a_connection_lost_on_its_way_back_to_the_pool_is_one_warning_line(
    mysql_url: str, mariadb: MariaDB, caplog: pytest.LogCaptureFixture
) -> None:
    """The outage starts between a commit and the connection's return: no traceback in the log."""
    with TcpProxy(mariadb.host, mariadb.port) as proxy:
        engine = create_engine(mysql_url.replace(f":{mariadb.port}/", f":{proxy.port}/"), writer=True)
        with caplog.at_level(logging.WARNING):
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
                await conn.commit()
                proxy.cut()
                await asyncio.sleep(0.2)  # the server is gone before the pool resets the connection
        await engine.dispose()

    [record] = caplog.records
    assert (record.levelname, record.exc_info) == ("WARNING", None)
    # How the loss reads depends on how the socket closed (EOF, or a reset with its errno).
    assert re.fullmatch(
        r"a database connection was lost as it went back to the pool "
        r"\(Lost connection to MySQL server during query.* \(MySQL error 2013\)\); discarded",
        record.getMessage(),
    ), record.getMessage()
    assert "Traceback" not in caplog.text


#: A write that never finishes is a failure here, not something to wait out.
pytestmark = pytest.mark.timeout(60)
