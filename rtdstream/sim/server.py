"""``GET /stream``: an endless chunked stream of readings, one JSON object per line.

At the default rate (one record per second, one source) the bytes are those of
the original ``rtd-sim``: one HTTP chunk a second holding
``{"time":"<epoch ms>","speed":"<0..50>"}`` and ``\\n``, so the original Node
backend can read it unchanged. Faster rates write every record that fell due
since the last tick in one chunk (at most 100 ticks a second), which the
original backend cannot parse but rtdstream's bridge can.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

#: Fastest tick; above this rate a chunk carries several records.
MAX_TICKS_PER_SECOND = 100.0
SPEED_MIN, SPEED_MAX = 0, 50

STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
}


class Sensor:
    """One simulated source: a random walk of integer speeds, strictly increasing times."""

    def __init__(self, name: str | None, rng: random.Random) -> None:
        self.name = name
        self._rng = rng
        self._speed = rng.randint(SPEED_MIN, SPEED_MAX)
        self._last_time = 0

    def next_record(self, now_ms: int) -> bytes:
        """The next record as one JSON line, in the original field order."""
        self._last_time = max(now_ms, self._last_time + 1)
        self._speed = min(SPEED_MAX, max(SPEED_MIN, self._speed + self._rng.randint(-3, 3)))
        record = {"time": str(self._last_time), "speed": str(self._speed)}
        if self.name is not None:
            record["source"] = self.name
        return orjson.dumps(record) + b"\n"


class Simulator:
    """The simulator's web application; each connection gets its own sensors and timer."""

    def __init__(self, rate: float = 1.0, sources: int = 1, seed: int | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if sources < 1:
            raise ValueError("sources must be at least 1")
        self.rate = rate
        self.sources = sources
        self._rng = random.Random(seed)
        self._streams: set[_Stream] = set()
        self.records_sent = 0

    @property
    def active_streams(self) -> int:
        """Connections whose timer is running; drops to zero when clients leave."""
        return len(self._streams)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stream", self.stream)
        app.on_shutdown.append(self._stop_streams)
        return app

    def _new_sensors(self) -> list[Sensor]:
        if self.sources == 1:
            return [Sensor(None, random.Random(self._rng.random()))]
        return [Sensor(f"sensor-{i}", random.Random(self._rng.random())) for i in range(1, self.sources + 1)]

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers=STREAM_HEADERS)
        response.enable_chunked_encoding()
        await response.prepare(request)
        stream = _Stream()
        self._streams.add(stream)
        peer = request.remote
        log.info("stream opened for %s (%d active)", peer, self.active_streams)
        try:
            await self._write_records(response, self._new_sensors(), stream)
        except ConnectionError:
            pass  # the client went away; its timer stops with this loop
        finally:
            self._streams.discard(stream)
            log.info("stream closed for %s after %d records (%d active)", peer, stream.sent, self.active_streams)
        return response

    async def _write_records(self, response: web.StreamResponse, sensors: list[Sensor], stream: _Stream) -> None:
        loop = asyncio.get_running_loop()
        tick = max(1.0 / self.rate, 1.0 / MAX_TICKS_PER_SECOND)
        start = loop.time()
        while not stream.stopped.is_set():
            sleep_for = start + (stream.sent + 1) / self.rate - loop.time()
            if sleep_for > 0:
                try:
                    await asyncio.wait_for(stream.stopped.wait(), timeout=max(sleep_for, tick))
                    break
                except asyncio.TimeoutError:
                    pass
            due = int((loop.time() - start) * self.rate) - stream.sent
            if due <= 0:
                continue
            now_ms = int(time.time() * 1000)
            chunk = b"".join(sensors[(stream.sent + i) % len(sensors)].next_record(now_ms) for i in range(due))
            await response.write(chunk)
            stream.sent += due
            self.records_sent += due
        await response.write_eof()

    async def _stop_streams(self, _app: web.Application) -> None:
        for stream in self._streams:
            stream.stopped.set()


class _Stream:
    """One connection's stop signal and count of records written."""

    __slots__ = ("stopped", "sent")

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.sent = 0
