"""Helpers of the web view tests: start ``rtdstream web``, feed its topics, read its metrics."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp
import orjson
import socketio
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families

from rtdstream import topics
from rtdstream.broker import free_port
from rtdstream.models import ReadingBatch, encode_envelope
from tests.support.processes import Proc, ProcessGroup, until

FEED_READY = r"web feed reading \d+ partitions"


def start_web(processes: ProcessGroup, env: dict[str, str], *, name: str = "web") -> tuple[Proc, str]:
    """``rtdstream web`` on a free port, once it listens and reads the topics; (process, base URL)."""
    port = free_port()
    proc = processes.start(name, ["web", "--host", "127.0.0.1", "--port", str(port)], env)
    proc.wait_for_log(r"web view listening on", timeout=60)
    proc.wait_for_log(FEED_READY, timeout=60)
    return proc, f"http://127.0.0.1:{port}"


def now_ms() -> int:
    return int(time.time() * 1000)


async def produce_keyed(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def produce_readings(bootstrap: str, batches: Iterable[ReadingBatch]) -> None:
    """Put envelopes on rtd.readings, as the bridge would (the web view reads its live readings there)."""
    await produce_keyed(bootstrap, topics.READINGS, ((b.source.encode(), encode_envelope(b)) for b in batches))


def partition_mate(source: str, partitions: int, prefix: str = "zz-marker") -> str:
    """A new source id whose readings the producer's key partitioner puts on ``source``'s partition.

    A positive marker of absence: the web view reads a partition in order, so once a client saw
    the mate (its ``sources`` event, sent to everyone), it would already have seen anything a
    reading of ``source`` produced before it sent it. ``prefix`` sorts after the tests' ids, so
    the mate never becomes the smallest id that ``newData`` follows.
    """
    every = list(range(partitions))
    partitioner = DefaultPartitioner()
    target = partitioner(source.encode(), every, every)
    names = (f"{prefix}-{n}" for n in itertools.count())
    return next(name for name in names if partitioner(name.encode(), every, every) == target)


def saw_source(client: RecordingClient, source: str) -> bool:
    """Whether ``client`` had a ``sources`` event naming ``source``."""
    return any(source in {r["source"] for r in event} for event in client.of("sources"))


async def until_web_knows(url: str, sources: Iterable[str], timeout: float = 15.0) -> None:
    """Wait until the web view at ``url`` has read a reading of each of ``sources``.

    A probe client sees them in its ``sources`` events: the positive end of "the web view has
    read them", where a sleep could be too short on a busy machine (and is always too long).
    """
    probe = await RecordingClient().connect(url)
    try:
        await probe.wait_for(lambda: all(saw_source(probe, source) for source in sources), timeout)
    finally:
        await probe.disconnect()


async def produce_json(bootstrap: str, topic: str, records: Iterable[dict[str, Any]]) -> None:
    await produce_keyed(bootstrap, topic, ((None, orjson.dumps(record)) for record in records))


def window_record(source: str, window: str, size: int, start: int, speeds: list[int]) -> dict[str, Any]:
    """A final aggregate in the rtd.windows shape."""
    return {
        "source": source, "window": window, "size": size, "step": size,
        "start": start, "end": start + size, "count": len(speeds),
        "min": min(speeds), "max": max(speeds), "sum": sum(speeds), "mean": sum(speeds) / len(speeds),
        "first_time": start, "last_time": start + len(speeds) - 1, "last_speed": speeds[-1],
    }


async def metric_samples(base_url: str, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple], float]:
    """Samples of /metrics keyed by (name, sorted label items)."""
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/metrics", headers=headers) as response:
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


class RecordingClient:
    """A python-socketio client that keeps every event it receives, by name."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: dict[str, list[Any]] = {}

        @self.sio.on("*")
        async def record(event: str, data: Any = None) -> None:
            self.events.setdefault(event, []).append(data)

        @self.sio.on("connect_error")
        async def refused(data: Any = None) -> None:
            self.events.setdefault("connect_error", []).append(data)

    def of(self, event: str) -> list[Any]:
        return self.events.get(event, [])

    async def connect(self, url: str, **kwargs: Any) -> RecordingClient:
        await self.sio.connect(url, wait_timeout=10, **kwargs)
        return self

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait until ``condition`` holds on the events received; the failure names the events so far."""
        try:
            await until(condition, timeout=timeout, what="the client's condition", interval=0.05)
        except AssertionError as timed_out:
            raise AssertionError(f"{timed_out}; events so far: { {k: len(v) for k, v in self.events.items()} }") from None

    async def disconnect(self) -> None:
        await self.sio.disconnect()


class LiveClient:
    """A python-socketio client that reconnects by itself, as a dashboard does; it notes when data arrives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=2)
        self.connects = 0
        self.new_data: list[tuple[float, Any]] = []

        @self.sio.on("connect")
        async def connected() -> None:
            self.connects += 1

        @self.sio.on("newData")
        async def new_data(data: Any) -> None:
            self.new_data.append((time.monotonic(), data))

    async def data_after(self, moment: float, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(at > moment for at, _ in self.new_data):
            if time.monotonic() > deadline:
                raise AssertionError(f"no newData after the restart (connected: {self.sio.connected})")
            await asyncio.sleep(0.1)
