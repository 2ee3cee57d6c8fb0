"""The running worker: readings on rtd.readings end in the database exactly once through kill -9 and outages."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker, free_port
from rtdstream.models import ReadingBatch, encode_batch
from rtdstream.sink.database import create_engine
from tests.support.kafka import json_values, produce, read_topic
from tests.support.mariadb import MariaDB
from tests.support.pipeline import sink_caught_up, sink_counters_add_up
from tests.support.processes import ProcessGroup, start_worker, until
from tests.support.tcp_proxy import TcpProxy

MESSAGES = 150
PER_MESSAGE = 40
READINGS = MESSAGES * PER_MESSAGE
#: Messages per second while streaming: about four seconds of input.
RATE = 40.0


async def stream_readings(bootstrap: str, *, base: int, validated: bool = False) -> None:
    """Readings of three sources at RATE messages/s.

    As envelopes on rtd.readings, the way the bridge sends them, or with
    ``validated`` as batches on rtd.validated, the way the validation stage
    sends them (with their origin), which leaves that stage out of the test.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(MESSAGES):
            source = f"s{i % 3}"
            times = [base + i * PER_MESSAGE + j for j in range(PER_MESSAGE)]
            speeds = list(range(PER_MESSAGE))
            if validated:
                topic = topics.VALIDATED
                value = encode_batch(ReadingBatch(source, times, speeds, origin=(i % 3, i // 3, 0)))
            else:
                topic = topics.READINGS
                value = orjson.dumps({"source": source, "readings": [
                    {"time": time, "speed": speed} for time, speed in zip(times, speeds, strict=True)
                ]})
            await producer.send_and_wait(topic, value, key=source.encode())
            await asyncio.sleep(1 / RATE)
    finally:
        await producer.stop()


def an_hour_ago() -> int:
    return int(time.time() * 1000) - 3_600_000


class Tables:
    """Row counts as a user would check them, read with a separate connection."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)

    async def count(self, sql: str) -> tuple:
        async with self.engine.connect() as conn:
            return tuple((await conn.exec_driver_sql(sql)).one())

    async def readings(self) -> int:
        return (await self.count("SELECT COUNT(*) FROM readings"))[0]

    async def close(self) -> None:
        await self.engine.dispose()


async def counters(web_port: int) -> dict[str, float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{web_port}/counters/") as response:
        return await response.json()


async def test_exactly_once_across_kill_9(
    database_url: str, broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    env = {**rtd_env, "RTD_DATABASE_URL": database_url, "RTD_LEGACY_TABLE": "true", "RTD_SINK_BATCH": "4",
           "RTD_IDLE_TIMEOUT": "2s"}
    tables = Tables(database_url)
    try:
        worker, url = await start_worker(processes, env)
        workers = [(worker, url)]
        # Straight to rtd.validated: what is under test is the sink (and the window stage after
        # it); the validation agent re-sending its batches after the kill is covered in
        # test_sink_writer.py.
        streaming = asyncio.create_task(
            stream_readings(broker.bootstrap_servers, base=an_hour_ago(), validated=True)
        )
        await until(lambda: _at_least(tables, READINGS // 5), timeout=60, what="the first rows")
        processes.kill(worker)
        assert not streaming.done(), "the worker must die while readings still arrive"
        await streaming

        web_port = free_port()
        workers.append(await start_worker(processes, env, web_port=web_port))
        await until(lambda: _at_least(tables, READINGS), timeout=90, what=f"{READINGS} readings")
        # The group committed all of rtd.validated: nothing is left to write, so no duplicate can come later.
        await until(lambda: sink_caught_up(env), timeout=60, what="the worker committing all of rtd.validated")

        assert await tables.readings() == READINGS  # (source, time) is unique: no reading twice, none lost
        # The key-less legacy table is where a duplicate would show.
        assert await tables.count("SELECT COUNT(*), COUNT(DISTINCT time) FROM Data") == (READINGS, READINGS)
        await sink_counters_add_up(workers, READINGS)
        # The restarted worker met messages the database already held, and skipped them.
        assert (await counters(web_port))["rtd_sink_replayed_messages_total"] > 0
        # Every reading is counted exactly once in the stored final 10s windows, once they have closed.
        await until(lambda: _windowed(tables, "10s", READINGS), timeout=60, what="the final 10s windows")
    finally:
        await tables.close()


async def _windowed(tables: Tables, label: str, count: int) -> bool:
    sql = f"SELECT COALESCE(SUM(`count`), 0) FROM window_aggregates WHERE `window` = '{label}'"
    counted = (await tables.count(sql))[0]
    assert counted <= count, f"{counted} readings counted in {label} windows, only {count} sent"
    return counted == count


async def _at_least(tables: Tables, count: int) -> bool:
    try:
        return await tables.readings() >= count
    except Exception:  # noqa: BLE001  (tables appear once the worker has migrated)
        return False


async def test_outage_mid_stream_loses_nothing_and_a_refused_row_goes_to_the_dlq(
    mysql_url: str, mariadb: MariaDB, broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    tables = Tables(mysql_url)
    with TcpProxy(mariadb.host, mariadb.port) as proxy:
        url = mysql_url.replace(f":{mariadb.port}/", f":{proxy.port}/")
        env = {**rtd_env, "RTD_DATABASE_URL": url, "RTD_LEGACY_TABLE": "true", "RTD_SINK_BATCH": "10"}
        try:
            worker, url = await start_worker(processes, env)
            streaming = asyncio.create_task(stream_readings(broker.bootstrap_servers, base=an_hour_ago()))
            await until(lambda: _at_least(tables, READINGS // 5), timeout=60, what="the first rows")
            proxy.cut()
            await worker.await_log(r"sink: writing .* failed \(attempt 3\)", timeout=60)
            during = await tables.readings()
            assert not streaming.done(), "the outage must start while readings still arrive"
            proxy.restore()
            await streaming
            await worker.await_log("sink: database back", timeout=60)
            # A reading validation would never pass, put straight on rtd.validated: MySQL refuses its time.
            await produce(
                broker.bootstrap_servers, topics.VALIDATED,
                [encode_batch(ReadingBatch("odd", [int(time.time() * 1000), 2**63], [1, 2]))], key=b"odd",
            )
            await until(lambda: _at_least(tables, READINGS + 1), timeout=60, what="every reading")
            dead = await read_topic(
                broker.bootstrap_servers, topics.DLQ,
                until=lambda records: any(r["reason"] == "db_rejected" for r in json_values(records)),
            )
            await until(lambda: sink_caught_up(env), timeout=60, what="the worker committing all of rtd.validated")

            assert worker.is_running()
            assert during < READINGS
            assert mariadb.query(database, "SELECT COUNT(*), COUNT(DISTINCT source, time) FROM readings") \
                == [(READINGS + 1, READINGS + 1)]
            assert mariadb.query(database, "SELECT COUNT(*) FROM Data") == [(READINGS + 1,)]
            await sink_counters_add_up([(worker, url)], READINGS + 1)  # the refused row is not counted
            refused = [r for r in json_values(dead) if r["reason"] == "db_rejected"]
            assert len(refused) == 1
            assert refused[0]["stage"] == "sink" and refused[0]["source"] == "odd"
            assert "Out of range value for column 'time'" in refused[0]["detail"]
            assert orjson.loads(refused[0]["raw"]) == {"source": "odd", "time": 2**63, "speed": 2}
        finally:
            await tables.close()


pytestmark = pytest.mark.timeout(240)
