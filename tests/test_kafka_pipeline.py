"""The whole pipeline on Apache Kafka (scripts/kafka-broker): a worker killed -9 mid-stream, and a
partition leader killed -9 among three brokers.

These are faults of the engine users deploy: Apache Kafka's group coordinator, committed offsets,
fetch behaviour and leader elections are its own. The check is the strictest the suite has: the
key-less legacy ``Data`` table, where a reading written twice would be a second row, must hold
exactly what the simulator emitted.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from rtdstream import topics
from rtdstream.tables.specs import window_specs
from tests.support.apache_kafka import ApacheKafka, partition_leader
from tests.support.cluster import settings_of
from tests.support.mariadb import MariaDB
from tests.support.pipeline import Pipeline, stored_exactly_once, wait_for_rows
from tests.support.processes import ProcessGroup
from tests.support.web import LiveClient
from tests.support.windows import assert_windows_exact, offline

GRACE_MS = 2000


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

    await stored_exactly_once(mariadb, database, emitted, pipeline.env, workers=pipeline.workers)
    await client.sio.disconnect()
    assert processes.terminate(worker, timeout=60) == 0


@pytest.mark.slow
@pytest.mark.timeout(500)
async def test_on_three_brokers_killing_a_partition_leader_loses_and_duplicates_nothing(
    tmp_path: Path, rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    with ApacheKafka(tmp_path / "kafka", brokers=3, keep_going=True) as kafka:
        env = {
            **rtd_env, "RTD_BROKER": kafka.url, "RTD_DATABASE_URL": mysql_url, "RTD_REPLICATION_FACTOR": "3",
            # A partition waits for its new leader; its open windows must not close meanwhile as idle.
            "RTD_IDLE_TIMEOUT": "60s", "RTD_GRACE": f"{GRACE_MS}ms",
        }
        pipeline = Pipeline(processes, env, rate=200, sources=4)
        await pipeline.start_worker()
        await pipeline.start_sim()
        pipeline.start_bridge()
        await wait_for_rows(mariadb, database, 500)

        leader = await partition_leader(kafka.bootstrap_servers, topics.READINGS, 0)
        kafka.kill_node(leader)
        emitted = await pipeline.end_stream(after=10.0)
        assert emitted > 1000  # the bridge pauses while the partitions elect new leaders

        # The two brokers left (2 in sync are enough) took every reading: MySQL has each exactly once ...
        readings = await stored_exactly_once(mariadb, database, emitted, pipeline.env, timeout=180, workers=pipeline.workers)
        # ... and the final windows are those of an offline group-by of the stored readings.
        survivor = ",".join(
            f"127.0.0.1:{kafka.port + node - 1}" for node in (1, 2, 3) if node != leader
        )
        expected, _ = offline([sorted(readings, key=lambda r: r[1])], GRACE_MS, window_specs(settings_of(env)))
        await assert_windows_exact(survivor, expected, readings=emitted)


@pytest.mark.slow
@pytest.mark.timeout(500)
async def test_on_apache_kafka_three_workers_lose_one_and_gain_one_mid_stream_and_nothing_is_lost_or_doubled(
    apache_kafka: ApacheKafka, rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    env = {
        **rtd_env, "RTD_BROKER": apache_kafka.url, "RTD_DATABASE_URL": mysql_url, "RTD_GRACE": f"{GRACE_MS}ms",
        # Longer than two takeovers in a row: a partition paused by them must not look idle.
        "RTD_IDLE_TIMEOUT": "60s",
    }
    pipeline = Pipeline(processes, env, rate=200, sources=6)
    workers = [await pipeline.start_worker() for _ in range(3)]
    await pipeline.start_sim()
    pipeline.start_bridge()
    await wait_for_rows(mariadb, database, 500)

    processes.kill(random.Random(3).choice(workers))
    await pipeline.start_worker()  # a fourth joins while the group is still taking the dead one's share
    emitted = await pipeline.end_stream(after=10.0)
    assert emitted > 3000

    readings = await stored_exactly_once(mariadb, database, emitted, pipeline.env, timeout=180, workers=pipeline.workers)
    expected, _ = offline([sorted(readings, key=lambda r: r[1])], GRACE_MS, window_specs(settings_of(env)))
    await assert_windows_exact(apache_kafka.bootstrap_servers, expected, readings=emitted)
