"""One-reading messages from a foreign producer, through kill -9 of the worker twice: stored exactly once.

The validation stage gathers one-reading messages into batches per source, so
a replay after a kill forms other batches than the first run did; every
reading must still be stored once (counted in the key-less ``Data`` table) and
counted once in the windows.
"""

from __future__ import annotations

import random

import orjson
import pytest

from rtdstream import topics
from rtdstream.config import load_settings
from rtdstream.tables.specs import window_specs
from tests.support.kafka import create_topics, produce_at
from tests.support.mariadb import MariaDB
from tests.support.pipeline import stored_exactly_once, stored_readings
from tests.support.processes import ProcessGroup, start_worker, until
from tests.support.windows import HOUR_AGO, assert_windows_exact, offline

SOURCES = [f"s{n:02d}" for n in range(20)]
READINGS = 40_000
GRACE_MS = 2000


def one_reading_messages(seed: int = 3) -> list[tuple[str, int, int]]:
    """(source, time, speed) in time order, round robin over the sources, 5 ms apart per source."""
    rng = random.Random(seed)
    return [(SOURCES[i % len(SOURCES)], HOUR_AGO + i // len(SOURCES) * 5, rng.randint(0, 50)) for i in range(READINGS)]


def encode(reading: tuple[str, int, int]) -> tuple[None, bytes, bytes]:
    """As any Kafka producer writes a reading: its own message, keyed by source, fields as strings."""
    source, time, speed = reading
    return None, source.encode(), orjson.dumps({"time": str(time), "speed": str(speed), "source": source})


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_one_reading_messages_are_stored_once_through_two_kills(
    broker, rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    # Small batches: the worker is mid-stream for long enough that each kill lands in it.
    env = {**rtd_env, "RTD_DATABASE_URL": mysql_url, "RTD_LEGACY_TABLE": "true", "RTD_GRACE": f"{GRACE_MS}ms",
           "RTD_IDLE_TIMEOUT": "600s", "RTD_VALIDATE_BATCH": "50", "RTD_SINK_BATCH": "4"}
    readings = one_reading_messages()
    await create_topics(broker, env)
    await produce_at(broker.bootstrap_servers, topics.READINGS, map(encode, readings))

    workers = []
    for share in (0.2, 0.5):
        worker, url = await start_worker(processes, env)
        workers.append((worker, url))
        await until(lambda share=share: len(stored_readings(mariadb, database)) >= READINGS * share,
                    timeout=120, what=f"{share:.0%} of the readings stored")
        processes.kill(worker)
        assert len(stored_readings(mariadb, database)) < READINGS, "each kill must land mid-stream"

    workers.append(await start_worker(processes, {**env, "RTD_IDLE_TIMEOUT": "3s"}))
    stored = await stored_exactly_once(mariadb, database, READINGS, env, timeout=180, workers=workers)
    assert sorted(stored) == sorted((s, t, float(v)) for s, t, v in readings)

    settings = load_settings(broker=broker.url, partitions=int(env["RTD_PARTITIONS"]), grace=env["RTD_GRACE"])
    expected, late = offline([[reading] for reading in readings], GRACE_MS, window_specs(settings))
    assert late == {}
    await assert_windows_exact(broker.bootstrap_servers, expected, readings=READINGS)
