"""One sample a second of the running pipeline: stage counters, lag, latency, CPU, memory, descriptors.

Every figure comes from the outside, the way an operator would see it: the
workers' ``/counters/`` pages, the web view's ``/metrics``, the consumer
group's lag (:mod:`rtdstream.lag`), one index lookup in the database, and
``psutil`` for each process with its children.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import psutil
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from rtdstream import topics
from rtdstream.bench.clients import ClientFleet
from rtdstream.bench.database import BenchDatabase
from rtdstream.bench.histogram import Histogram
from rtdstream.kafka_security import ClientOptions
from rtdstream.lag import GroupLag, measure_worker_lag

log = logging.getLogger(__name__)

#: Worker counters summed over workers, by the name used in samples.
WORKER_COUNTERS = {
    "validated": "rtd_readings_accepted_total",
    "stored": 'rtd_sink_rows_written_total{table="readings"}',
    "sink_replayed": "rtd_sink_replayed_messages_total",
    "late": "rtd_late_readings_total",
}
#: Counters whose names carry labels, summed over all label values.
WORKER_COUNTER_FAMILIES = {"windows": "rtd_windows_emitted_total", "rejected": "rtd_readings_rejected_total"}
LAG_INTERVAL = 2.0
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=3.0)


@dataclass
class Usage:
    cpu_percent: float
    rss_mb: float
    fds: int


@dataclass
class Sample:
    """The pipeline at one moment; ``rates`` are per second since the previous sample."""

    t: float
    #: Wall-clock time of the sample (epoch seconds), to line it up with database timestamps.
    wall: float
    phase: str
    offered: float
    totals: dict[str, float]
    rates: dict[str, float]
    client_latency: Histogram = field(repr=False)
    db_age_ms: int | None
    lag: int | None
    lag_by_topic: dict[str, int]
    processes: dict[str, Usage]
    #: The ramp step (its offered rate's index); 0 outside ramps.
    step: int = 0
    #: CPU time the hypervisor gave other guests since the previous sample, in % of one core (:class:`StealProbe`).
    steal_percent: float | None = None

    def as_dict(self) -> dict[str, Any]:
        latency = self.client_latency
        return {
            "t": round(self.t, 2),
            "wall": round(self.wall, 3),
            "phase": self.phase,
            "step": self.step,
            "offered": self.offered,
            "totals": self.totals,
            "rates": {name: round(value, 1) for name, value in self.rates.items()},
            "client_p50_ms": latency.percentile(50),
            "client_p99_ms": latency.percentile(99),
            "db_age_ms": self.db_age_ms,
            "lag": self.lag,
            "lag_by_topic": self.lag_by_topic,
            "processes": {
                name: {"cpu_percent": round(u.cpu_percent, 1), "rss_mb": round(u.rss_mb, 1), "fds": u.fds}
                for name, u in self.processes.items()
            },
            "steal_percent": None if self.steal_percent is None else round(self.steal_percent, 1),
        }


class StealProbe:
    """CPU time the hypervisor gave to other guests of the host (Linux's ``steal``), in % of one core.

    On a shared virtual machine a busy neighbour takes CPU from every process
    of the run at once: a run with 20% steal on 2 cores ran on 1.8 of them. On
    the CI machine kind it ranged from 0 to 17% of the CPU time between
    otherwise equal runs, with throughput moving accordingly, so each report says how
    much there was. None where the system does not count steal.
    """

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def sample(self) -> float | None:
        steal = getattr(psutil.cpu_times(), "steal", None)
        if steal is None:
            return None
        now = time.monotonic()
        last, self._last = self._last, (now, steal)
        if last is None or now <= last[0]:
            return None
        return (steal - last[1]) / (now - last[0]) * 100


class ProcessProbe:
    """CPU (as a share of one core) and memory of named processes, each with its children."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def sample(self, pids: dict[str, tuple[int, bool]]) -> dict[str, Usage]:
        """``pids``: name -> (pid, whether to include its children)."""
        usage = {}
        now = time.monotonic()
        for name, (pid, with_children) in pids.items():
            try:
                cpu, rss, fds = _tree_usage(psutil.Process(pid), with_children)
            except psutil.Error:
                continue
            last_time, last_cpu = self._last.get(name, (now, cpu))
            self._last[name] = (now, cpu)
            percent = 100 * (cpu - last_cpu) / (now - last_time) if now > last_time else 0.0
            usage[name] = Usage(percent, rss / 1e6, fds)
        return usage


def _tree_usage(process: psutil.Process, with_children: bool) -> tuple[float, int, int]:
    members = [process, *(process.children(recursive=True) if with_children else [])]
    cpu = rss = fds = 0
    for member in members:
        with contextlib.suppress(psutil.Error):
            times = member.cpu_times()
            cpu += times.user + times.system
            rss += member.memory_info().rss
            fds += member.num_fds()
    return cpu, rss, fds


class LagProbe:
    """The worker group's lag, refreshed in the background (each measurement opens its own clients)."""

    def __init__(self, client: ClientOptions, group: str) -> None:
        self.client = client
        self.group = group
        self.latest: GroupLag | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="bench lag probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                self.latest = await measure_worker_lag(self.client, self.group, timeout=5.0)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.warning("bench: lag not measured (%r)", exc)
            await asyncio.sleep(LAG_INTERVAL)

    def produced(self, topic: str) -> int | None:
        """Messages in ``topic`` so far (the end offsets), as of the last measurement."""
        if self.latest is None:
            return None
        return sum(p.end for p in self.latest.partitions if p.topic == topic)


class Sampler:
    """Takes the per-second samples of a run."""

    def __init__(
        self,
        *,
        fleet: ClientFleet,
        database: BenchDatabase,
        lag: LagProbe,
        probe_source: str,
    ) -> None:
        self.fleet = fleet
        self.database = database
        self.lag = lag
        self.probe_source = probe_source
        self.processes = ProcessProbe()
        self.steal = StealProbe()
        self.session = aiohttp.ClientSession(timeout=HTTP_TIMEOUT)
        self._previous: tuple[float, dict[str, float]] | None = None
        self.started = time.monotonic()

    async def close(self) -> None:
        await self.session.close()

    async def sample(
        self, *, phase: str, offered: float, worker_urls: list[str], web_url: str,
        pids: dict[str, tuple[int, bool]], step: int = 0,
    ) -> Sample:
        now = time.monotonic()
        counters, web, db_age = await asyncio.gather(
            self._worker_counters(worker_urls), self._web_counters(web_url), self._db_age()
        )
        delivered_now, latencies = self.fleet.take()
        totals = {**counters, **web}
        messages = self.lag.produced(topics.READINGS)
        if messages is not None:
            totals["readings_messages"] = messages
        previous_totals = self._previous[1] if self._previous else {}
        elapsed = now - self._previous[0] if self._previous else 0.0
        totals["delivered"] = previous_totals.get("delivered", 0.0) + delivered_now
        rates = {
            name: (value - previous_totals.get(name, 0.0)) / elapsed if elapsed > 0 else 0.0
            for name, value in totals.items()
        }
        self._previous = (now, totals)
        lag = self.lag.latest
        return Sample(
            t=now - self.started,
            wall=time.time(),
            phase=phase,
            offered=offered,
            totals=totals,
            rates=rates,
            client_latency=latencies,
            db_age_ms=db_age,
            lag=lag.total if lag else None,
            lag_by_topic=lag.by_topic() if lag else {},
            processes=self.processes.sample(pids),
            step=step,
            steal_percent=self.steal.sample(),
        )

    async def _worker_counters(self, urls: list[str]) -> dict[str, float]:
        totals = dict.fromkeys([*WORKER_COUNTERS, *WORKER_COUNTER_FAMILIES], 0.0)
        for url in urls:
            try:
                async with self.session.get(f"{url}/counters/") as response:
                    counters: dict[str, float] = await response.json()
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue  # a busy or stopping worker: its counters come back with the next sample
            for name, key in WORKER_COUNTERS.items():
                totals[name] += counters.get(key, 0.0)
            for name, family in WORKER_COUNTER_FAMILIES.items():
                totals[name] += sum(v for k, v in counters.items() if k.split("{")[0] == family)
        return totals

    async def _web_counters(self, url: str) -> dict[str, float]:
        try:
            async with self.session.get(f"{url}/metrics") as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError):
            return {}
        return web_counters(text)

    async def _db_age(self) -> int | None:
        try:
            newest = await self.database.newest_time(self.probe_source)
        except Exception:  # noqa: BLE001  (a probe: an answer missing from one sample is no failure)
            return None
        return None if newest is None else round(time.time() * 1000) - newest


def web_counters(metrics_text: str) -> dict[str, float]:
    """The web view's feed count and its live drops by reason, from its Prometheus text."""
    found: dict[str, float] = {"web_feed": 0.0}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "rtd_web_feed_readings_total":
                found["web_feed"] += sample.value
            elif sample.name == "rtd_web_live_dropped_total":
                key = f"web_dropped_{sample.labels['event']}_{sample.labels['reason']}"
                found[key] = found.get(key, 0.0) + sample.value
    return found
