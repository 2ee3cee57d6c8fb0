"""The benchmark's Socket.IO clients: a few that time and check every reading, the rest that only read.

Measuring clients are python-socketio clients (``auth: {newData: false}``)
subscribed to every source; each reading's latency is its arrival time minus
its ``time`` (the simulator's wall clock on the same machine). They also check
delivery: the simulator's times increase strictly per source, so a time not
newer than the last one seen for its source is a duplicate, and what a client
should have received is every stored reading of a source from the first one
it got. Light clients are raw websockets that subscribe to everything and read
each frame undecoded, like browser tabs, so the web view pays for ``M`` clients
while the benchmark process pays for decoding only a few.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio

from rtdstream.bench.histogram import Histogram
from rtdstream.web.loadtest import light_client, measuring_client


@dataclass(slots=True)
class SourceProgress:
    """What one client received of one source."""

    first_time: int
    last_time: int
    received: int = 0
    duplicates: int = 0


@dataclass
class ClientRecorder:
    """Everything one measuring client received, and the latencies since the last :meth:`take`."""

    sources: dict[str, SourceProgress] = field(default_factory=dict)
    received: int = 0
    duplicates: int = 0
    _fresh: Histogram = field(default_factory=Histogram)
    _fresh_count: int = 0

    def on_readings(self, batch: dict[str, Any]) -> None:
        now = time.time() * 1000
        times: list[int] = batch["time"]
        if not times:
            return
        progress = self.sources.get(batch["source"])
        if progress is None:
            progress = self.sources[batch["source"]] = SourceProgress(times[0], times[0] - 1)
        last = progress.last_time
        fresh = 0
        for reading_time in times:
            if reading_time > last:
                last = reading_time
                fresh += 1
        progress.last_time = last
        progress.received += fresh
        progress.duplicates += len(times) - fresh
        self.received += fresh
        self.duplicates += len(times) - fresh
        self._fresh.update([round(now - t) for t in times])
        self._fresh_count += fresh

    def take(self) -> tuple[int, Histogram]:
        """(new readings, their latencies) since the previous call."""
        taken = (self._fresh_count, self._fresh)
        self._fresh, self._fresh_count = Histogram(), 0
        return taken


class ClientFleet:
    """``total`` clients of one web view, ``measuring`` of them decoding; see the module doc."""

    def __init__(self, url: str, sources: list[str], *, total: int, measuring: int) -> None:
        self.url = url
        self.sources = sources
        self.total = total
        self.recorders = [ClientRecorder() for _ in range(measuring)]
        self.light_frames = [0]
        self._clients: list[socketio.AsyncClient] = []
        self._light: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    async def connect(self) -> None:
        self._session = aiohttp.ClientSession()
        for recorder in self.recorders:
            self._clients.append(await measuring_client(self.url, self.sources, recorder.on_readings))
        self._light = [
            asyncio.create_task(light_client(self._session, self.url, self.sources, self.light_frames))
            for _ in range(self.total - len(self.recorders))
        ]

    def take(self) -> tuple[float, Histogram]:
        """(readings per measuring client, latencies of all of them) since the previous call."""
        latencies = Histogram()
        received = 0
        for recorder in self.recorders:
            count, histogram = recorder.take()
            received += count
            latencies.merge(histogram)
        return received / max(len(self.recorders), 1), latencies

    @property
    def light_failures(self) -> int:
        return sum(1 for task in self._light if task.done() and not task.cancelled() and task.exception())

    async def close(self) -> None:
        for task in self._light:
            task.cancel()
        await asyncio.gather(*self._light, return_exceptions=True)
        for client in self._clients:
            await client.disconnect()
        if self._session is not None:
            await self._session.close()
