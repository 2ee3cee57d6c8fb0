"""The machine's MariaDB server stopped for 30 s mid-stream, then started: nothing lost, nothing twice, no exit.

Unlike the sink's proxy test (``test_sink_pipeline.py``), this stops the real
server, so the worker sees what it sees in production: connections reset,
then refused, then a server that starts up again (with a cold buffer pool).
"""

from __future__ import annotations

import asyncio
import re

import orjson
import pytest

from rtdstream import topics
from tests.support import mariadb as mariadb_server
from tests.support.cluster import settings_of
from tests.support.kafka import read_to_end
from tests.support.mariadb import MariaDB
from tests.support.pipeline import (
    MemoryWatch,
    Pipeline,
    stored_exactly_once,
    stored_windows_match_readings,
    wait_for_rows,
)
from tests.support.processes import Proc, ProcessGroup
from tests.support.tcp_proxy import TcpProxy

OUTAGE = 30.0
RATE = 2000
#: RSS the worker may add while the sink holds its batch and stops pulling input. An unbounded
#: buffer holds all RATE x OUTAGE = 60,000 readings of the cut: measured with Faust's stream buffer
#: made unbounded (stream_buffer_maxsize=10**9 in rtdstream/worker_app.py) the worker grew 4.0 MB here
#: (about 65 bytes per reading; 11.0 MB over the 60 s cut below). As the worker is (fetching of a
#: partition pauses at 512 buffered messages) it grew 0.2-0.3 MB. The bound sits between: an
#: unbounded buffer exceeds it 2x, the bounded one has 6x headroom.
MEMORY_BOUND_MB = 2.0


async def streaming(
    processes: ProcessGroup, env: dict[str, str], mariadb: MariaDB, database: str
) -> tuple[Pipeline, Proc, Proc]:
    """The pipeline at RATE over 8 sources, once 5 s of it is stored: (pipeline, worker, bridge)."""
    pipeline = Pipeline(processes, env, rate=RATE, sources=8)
    worker = await pipeline.start_worker()
    await pipeline.start_sim()
    bridge = pipeline.start_bridge()
    await wait_for_rows(mariadb, database, 5 * RATE)
    return pipeline, worker, bridge


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_mariadb_stopped_for_30s_at_2000_per_second_loses_and_duplicates_nothing(
    rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    pipeline, worker, bridge = await streaming(processes, {**rtd_env, "RTD_DATABASE_URL": mysql_url}, mariadb, database)

    try:
        with MemoryWatch({"worker": worker}) as watch:
            mariadb_server.stop()
            await asyncio.sleep(OUTAGE)
            assert worker.is_running(), "the worker exited while the database was down"
            # While the server is down: what a buffer holds then is the backlog (reconnecting after
            # the restart costs memory of its own: 1.7 MB in all in one run, 0.4 MB in another).
            buffered_mb = watch.growth_mb("worker")
            mariadb.ensure_running()  # starts the server and waits until it answers
            await worker.await_log("sink: database back", timeout=60)
    finally:
        mariadb.ensure_running()  # whatever happened, the next tests get their server back
    failures = re.findall(r"sink: writing .* failed \(attempt (\d+)\)", worker.log_text())
    print(f"database outage: {len(failures)} failed attempts logged (last: attempt {failures[-1]}); "
          f"worker RSS growth {buffered_mb:.1f} MB while down, {watch.growth_mb('worker'):.1f} MB until back")
    assert len(failures) >= 3  # it kept trying, and said so
    assert buffered_mb < MEMORY_BOUND_MB

    emitted = await pipeline.end_stream()
    await stored_exactly_once(mariadb, database, emitted, pipeline.env, workers=pipeline.workers)
    assert worker.is_running() and "Traceback" not in worker.log_text()
    assert processes.terminate(bridge) == 0
    assert processes.terminate(worker, timeout=60) == 0


LONG_OUTAGE = 60.0
IDLE_TIMEOUT = 10.0


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_database_cut_for_60s_at_2000_per_second_leaves_windows_exact_and_nothing_late(
    rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    """An outage longer than RTD_IDLE_TIMEOUT at a high rate (issue 15, item 8).

    The sink stops taking rtd.validated while the database is away, and the window agent shares
    that input: if its partitions looked idle meanwhile, their windows would close early and the
    readings held back by the sink would be dead-lettered as late when the database returns.
    The worker reaches MariaDB through a proxy that is cut (the server itself keeps running for
    the other tests on the machine).
    """
    assert LONG_OUTAGE > IDLE_TIMEOUT
    database = mysql_url.rsplit("/", 1)[1]
    with TcpProxy(mariadb.host, mariadb.port) as proxy:
        proxied = mysql_url.replace(f":{mariadb.port}/", f":{proxy.port}/")
        env = {**rtd_env, "RTD_DATABASE_URL": proxied, "RTD_IDLE_TIMEOUT": f"{IDLE_TIMEOUT:g}s"}
        pipeline, worker, bridge = await streaming(processes, env, mariadb, database)

        with MemoryWatch({"worker": worker}) as watch:
            proxy.cut()
            await asyncio.sleep(LONG_OUTAGE)
            assert worker.is_running(), "the worker exited while the database was away"
            proxy.restore()
            await worker.await_log("sink: database back", timeout=60)
        print(f"long database outage: worker RSS growth {watch.growth_mb('worker'):.1f} MB")
        assert watch.growth_mb("worker") < MEMORY_BOUND_MB

        emitted = await pipeline.end_stream(after=5.0)
        assert emitted > RATE * LONG_OUTAGE, f"{emitted} readings emitted: the simulator did not keep up {RATE}/s"
        readings = await stored_exactly_once(
            mariadb, database, emitted, pipeline.env, timeout=120, workers=pipeline.workers
        )
        # The worker group committed all of rtd.validated (stored_exactly_once waited for it), and the
        # window agent sends a late reading to rtd.dlq before its input is acknowledged: every late
        # reading is in rtd.dlq below the end offsets it has now.
        bootstrap = settings_of(env).bootstrap_servers
        dead_letters = [orjson.loads(r.value) for r in await read_to_end(bootstrap, topics.DLQ)]
        late = [d for d in dead_letters if d["reason"] == "late"]
        print(f"long database outage: {emitted} readings, {len(dead_letters)} dead letters, {len(late)} late")
        # Before the window agent asked the broker whether an idle-looking partition had unread input,
        # 57-60% of the readings were dead-lettered here as late, 41-46 s behind the watermark.
        assert late == [], f"{len(late)} of {emitted} readings dead-lettered as late, e.g. {late[0]['detail']}"
        windows = await stored_windows_match_readings(mariadb, database, readings, pipeline.env, timeout=90)
        print(f"long database outage: {windows} stored windows match the stored readings")
        assert processes.terminate(bridge) == 0
        assert processes.terminate(worker, timeout=60) == 0
