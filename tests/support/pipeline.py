"""The whole pipeline as real processes (sim -> bridge -> worker -> web, MariaDB) for fault tests."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import psutil
from aiokafka.errors import KafkaError

from rtdstream.broker import free_port
from rtdstream.kafka_security import client_options
from rtdstream.lag import measure_worker_lag
from rtdstream.tables.specs import window_specs
from tests.support.cluster import settings_of
from tests.support.mariadb import MariaDB
from tests.support.processes import Proc, ProcessGroup, sim_total, start_worker, until
from tests.support.web import FEED_READY
from tests.support.windows import offline

Reading = tuple[str, int, float]


class Pipeline:
    """Starts and restarts the stages of one test; the simulator's port stays the same across restarts."""

    def __init__(self, processes: ProcessGroup, env: dict[str, str], *, rate: float, sources: int) -> None:
        self.processes = processes
        self.sim_port = free_port()
        # The key-less legacy table too: a reading written twice is a second row there (see stored_exactly_once).
        self.env = {**env, "RTD_SOURCES": f"http://127.0.0.1:{self.sim_port}/stream", "RTD_LEGACY_TABLE": "true"}
        self.sim_args = ["sim", "--port", str(self.sim_port), "--rate", str(rate), "--sources", str(sources)]
        self.sims: list[Proc] = []
        #: Every worker started, with its web URL (for its /counters/).
        self.workers: list[tuple[Proc, str]] = []
        self.web_port = free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"

    async def start_sim(self) -> Proc:
        sim = self.processes.start("sim", self.sim_args, self.env)
        self.sims.append(sim)
        await sim.await_log("listening")
        return sim

    def start_bridge(self) -> Proc:
        return self.processes.start("bridge", ["bridge"], self.env)

    async def start_worker(self, env: dict[str, str] | None = None) -> Proc:
        worker, url = await start_worker(self.processes, env or self.env)
        self.workers.append((worker, url))
        return worker

    async def start_web(self) -> Proc:
        """The web view, always on the same port (so clients can reconnect), once it reads the topics."""
        web = self.processes.start("web", ["web", "--host", "127.0.0.1", "--port", str(self.web_port)], self.env)
        await web.await_log(FEED_READY, timeout=60)
        return web

    async def end_stream(self, after: float = 3.0) -> int:
        """Stream ``after`` seconds more (past the fault), stop the simulator; the readings emitted in all."""
        await asyncio.sleep(after)
        assert self.processes.terminate(self.sims[-1]) == 0
        return self.emitted()

    def emitted(self) -> int:
        """Readings the simulators emitted (they log it per connection when stopped with SIGTERM)."""
        return sum(sim_total(sim) for sim in self.sims)


def stored_readings(mariadb: MariaDB, database: str) -> list[Reading]:
    try:
        rows = mariadb.query(database, "SELECT source, time, speed FROM readings")
    except Exception:  # noqa: BLE001  (the table appears once a worker has migrated)
        return []
    return [(source, t, float(speed)) for source, t, speed in rows]


async def wait_for_rows(mariadb: MariaDB, database: str, count: int, timeout: float = 90.0) -> list[Reading]:
    """The stored readings once there are at least ``count``; AssertionError if not within ``timeout``."""
    await until(lambda: len(stored_readings(mariadb, database)) >= count, timeout=timeout,
                what=f"{count} stored readings", interval=0.5)
    return stored_readings(mariadb, database)


async def stored_exactly_once(
    mariadb: MariaDB, database: str, emitted: int, env: dict[str, str], timeout: float = 90.0,
    *, workers: list[tuple[Proc, str]],
) -> list[Reading]:
    """The stored readings, asserted to be the ``emitted`` ones: none missing, none stored twice.

    ``readings`` has a unique key, so a reading written twice would not show there; the legacy
    ``Data`` table has none (the workers must run with RTD_LEGACY_TABLE=true), so a second write is
    a second row. Counted once the rows are in and the worker group (``env``'s RTD_APP_ID on its
    broker) has committed all of rtd.validated: nothing it was given is still to be written, so a
    replay cannot add a row after the count.
    """
    await wait_for_rows(mariadb, database, emitted, timeout)
    await until(lambda: sink_caught_up(env), timeout=timeout, what="the worker group committing all of rtd.validated")
    readings = stored_readings(mariadb, database)
    assert len(readings) == emitted, f"{emitted} emitted, {len(readings)} stored"
    assert len({(source, t) for source, t, _ in readings}) == emitted, "a reading was stored twice"
    [(legacy_rows,)] = mariadb.query(database, "SELECT COUNT(*) FROM `Data`")
    assert legacy_rows == emitted, f"{emitted} emitted, {legacy_rows} rows in Data: a double write"
    await sink_counters_add_up(workers, emitted)
    return readings


#: The sink's counter of committed rows, per table, as a worker's /counters/ names it.
ROWS_WRITTEN = 'rtd_sink_rows_written_total{{table="{}"}}'


async def sink_counters_add_up(workers: list[tuple[Proc, str]], emitted: int) -> dict[str, float]:
    """Assert the ``rtd_sink_rows_written_total`` counters of ``workers`` add up to ``emitted`` per table.

    The counter counts every row a sink transaction wrote, upserts included, so a reading written
    twice counts twice where the unique key of ``readings`` hides it. A process's counters die
    with it: when every worker still runs they must sum to exactly ``emitted`` (for ``readings``
    and ``Data`` alike); when one was killed or stopped, the survivors' sum can only be at most
    ``emitted`` (the ``Data`` table count is then the exact check). Call it before stopping any.
    Returns the summed counters.
    """
    running = [url for proc, url in workers if proc.is_running()]
    assert running, "no worker left to scrape"
    totals: dict[str, float] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        for url in running:
            async with http.get(f"{url}/counters/") as response:
                assert response.status == 200, f"{url}/counters/ answered {response.status}"
                for name, value in (await response.json()).items():
                    totals[name] = totals.get(name, 0.0) + value
    counted = {table: totals.get(ROWS_WRITTEN.format(table), 0.0) for table in ("readings", "Data")}
    if len(running) == len(workers):
        assert counted == {"readings": emitted, "Data": emitted}, f"{emitted} emitted, sink counters {counted}"
    else:
        assert all(n <= emitted for n in counted.values()), f"{emitted} emitted, survivors' counters {counted}"
    return totals


async def sink_caught_up(env: dict[str, str]) -> bool:
    """Whether the worker group of ``env`` has committed every message of rtd.validated."""
    settings = settings_of(env)
    try:
        lag = await measure_worker_lag(client_options(settings), settings.app_id)
    except (KafkaError, OSError, TimeoutError):
        return False
    return lag.caught_up


def stored_windows(mariadb: MariaDB, database: str) -> dict[tuple[str, str, int], list[float]]:
    """``window_aggregates`` as :func:`tests.support.windows.offline` keys its expected windows."""
    rows = mariadb.query(
        database,
        "SELECT source, `window`, start, count, min, max, sum, first_time, last_time, last_speed FROM window_aggregates",
    )
    return {(source, window, start): [float(v) for v in values] for source, window, start, *values in rows}


async def stored_windows_match_readings(
    mariadb: MariaDB, database: str, readings: list[Reading], env: dict[str, str], timeout: float = 90.0
) -> int:
    """Assert ``window_aggregates`` is an offline group-by of the stored ``readings`` per window size.

    The readings go to the oracle as one message, so it counts every reading in every window of
    it: a reading the worker left out (late, lost) or counted twice makes a window differ. Waits
    until as many windows are stored as the oracle has (the last ones close on the idle timeout).
    Returns how many windows were compared.
    """
    settings = settings_of(env)
    expected, _ = offline([sorted(readings, key=lambda r: r[1])], int(settings.grace * 1000), window_specs(settings))
    try:
        await until(lambda: len(stored_windows(mariadb, database)) >= len(expected), timeout=timeout,
                    what=f"{len(expected)} stored windows")
    except AssertionError:
        pass  # the comparison below says which windows are missing
    stored = stored_windows(mariadb, database)
    missing, extra = sorted(expected.keys() - stored.keys()), sorted(stored.keys() - expected.keys())
    assert not missing and not extra, (
        f"{len(expected)} windows expected, {len(stored)} stored; {len(missing)} missing {missing[:5]} ... "
        f"{missing[-5:]}, {len(extra)} extra {extra[:5]}"
    )
    differ = {
        key: (stored[key], values) for key, values in expected.items()
        if not all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6) for a, b in zip(stored[key], values, strict=True))
    }
    assert differ == {}, f"{len(differ)} stored windows differ from the group-by (stored, expected): " + str(
        list(differ.items())[:5])
    return len(expected)


class MemoryWatch:
    """Peak RSS and open descriptors of processes, sampled in the background while a fault lasts."""

    def __init__(self, procs: dict[str, Proc], interval: float = 0.5) -> None:
        self.procs = procs
        self.interval = interval
        self.start = self.usage()
        self.peak = dict(self.start)
        self._task: asyncio.Task[None] | None = None

    def usage(self) -> dict[str, tuple[int, int]]:
        """(RSS bytes, open descriptors) per process name."""
        usage = {}
        for name, proc in self.procs.items():
            process = psutil.Process(proc.pid)
            usage[name] = (process.memory_info().rss, process.num_fds())
        return usage

    def __enter__(self) -> MemoryWatch:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _sample(self) -> None:
        while True:
            for name, (rss, fds) in self.usage().items():
                peak_rss, peak_fds = self.peak[name]
                self.peak[name] = (max(rss, peak_rss), max(fds, peak_fds))
            await asyncio.sleep(self.interval)

    def growth_mb(self, name: str) -> float:
        return (self.peak[name][0] - self.start[name][0]) / 1e6
