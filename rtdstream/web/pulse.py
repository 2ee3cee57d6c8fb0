"""The overview's heartbeat: one task per web process that tells every watching client, once a second,
what the fleet and the pipeline are doing.

Computed once and emitted to one room (:data:`OVERVIEW_ROOM`), never per
client: the cost is the same for one dashboard or a thousand (the Socket.IO
manager encodes each event once). The health part reuses what the web view
already knows: the broker, database and lag checks shared with ``/healthz``
(at most one a second, see :meth:`~rtdstream.web.api.HttpApi.dependency_checks`), the
readings the feed counted, the dead letters it kept, and the number of
connected clients; the stored rate is the rows stored since the last second,
counted by primary key (:meth:`~rtdstream.web.history.StoredHistory.stored_total`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import socketio

from rtdstream.web.deadletters import DeadLetterRing
from rtdstream.web.fleet import TICK, FleetSummary

log = logging.getLogger(__name__)

#: Clients that watch the overview: they get ``fleet``, ``health`` and ``deadletters``.
OVERVIEW_ROOM = "overview"
#: Longest wait for the stored-readings figure before the snapshot goes without it.
STORED_TIMEOUT = 0.8

Checks = Callable[[], Awaitable[tuple[dict[str, Any], dict[str, Any]]]]


class RateMeter:
    """Readings/s from a growing total: the difference between two samples over their time apart."""

    def __init__(self) -> None:
        self._last: tuple[float, float] | None = None

    def update(self, total: float | None, now: float) -> float | None:
        """The rate since the previous sample (None for the first, or when ``total`` is unknown)."""
        if total is None:
            return None
        previous, self._last = self._last, (total, now)
        if previous is None or now <= previous[1]:
            return None
        return max(0.0, (total - previous[0]) / (now - previous[1]))


@dataclass(frozen=True, slots=True)
class PipelineFigures:
    """What one health snapshot is made of, gathered in one place so the snapshot is a pure function."""

    database: dict[str, Any]
    broker: dict[str, Any]
    feed_ok: bool
    rate_in: float | None
    rate_stored: float | None
    rejected: dict[str, int]
    rejected_rate: float | None
    clients: int
    sources: int


def health_snapshot(figures: PipelineFigures, now_ms: int) -> dict[str, Any]:
    """The ``health`` event: one JSON-ready dict, the same for every client."""
    lag = figures.broker.get("lag")
    return {
        "now": now_ms,
        "status": "ok" if figures.database.get("ok") and figures.broker.get("ok") and figures.feed_ok else "degraded",
        "rate_in": _round(figures.rate_in),
        "rate_stored": _round(figures.rate_stored),
        "rejected": dict(sorted(figures.rejected.items(), key=lambda item: (-item[1], item[0]))),
        "rejected_total": sum(figures.rejected.values()),
        "rejected_rate": _round(figures.rejected_rate),
        "lag": lag.get("total") if isinstance(lag, dict) else None,
        "lag_topics": lag.get("topics") if isinstance(lag, dict) else None,
        "broker": _check(figures.broker, "lag_error"),
        "database": _check(figures.database),
        "feed": {"ok": figures.feed_ok},
        "clients": figures.clients,
        "sources": figures.sources,
    }


def _check(check: dict[str, Any], *also: str) -> dict[str, Any]:
    kept = {"ok": bool(check.get("ok"))}
    for key in ("error", *also):
        if check.get(key):
            kept[key] = str(check[key])[:200]
    return kept


def _round(rate: float | None) -> float | None:
    return None if rate is None else round(rate, 1)


class Pulse:
    """The two periodic tasks of the overview: ``fleet`` (+ ``deadletters``) and ``health``.

    Separate loops, so a broker check that takes its full timeout delays the
    health panel, never the tiles.
    """

    def __init__(
        self,
        sio: socketio.AsyncServer,
        fleet: FleetSummary,
        dead_letters: DeadLetterRing,
        *,
        checks: Checks,
        stored_total: Callable[[], Awaitable[int | None]],
        feed_ready: Callable[[], bool],
        clients: Callable[[], int],
    ) -> None:
        self.sio = sio
        self.fleet = fleet
        self.dead_letters = dead_letters
        self.checks = checks
        self.stored_total = stored_total
        self.feed_ready = feed_ready
        self.clients = clients
        self.latest_health: dict[str, Any] | None = None
        self._in = RateMeter()
        self._stored = RateMeter()
        self._rejected = RateMeter()

    async def run_fleet(self) -> None:
        """Every :data:`TICK`: the changed sources to the watchers, and the dead letters that are new."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            event = self.fleet.tick(int(time.time() * 1000), now - last)
            last = now
            if event["source"]:
                await self.sio.emit("fleet", event, room=OVERVIEW_ROOM)
            new = self.dead_letters.take_new()
            if new:
                await self.sio.emit(
                    "deadletters", {"latest": new, "counts": dict(self.dead_letters.counts)}, room=OVERVIEW_ROOM
                )

    async def run_health(self) -> None:
        """About every :data:`TICK` while someone watches: the health snapshot to the watchers.

        Nobody watching, nothing is checked: a web view that no dashboard
        looks at costs the broker no more than its ``/healthz`` probes.
        """
        while True:
            started = time.monotonic()
            try:
                if self.sio.manager.has_participants(OVERVIEW_ROOM):
                    self.latest_health = await self.snapshot()
                    await self.sio.emit("health", self.latest_health, room=OVERVIEW_ROOM)
            except Exception:  # noqa: BLE001  (a bug here must not end the overview: logged, tried again)
                log.exception("health snapshot failed")
            await asyncio.sleep(max(0.1, TICK - (time.monotonic() - started)))

    async def snapshot(self) -> dict[str, Any]:
        (database, broker), stored = await asyncio.gather(self.checks(), self._stored_total())
        now = time.monotonic()
        rejected = dict(self.dead_letters.counts)
        figures = PipelineFigures(
            database=database,
            broker=broker,
            feed_ok=self.feed_ready(),
            rate_in=self._in.update(self.fleet.readings_total, now),
            rate_stored=self._stored.update(stored, now),
            rejected=rejected,
            rejected_rate=self._rejected.update(sum(rejected.values()), now),
            clients=self.clients(),
            sources=len(self.fleet),
        )
        return health_snapshot(figures, int(time.time() * 1000))

    async def _stored_total(self) -> int | None:
        try:
            async with asyncio.timeout(STORED_TIMEOUT):
                return await self.stored_total()
        except TimeoutError:
            return None
