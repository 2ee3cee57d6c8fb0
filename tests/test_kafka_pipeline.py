"""The whole pipeline on Apache Kafka (scripts/kafka-broker), with a worker killed -9 mid-stream.

Everything else in the suite runs on the embedded broker; this is the run on the engine users
deploy. Apache Kafka's group coordinator, committed offsets and fetch behaviour are its own, so the
check is the strictest the suite has: the key-less legacy ``Data`` table, where a reading written
twice would be a second row, must hold exactly what the simulator emitted.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from tests.support.apache_kafka import ApacheKafka
from tests.support.mariadb import MariaDB
from tests.support.pipeline import Pipeline, stored_exactly_once
from tests.support.processes import ProcessGroup
from tests.support.web import LiveClient


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_on_apache_kafka_a_killed_worker_loses_and_duplicates_nothing(
    apache_kafka: ApacheKafka, rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    env = {**rtd_env, "RTD_BROKER": apache_kafka.url, "RTD_DATABASE_URL": mysql_url}
    pipeline = Pipeline(processes, env, rate=200, sources=4)
    worker = await pipeline.start_worker()
    await pipeline.start_web()
    await pipeline.start_sim()
    pipeline.start_bridge()
    client = LiveClient()
    await client.sio.connect(pipeline.web_url, wait_timeout=10)
    await client.data_after(0)

    await asyncio.sleep(random.Random(2).uniform(3.0, 6.0))
    processes.kill(worker)
    worker = await pipeline.start_worker()
    emitted = await pipeline.end_stream()
    assert emitted > 2000

    await stored_exactly_once(mariadb, database, emitted, pipeline.env)
    await client.sio.disconnect()
    assert processes.terminate(worker, timeout=60) == 0
