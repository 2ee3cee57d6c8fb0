"""``kill -9`` of the worker, the bridge and the web view at random moments of one stream, each restarted.

Afterwards MySQL holds exactly the readings the simulator emitted, the final
windows are those of an offline group-by of them, and a Socket.IO client that
lived through the web view's deaths reconnected by itself and got data again.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from rtdstream.broker import EmbeddedBroker
from rtdstream.config import load_settings
from rtdstream.tables.specs import window_specs
from tests.support.mariadb import MariaDB
from tests.support.pipeline import Pipeline, stored_exactly_once
from tests.support.processes import ProcessGroup
from tests.support.web import LiveClient
from tests.support.windows import assert_windows_exact, offline

GRACE_MS = 2000
#: Longer than a worker's restart, so a partition paused by it does not look idle (see README, Operate).
IDLE_TIMEOUT = "15s"
#: Who dies, in order; each at a random moment, restarted at once.
VICTIMS = ["worker", "bridge", "web", "bridge", "worker", "web"]


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_kill_9_of_worker_bridge_and_web_loses_and_duplicates_nothing(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    env = {**rtd_env, "RTD_DATABASE_URL": mysql_url, "RTD_GRACE": f"{GRACE_MS}ms", "RTD_IDLE_TIMEOUT": IDLE_TIMEOUT}
    pipeline = Pipeline(processes, env, rate=200, sources=4)
    running = {"worker": await pipeline.start_worker(), "web": await pipeline.start_web()}
    sim = await pipeline.start_sim()
    running["bridge"] = pipeline.start_bridge()
    client = LiveClient()
    await client.sio.connect(pipeline.web_url, wait_timeout=10)
    await client.data_after(0)
    rng = random.Random(1)

    for victim in VICTIMS:
        await asyncio.sleep(rng.uniform(1.0, 4.0))
        processes.kill(running[victim])
        died = time.monotonic()
        if victim == "worker":
            running[victim] = await pipeline.start_worker()
        elif victim == "bridge":
            running[victim] = pipeline.start_bridge()
            await running[victim].await_log("connected to", timeout=30)
        else:
            running[victim] = await pipeline.start_web()
            await client.data_after(died)  # reconnected by itself, and live data flows again
        assert sim.is_running(), "every kill must land mid-stream"
    emitted = await pipeline.end_stream()
    assert emitted > 5000

    readings = await stored_exactly_once(mariadb, database, emitted, pipeline.env, workers=pipeline.workers)
    assert client.connects == 1 + VICTIMS.count("web")

    settings = load_settings(broker=broker.url, partitions=int(env["RTD_PARTITIONS"]), grace=env["RTD_GRACE"])
    expected, late = offline([sorted(readings, key=lambda r: r[1])], GRACE_MS, window_specs(settings))
    assert late == {}
    await assert_windows_exact(broker.bootstrap_servers, expected, readings=emitted)
    await client.sio.disconnect()
    for name in ("bridge", "worker", "web"):
        assert processes.terminate(running[name], timeout=60) == 0, name
