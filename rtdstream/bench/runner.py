"""A benchmark run from start to clean stop: plain (warm-up, then measure), ramp, or soak.

The order matters for the loss check: the simulator stops first (its log then
says exactly how many readings it emitted), the pipeline drains, the database
and the clients are checked against that count, and only then do the other
processes stop. The raw limits are measured last, on the idle machine, with
the envelope size the run actually produced.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer

from rtdstream import topics
from rtdstream.bench.clients import ClientFleet
from rtdstream.bench.database import BenchDatabase
from rtdstream.bench.limits import RAW_SOURCE_PREFIX, RawLimits, measure_limits
from rtdstream.bench.options import DEFAULT_SERVER_URL, BenchOptions
from rtdstream.bench.pipeline import Pipeline, PipelineFailed
from rtdstream.bench.probes import LagProbe, Sample, Sampler
from rtdstream.bench.report import RunRecord, build_report, evaluate_step, write_outputs
from rtdstream.broker import EmbeddedBroker
from rtdstream.config import Settings
from rtdstream.errors import UserError
from rtdstream.kafka_security import ClientOptions, client_options
from rtdstream.lag import topic_partitions

log = logging.getLogger(__name__)

#: How long the clients may keep trying to subscribe while the first readings reach the web view.
SUBSCRIBE_WAIT = 60.0
#: The drain is over once nothing moved for this long with no lag left (readings are missing, not late).
STALL_SECONDS = 15.0


class BenchFailed(UserError):
    """The pipeline could not be run; the message says which process and why."""


class BenchLostReadings(UserError):
    """The run lost or invented readings: the report is written, and the command fails."""

    exit_code = 3

    def __init__(self, integrity: dict[str, Any]) -> None:
        if not integrity["drained"]:
            message = (f"zero loss not verified: {integrity['not_stored']} readings were still on their way when "
                       "--drain-timeout ran out (offered more than the pipeline takes?)")
        else:
            message = (f"readings lost or unexpected: lost {integrity['lost']}, unexpected "
                       f"{integrity['unexpected_rows']}, missing at clients {integrity['client_missing']}")
        super().__init__(message + " (see the report)")

    @staticmethod
    def found_in(integrity: dict[str, Any]) -> bool:
        """True when the run cannot vouch for zero loss (the command then fails)."""
        return not integrity["drained"] or bool(
            integrity["lost"] or integrity["unexpected_rows"] or integrity["client_missing"]
        )


class BenchRun:
    """One invocation of ``rtdstream bench``."""

    def __init__(self, options: BenchOptions, settings: Settings, *, out: Callable[[str], None] = print) -> None:
        self.options = options
        self.settings = settings
        self.out = out
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.run_dir = options.output / self.stamp
        self.samples: list[Sample] = []
        self.steps: list[dict[str, Any]] = []
        #: Every client fleet of the run, the current one last (a ramp step with more sources brings a new one).
        self.fleets: list[ClientFleet] = []
        self.broker: EmbeddedBroker | None = None
        self._database_server = mariadb_pid(options.database_url or DEFAULT_SERVER_URL)

    def sources(self, rate: float) -> list[str]:
        """The simulator's source ids at ``rate`` (``sensor-1`` ... ``sensor-N``)."""
        return [f"sensor-{n}" for n in range(1, self.options.sources_for(rate) + 1)]

    async def run(self) -> dict[str, Any]:
        """Run the benchmark and write its outputs; the report."""
        if importlib.util.find_spec("matplotlib") is None:
            raise UserError("rtdstream bench draws its chart with matplotlib: pip install 'rtdstream[bench]'")
        options = self.options
        broker = self.broker = EmbeddedBroker().start() if self.settings.broker is None else None
        try:
            settings = self.settings.model_copy(update={"broker": broker.url}) if broker else self.settings
            database = await self._database()
            try:
                record = await self._run_on(settings, database, embedded=broker is not None)
            finally:
                await database.close(drop=database.created and not options.keep)
        finally:
            if broker is not None:
                broker.stop()
        report = build_report(record)
        paths = write_outputs(report, record, self.run_dir)
        self.out(report["table"])
        self.out("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
        return report

    async def _database(self) -> BenchDatabase:
        if self.options.database_url is None:
            database = await BenchDatabase.fresh(DEFAULT_SERVER_URL)
        else:
            database = BenchDatabase(self.options.database_url, created=False)
        try:
            await database.prepare()
        except BaseException:
            await database.close(drop=True)
            raise
        return database

    async def _run_on(self, settings: Settings, database: BenchDatabase, *, embedded: bool) -> RunRecord:
        options = self.options
        app_id = settings.app_id if embedded else f"{settings.app_id}-bench-{self.stamp}"
        await topics.ensure_topics(settings)
        if not embedded:
            await start_groups_at_end(client_options(settings), app_id)
        pipeline = Pipeline.configure(
            self.run_dir, broker_url=settings.broker_url, database_url=database.url, app_id=app_id,
            workers=options.workers, embedded=embedded,
        )
        first_rate = options.ramp.start if options.ramp else options.rate
        lag = LagProbe(client_options(settings), app_id)
        sampler: Sampler | None = None
        self.out(f"bench: starting {options.workers} worker(s), web view, simulator and bridge; logs in {self.run_dir}")
        try:
            sources = self.sources(first_rate)
            await pipeline.start(rate=first_rate, sources=len(sources), producer=options.producer)
            fleet = await self._connect_clients(pipeline, sources)
            lag.start()
            sampler = Sampler(fleet=fleet, database=database, lag=lag, probe_source=sources[0])
            if options.ramp:
                await self._ramp(pipeline, sampler)
            else:
                await self._sample(pipeline, sampler, options.duration, options.rate, warmup=options.warmup)
            await pipeline.stop_sim()
            load_seconds = pipeline.emitting_seconds()
            emitted = pipeline.emitted()
            self.out(f"bench: simulator stopped after emitting {emitted} readings; draining the pipeline")
            drained = await self._drain(pipeline, sampler, emitted)
            integrity = await check_integrity(database, self.fleets, emitted, self.samples[-1].totals, drained=drained)
        except PipelineFailed as exc:
            raise BenchFailed(f"the pipeline failed: {exc}") from None
        finally:
            if sampler is not None:
                await sampler.close()
            for fleet in self.fleets:
                await fleet.close()
            await lag.stop()
            try:
                exit_codes = await pipeline.stop()
            finally:
                pipeline.kill_remaining()
        mysql_latency = await database.commit_latencies()
        limits = await self._limits(settings, database, emitted) if options.limits else None
        return RunRecord(
            options=options,
            settings=settings,
            machine=machine(),
            started_at=self.stamp,
            database=database.name,
            samples=self.samples,
            emitted=emitted,
            load_seconds=load_seconds,
            integrity=integrity,
            mysql_latency=mysql_latency,
            exit_codes=exit_codes,
            limits=limits,
            steps=self.steps,
        )

    async def _connect_clients(self, pipeline: Pipeline, sources: list[str]) -> ClientFleet:
        """Connect the clients once the web view (or the database) knows every source."""
        deadline = time.monotonic() + SUBSCRIBE_WAIT
        while True:
            fleet = ClientFleet(pipeline.web_url, sources, total=self.options.clients, measuring=self.options.measuring)
            try:
                await fleet.connect()
                self.fleets.append(fleet)
                return fleet
            except RuntimeError as exc:  # a source not seen yet: "unknown source"
                await fleet.close()
                if time.monotonic() > deadline:
                    raise BenchFailed(f"clients could not subscribe within {SUBSCRIBE_WAIT:g}s: {exc}") from None
                pipeline.check_alive()
                await asyncio.sleep(0.5)

    async def _sample(
        self, pipeline: Pipeline, sampler: Sampler, seconds: float, offered: float, *,
        warmup: float, step: int = 0,
    ) -> list[Sample]:
        """One sample a second for ``seconds``, printed as a progress line; the samples."""
        taken = []
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds - 1e-3:
            await asyncio.sleep(max(0.0, (len(taken) + 1) - elapsed))
            pipeline.check_alive()
            phase = "warmup" if time.monotonic() - started <= warmup else "measure"
            taken.append(await self._take(pipeline, sampler, phase, offered, step))
        return taken

    async def _take(self, pipeline: Pipeline, sampler: Sampler, phase: str, offered: float, step: int = 0) -> Sample:
        """One sample: kept for the report and printed as a progress line."""
        sample = await sampler.sample(
            phase=phase, offered=offered, worker_urls=pipeline.worker_urls, web_url=pipeline.web_url,
            pids=self._pids(pipeline), step=step,
        )
        self.samples.append(sample)
        self.out(progress_line(sample))
        return sample

    async def _ramp(self, pipeline: Pipeline, sampler: Sampler) -> None:
        ramp = self.options.ramp
        assert ramp is not None
        for step, rate in enumerate(ramp.rates()):
            sources = self.sources(rate)
            if step:
                await pipeline.stop_sim()
                await pipeline.start_sim(rate=rate, sources=len(sources))
                if len(sources) != len(sampler.fleet.sources):
                    # New sensors: clients subscribed to all of them replace the old ones.
                    previous = sampler.fleet
                    sampler.fleet = await self._connect_clients(pipeline, sources)
                    await previous.close()
            self.out(f"bench: ramp step {step + 1}: {rate:,.0f} readings/s over {len(sources)} sources for {ramp.step:g}s")
            taken = await self._sample(pipeline, sampler, ramp.step, rate, warmup=self.options.warmup, step=step)
            verdict = {"sources": len(sources), **evaluate_step(taken, rate, ramp)}
            self.steps.append(verdict)
            self.out(f"bench: ramp step {step + 1}: {verdict['verdict']}")
            if not verdict["sustainable"]:
                break

    async def _drain(self, pipeline: Pipeline, sampler: Sampler, emitted: int) -> bool:
        """Sample until every emitted reading is stored and the clients went quiet (True), or it stalls or times out."""
        started = time.monotonic()
        last_change = started
        previous: tuple[float, float] | None = None
        while time.monotonic() - started < self.options.drain_timeout:
            await asyncio.sleep(1.0)
            sample = await self._take(pipeline, sampler, "drain", 0.0)
            moved = (sample.totals.get("stored", 0.0), sample.totals.get("delivered", 0.0))
            if moved != previous:
                last_change, previous = time.monotonic(), moved
            quiet = time.monotonic() - last_change
            if moved[0] >= emitted and quiet >= 2.0:
                return True
            if quiet >= STALL_SECONDS and not sample.lag:
                self.out(f"bench: nothing moved for {STALL_SECONDS:g}s with no lag: readings are missing")
                return True
        self.out(f"bench: the pipeline did not drain within --drain-timeout {self.options.drain_timeout:g}s")
        return False

    def _pids(self, pipeline: Pipeline) -> dict[str, tuple[int, bool]]:
        pids = {name: (pid, True) for name, pid in pipeline.pids().items()}
        pids = {("sim" if name.startswith("sim") else name): value for name, value in pids.items()}
        pids["bench"] = (os.getpid(), False)  # the clients; its children are the pipeline, counted above
        if self._database_server is not None:
            pids["mariadb"] = (self._database_server, False)
        if self.broker is not None and self.broker.process is not None:
            pids["broker"] = (self.broker.process.pid, False)
        elif (broker_pid := local_listener_pid(self.settings.bootstrap_servers.split(",")[0])) is not None:
            pids["broker"] = (broker_pid, False)  # a Kafka on this machine (its first node): part of the cost
        return pids

    async def _limits(self, settings: Settings, database: BenchDatabase, emitted: int) -> RawLimits:
        self.out("bench: measuring the raw limits (aiokafka produce/consume, executemany)")
        final = self.samples[-1].totals
        per_message = max(1, round(emitted / final["readings_messages"])) if final.get("readings_messages") else 1
        readings = self.options.limit_rows or min(max(emitted, 10_000), 500_000)
        limits = await measure_limits(
            client=client_options(settings), database=database, readings=readings,
            per_message=per_message, sink_batch=settings.sink_batch, sources=len(self.fleets[-1].sources),
            partitions=settings.partitions,
        )
        if not database.created or self.options.keep:
            await database.remove_rows_of(RAW_SOURCE_PREFIX)
        return limits


async def check_integrity(
    database: BenchDatabase, fleets: list[ClientFleet], emitted: int, totals: dict[str, float], *, drained: bool
) -> dict[str, Any]:
    """Readings lost or duplicated, in MySQL and at each measuring client, against what the simulator emitted.

    Until the pipeline has drained, a reading missing from MySQL may still be
    on its way: then ``lost`` is None (not verified) and ``not_stored`` says how many.
    A client owes every stored reading of a source from the first one it got;
    clients replaced during a ramp only up to the last one they got.
    """
    rows = await database.count()
    written = int(totals.get("stored", 0))
    clients = []
    for fleet in fleets:
        clients += await _check_clients(database, fleet, replaced=fleet is not fleets[-1])
    return {
        "emitted": emitted,
        "stored_rows": rows,
        "drained": drained,
        "lost": max(emitted - rows, 0) if drained else None,
        "not_stored": max(emitted - rows, 0),
        "unexpected_rows": max(rows - emitted, 0),
        # Rows the sink wrote more than once (replays the offsets did not catch; the upsert absorbed them).
        "written_twice": max(written - rows, 0),
        "rejected": int(totals.get("rejected", 0)),
        "clients": clients,
        "client_missing": sum(c["missing"] for c in clients),
        "client_duplicates": sum(c["duplicates"] for c in clients),
        "light_client_failures": sum(fleet.light_failures for fleet in fleets),
    }


async def _check_clients(database: BenchDatabase, fleet: ClientFleet, *, replaced: bool) -> list[dict[str, int]]:
    clients = []
    for recorder in fleet.recorders:
        bounds = {s: (p.first_time, p.last_time if replaced else None) for s, p in recorder.sources.items()}
        expected = await database.counts_between(bounds)
        missing = sum(max(expected[s] - p.received, 0) for s, p in recorder.sources.items())
        clients.append({
            "sources": len(recorder.sources),
            "received": recorder.received,
            "expected": sum(expected.values()),
            "missing": missing,
            "duplicates": recorder.duplicates,
        })
    return clients


async def start_groups_at_end(client: ClientOptions, app_id: str) -> None:
    """Commit the new worker groups' offsets at the current end of the topics they consume.

    On a shared Kafka the topics already hold other runs' data; a fresh group
    would start from the beginning (as the worker must in production) and
    fill the benchmark's database with readings the simulator never emitted.
    """
    for group, consumed in topics.worker_groups(app_id).items():
        consumer = AIOKafkaConsumer(**client, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, consumed)
            consumer.assign(partitions)
            ends = await consumer.end_offsets(partitions)
            await consumer.commit({tp: end for tp, end in ends.items()})
        finally:
            await consumer.stop()


def progress_line(sample: Sample) -> str:
    rates = sample.rates
    p99 = sample.client_latency.percentile(99)
    age = f"{sample.db_age_ms:>6}ms" if sample.db_age_ms is not None else "     - "
    cpu = " ".join(f"{name} {usage.cpu_percent:3.0f}%" for name, usage in sample.processes.items() if name != "mariadb")
    return (
        f"[{sample.t:6.1f}s {sample.phase:>7}] offered {sample.offered:>8,.0f}/s  "
        f"stored {rates.get('stored', 0):>8,.0f}/s  delivered {rates.get('delivered', 0):>8,.0f}/s  "
        f"lag {sample.lag if sample.lag is not None else '-':>6}  p99 {p99 if p99 is not None else '-':>5}ms  "
        f"db age {age}  cpu: {cpu}"
    )


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": psutil.cpu_count(),
        "cpu_model": cpu or platform.processor(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python_loop_ms": python_loop_ms(),
    }


def python_loop_ms(steps: int = 1_000_000, repeats: int = 5) -> float:
    """Milliseconds one core takes for a fixed pure-Python loop (the median of ``repeats``), the machine idle.

    A yardstick for the machine's speed on the day: on a shared host a neighbour
    can slow every core without the hypervisor counting it as steal (runs of one
    commit at 50,000/s stored 48,000/s and 27,000/s, hours apart, with 2% steal,
    and every process needed a quarter more CPU for the same work).
    """
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        total = 0
        for step in range(steps):
            total += step
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 1)


def local_listener_pid(address: str) -> int | None:
    """The pid of the process listening on ``host:port`` when that is this machine, else None."""
    host, _, port = address.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
        return None
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == int(port) and connection.pid:
            return connection.pid
    return None


def mariadb_pid(url: str) -> int | None:
    """The local MySQL/MariaDB server's pid when the database is on this machine (its CPU is part of the cost)."""
    if sa.make_url(url).host not in ("127.0.0.1", "localhost", None):
        return None
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in ("mariadbd", "mysqld"):
            return process.pid
    return None
