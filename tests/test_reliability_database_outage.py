"""The machine's MariaDB server stopped for 30 s mid-stream, then started: nothing lost, nothing twice, no exit.

Unlike the sink's proxy test (``test_sink_pipeline.py``), this stops the real
server, so the worker sees what it sees in production: connections reset,
then refused, then a server that starts up again (with a cold buffer pool).
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.support import mariadb as mariadb_server
from tests.support.mariadb import MariaDB
from tests.support.pipeline import MemoryWatch, Pipeline, stored_exactly_once, wait_for_rows
from tests.support.processes import ProcessGroup

OUTAGE = 30.0
#: RSS the worker may add while the sink holds its batch and stops pulling input.
MEMORY_BOUND_MB = 60


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_mariadb_stopped_for_30s_mid_stream_loses_and_duplicates_nothing(
    rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    pipeline = Pipeline(processes, {**rtd_env, "RTD_DATABASE_URL": mysql_url}, rate=200, sources=4)
    worker = await pipeline.start_worker()
    await pipeline.start_sim()
    bridge = pipeline.start_bridge()
    await wait_for_rows(mariadb, database, 1000)

    try:
        with MemoryWatch({"worker": worker}) as watch:
            mariadb_server.stop()
            await asyncio.sleep(OUTAGE)
            assert worker.is_running(), "the worker exited while the database was down"
            mariadb.ensure_running()  # starts the server and waits until it answers
            await worker.await_log("sink: database back", timeout=60)
    finally:
        mariadb.ensure_running()  # whatever happened, the next tests get their server back
    failures = re.findall(r"sink: writing .* failed \(attempt (\d+)\)", worker.log_text())
    print(f"database outage: {len(failures)} failed attempts logged (last: attempt {failures[-1]}); "
          f"worker RSS growth {watch.growth_mb('worker'):.1f} MB")
    assert len(failures) >= 3  # it kept trying, and said so
    assert watch.growth_mb("worker") < MEMORY_BOUND_MB

    emitted = await pipeline.end_stream()
    await stored_exactly_once(mariadb, database, emitted, pipeline.env)
    assert worker.is_running() and "Traceback" not in worker.log_text()
    assert processes.terminate(bridge) == 0
    assert processes.terminate(worker, timeout=60) == 0
