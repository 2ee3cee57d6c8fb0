"""``GET /stream``: an endless chunked stream of readings, one JSON object per line.

At the default rate (one record per second, one source) the bytes are those of
the original ``rtd-sim``: one HTTP chunk a second holding
``{"time":"<epoch ms>","speed":"<0..50>"}`` and ``\\n``, so the original Node
backend can read it unchanged. Faster rates write every record that fell due
since the last tick in one chunk (at most 100 ticks a second), which the
original backend cannot parse but rtdstream's bridge can.

Resumable streams (an addition; the original ignores query parameters): a
client that passes ``?session=<id>`` gets a stream whose sensors and recent
records outlive the connection. Reconnecting with the same session and
``since={"<source>": <last time it kept>, ...}`` (``""`` for the records
without a source field) first replays the records it had not kept, then goes
on. This is how the bridge loses nothing when it is killed mid-stream.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque

import orjson
from aiohttp import web

log = logging.getLogger(__name__)

#: Fastest tick; above this rate a chunk carries several records.
MAX_TICKS_PER_SECOND = 100.0
SPEED_MIN, SPEED_MAX = 0, 50
#: How much a session remembers for a replay: this many seconds of records...
REPLAY_SECONDS = 10.0
#: ... and never more than this many.
REPLAY_MAX_RECORDS = 1_000_000
#: A session nobody reconnects to is forgotten after this long.
SESSION_TTL = 600.0

STREAM_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
}


#: How a sensor's speeds are drawn: ``uniform`` as the original (a fresh integer in 0-50 for every
#: record, what its frontend's gauge is made for), ``walk`` a random walk of steps of at most 3
#: (smoother charts, and windows whose aggregates move slowly).
SPEED_MODELS = ("uniform", "walk")


class Sensor:
    """One simulated source: integer speeds (see :data:`SPEED_MODELS`), strictly increasing times."""

    def __init__(self, name: str | None, rng: random.Random, speeds: str = "uniform") -> None:
        self.name = name
        self._rng = rng
        self._walk = speeds == "walk"
        self._speed = rng.randint(SPEED_MIN, SPEED_MAX)
        self.last_time = 0

    @property
    def key(self) -> str:
        """The sensor's key in a resume request: its name, or ``""`` when records carry none."""
        return self.name or ""

    def next_record(self, now_ms: int) -> bytes:
        """The next record as one JSON line, in the original field order."""
        self.last_time = max(now_ms, self.last_time + 1)
        if self._walk:
            self._speed = min(SPEED_MAX, max(SPEED_MIN, self._speed + self._rng.randint(-3, 3)))
        else:
            self._speed = self._rng.randint(SPEED_MIN, SPEED_MAX)
        record = {"time": str(self.last_time), "speed": str(self._speed)}
        if self.name is not None:
            record["source"] = self.name
        return orjson.dumps(record) + b"\n"


class Session:
    """The sensors of one stream and, when resumable, a bounded log of what it wrote."""

    def __init__(self, sensors: list[Sensor], log_size: int) -> None:
        self.sensors = sensors
        self.log: deque[tuple[str, int, bytes]] = deque(maxlen=log_size)
        self.next_sensor = 0
        self.connection: _Connection | None = None
        self.idle_since = time.monotonic()

    def generate(self, count: int, now_ms: int) -> bytes:
        """``count`` new records, round-robin over the sensors, logged for a replay."""
        lines = []
        for _ in range(count):
            sensor = self.sensors[self.next_sensor]
            self.next_sensor = (self.next_sensor + 1) % len(self.sensors)
            line = sensor.next_record(now_ms)
            lines.append(line)
            if self.log.maxlen:
                self.log.append((sensor.key, sensor.last_time, line))
        return b"".join(lines)

    def replay(self, since: dict[str, int]) -> list[bytes]:
        """Logged records newer than what the client kept, per sensor, in their original order."""
        return [line for key, t, line in self.log if t > since.get(key, -1)]


class Simulator:
    """The simulator's web application; each connection (or session) has its own sensors and timer."""

    def __init__(
        self, rate: float = 1.0, sources: int = 1, seed: int | None = None, speeds: str = "uniform"
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if sources < 1:
            raise ValueError("sources must be at least 1")
        if speeds not in SPEED_MODELS:
            raise ValueError(f"speeds must be one of {', '.join(SPEED_MODELS)}")
        self.rate = rate
        self.sources = sources
        self.speeds = speeds
        self._rng = random.Random(seed)
        self._connections: set[_Connection] = set()
        self._sessions: dict[str, Session] = {}
        self.records_sent = 0

    @property
    def active_streams(self) -> int:
        """Connections whose timer is running; drops to zero when clients leave."""
        return len(self._connections)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/stream", self.stream)
        app.on_shutdown.append(self._stop_streams)
        return app

    def _new_session(self, resumable: bool) -> Session:
        seeds = [self._rng.random() for _ in range(self.sources)]
        if self.sources == 1:
            sensors = [Sensor(None, random.Random(seeds[0]), self.speeds)]
        else:
            sensors = [
                Sensor(f"sensor-{i}", random.Random(seed), self.speeds) for i, seed in enumerate(seeds, start=1)
            ]
        log_size = min(REPLAY_MAX_RECORDS, max(1000, int(self.rate * REPLAY_SECONDS))) if resumable else 0
        return Session(sensors, log_size)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        session_id = request.query.get("session")
        try:
            since = _parse_since(request.query.get("since"))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"since: {exc}\n") from None
        session = self._session_for(session_id)
        response = web.StreamResponse(headers=STREAM_HEADERS)
        response.enable_chunked_encoding()
        await response.prepare(request)
        connection = _Connection()
        if session.connection is not None:
            session.connection.stopped.set()  # a reconnecting client takes its session over
        session.connection = connection
        self._connections.add(connection)
        peer = request.remote
        log.info("stream opened for %s%s (%d active)", peer, f" session {session_id}" if session_id else "",
                 self.active_streams)
        try:
            replayed = session.replay(since) if session_id is not None else []
            if replayed:
                await response.write(b"".join(replayed))
                log.info("session %s resumed: replayed %d records", session_id, len(replayed))
            await self._write_records(response, session, connection)
        except ConnectionError:
            pass  # the client went away; its timer stops with this loop
        finally:
            self._connections.discard(connection)
            if session.connection is connection:
                session.connection = None
                session.idle_since = time.monotonic()
            log.info("stream closed for %s after %d records (%d active)", peer, connection.sent, self.active_streams)
        return response

    def _session_for(self, session_id: str | None) -> Session:
        if session_id is None:
            return self._new_session(resumable=False)
        now = time.monotonic()
        for stale in [k for k, s in self._sessions.items() if s.connection is None and now - s.idle_since > SESSION_TTL]:
            del self._sessions[stale]
        session = self._sessions.get(session_id)
        if session is None:
            session = self._sessions[session_id] = self._new_session(resumable=True)
        return session

    async def _write_records(self, response: web.StreamResponse, session: Session, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        tick = max(1.0 / self.rate, 1.0 / MAX_TICKS_PER_SECOND)
        start = loop.time()
        while True:
            sleep_for = start + (connection.sent + 1) / self.rate - loop.time()
            if sleep_for > 0:
                try:
                    await asyncio.wait_for(connection.stopped.wait(), timeout=max(sleep_for, tick))
                except asyncio.TimeoutError:
                    pass
            if connection.stopped.is_set():
                break
            due = int((loop.time() - start) * self.rate) - connection.sent
            if due <= 0:
                continue
            chunk = session.generate(due, int(time.time() * 1000))
            connection.sent += due  # emitted, even if the write below finds the client gone
            self.records_sent += due
            await response.write(chunk)
        await response.write_eof()

    async def _stop_streams(self, _app: web.Application) -> None:
        for connection in self._connections:
            connection.stopped.set()


class _Connection:
    """One connection's stop signal and count of new records written to it."""

    __slots__ = ("stopped", "sent")

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.sent = 0


def _parse_since(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    try:
        since = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("must be a JSON object of source -> time") from None
    if not isinstance(since, dict) or not all(isinstance(v, int) for v in since.values()):
        raise ValueError("must be a JSON object of source -> time")
    return since
