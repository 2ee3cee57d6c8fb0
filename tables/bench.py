"""Throughput of the window agent alone, on a ``rtd.validated`` topic filled beforehand.

``python -m rtdstream.tables.bench`` (and later ``rtdstream bench``) fills the
topic of an embedded broker with envelopes of validated readings, starts a
worker that runs only the window agent, and times how long the agent takes to
apply all of it. Progress is read from the worker's ``/windows/open/`` page
(the applied input offsets), so the number is the agent's own pace, not the
time a reader of ``rtd.windows`` needs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
from aiokafka import AIOKafkaProducer

from rtdstream.broker import EmbeddedBroker, free_port
from rtdstream.config import load_settings
from rtdstream.models import ReadingBatch, encode_batch
from rtdstream.topics import VALIDATED, ensure_topics

#: 2030-01-01T00:00:00Z: far from any real data, on a minute boundary.
BENCH_T0 = 1_893_456_000_000


@dataclass(frozen=True)
class WindowBenchResult:
    readings: int
    messages: int
    sources: int
    partitions: int
    #: From the first applied message to the last.
    apply_seconds: float
    #: From starting the worker process to the last applied message (start-up, group join, recovery).
    total_seconds: float
    windows_emitted: int

    @property
    def readings_per_second(self) -> float:
        return self.readings / self.apply_seconds


def bench_batches(readings: int, sources: int, per_message: int, spacing_ms: int = 10) -> list[ReadingBatch]:
    """Envelopes of ``per_message`` readings per source, time-major, like a busy bridge produces them."""
    names = [f"bench-{n:03d}" for n in range(sources)]
    per_source = readings // sources
    batches = []
    for first in range(0, per_source, per_message):
        count = min(per_message, per_source - first)
        times = [BENCH_T0 + (first + i) * spacing_ms for i in range(count)]
        for name in names:
            speeds = [(first + i + len(name)) % 51 for i in range(count)]
            batches.append(ReadingBatch(name, times, speeds, (0, len(batches), 0)))
    return batches


async def prefill(bootstrap: str, batches: list[ReadingBatch]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        for batch in batches:
            await producer.send(VALIDATED, encode_batch(batch), key=batch.source.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def measure(
    *, readings: int = 1_000_000, sources: int = 64, per_message: int = 100, partitions: int = 8,
    log_path: Path | None = None,
) -> WindowBenchResult:
    """Fill a fresh embedded broker, run the window agent over it, and time it."""
    batches = bench_batches(readings, sources, per_message)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as workdir:
        env = _worker_env(broker, partitions, Path(workdir))
        await ensure_topics(load_settings(broker=broker.url, partitions=partitions))
        await prefill(broker.bootstrap_servers, batches)
        port = free_port()
        log = (log_path or Path(workdir) / "worker.log").open("wb")
        started = time.monotonic()
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtdstream.tables.solo_worker", "worker", "-l", "warn", "--web-port", str(port),
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True,
        )
        try:
            first, last, emitted = await _watch_progress(f"http://127.0.0.1:{port}", len(batches), worker)
        finally:
            if worker.returncode is None:
                worker.terminate()
            await asyncio.wait_for(worker.wait(), timeout=30)
            log.close()
    return WindowBenchResult(
        readings=sum(len(b) for b in batches), messages=len(batches), sources=sources, partitions=partitions,
        apply_seconds=last - first, total_seconds=last - started, windows_emitted=emitted,
    )


def _worker_env(broker: EmbeddedBroker, partitions: int, workdir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RTD_")}
    env.update(
        RTD_BROKER=broker.url,
        RTD_PARTITIONS=str(partitions),
        RTD_SESSION_TIMEOUT="6s",
        RTD_IDLE_TIMEOUT="600s",
        RTD_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'bench.sqlite3'}",
        PYTHONUNBUFFERED="1",
    )
    return env


async def _watch_progress(
    web: str, messages: int, worker: asyncio.subprocess.Process
) -> tuple[float, float, int]:
    """(first progress, all applied) monotonic times, and the windows emitted by then."""
    first: float | None = None
    async with aiohttp.ClientSession() as session:
        while True:
            if worker.returncode is not None:
                raise RuntimeError(f"the bench worker exited with {worker.returncode}")
            now = time.monotonic()
            try:
                async with session.get(f"{web}/windows/open/") as response:
                    report = await response.json()
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
                continue
            applied = sum(p["input_offset"] + 1 for p in report["partitions"].values())
            if applied and first is None:
                first = now
            if applied >= messages:
                async with session.get(f"{web}/counters/") as response:
                    counters = await response.json()
                emitted = sum(v for k, v in counters.items() if k.startswith("rtd_windows_emitted_total"))
                return first or now, now, int(emitted)
            await asyncio.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--sources", type=int, default=64)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()
    result = asyncio.run(
        measure(readings=args.readings, sources=args.sources, per_message=args.per_message, partitions=args.partitions)
    )
    print(
        f"window agent: {result.readings} readings in {result.messages} messages, {result.sources} sources, "
        f"{result.partitions} partitions: {result.readings_per_second:,.0f} readings/s "
        f"({result.apply_seconds:.2f} s applying, {result.total_seconds:.2f} s with start-up); "
        f"{result.windows_emitted} windows emitted"
    )
    print(asdict(result))


if __name__ == "__main__":
    main()
