"""From the feed to Socket.IO events: rooms per source, rate limits, batches.

Events (see README, "Web view"):

- ``newData``: the original backend's payload ``{"time": "<ms>", "speed": "<n>"}``
  of one source (``RTD_NEWDATA_SOURCE``, else the smallest known source id) to
  every client that did not opt out: the original had one sensor, and its
  frontend's single gauge would jump between sources. ``reading``
  ``{source, time, speed}`` goes to the subscribers of each source. Both at most ``RTD_LIVE_MAX_RATE`` per
  source per second: a faster source is coalesced to its newest value. At the
  original simulator's one reading a second every reading goes out, at once.
- ``readings``: every reading, in batches ``{source, time: [...], speed: [...]}``
  to the subscribers of the source: at once when the source's previous batch
  left at least ``RTD_LIVE_BATCH_INTERVAL`` ago, else at the next tick. A quiet
  source's readings wait for nothing; a busy one's are batched, at most about
  two batches per interval.
- ``window``: each final aggregate from rtd.windows, to the subscribers.
- ``partial``: open-window values ``{source, windows}``, rate-limited like ``reading``.
- ``sources``: ``[{source, time, speed}]``, all known sources to a client that
  connects, then only the new ones to everyone as they appear.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import socketio

from rtdstream import metrics
from rtdstream.models import ReadingBatch, Speed, legacy_payload
from rtdstream.web.backpressure import BackpressureManager
from rtdstream.web.fleet import FleetSummary
from rtdstream.web.sources import SourceState, SourceTable

#: Clients in this room get ``newData``: all of them, unless they connect with ``auth: {newData: false}``.
NEWDATA_ROOM = "legacy:newData"
_LATENCY_LIVE = metrics.WEB_LATENCY.labels("live")
_LATENCY_BATCH = metrics.WEB_LATENCY.labels("batch")
_COALESCED_READINGS = metrics.WEB_DROPPED.labels("reading", "coalesced")
_COALESCED_PARTIALS = metrics.WEB_DROPPED.labels("partial", "coalesced")


def source_room(source: str) -> str:
    """The room of a source's subscribers (prefixed: a source id must not collide with a client sid)."""
    return f"source:{source}"


class LiveHub:
    """Pushes what the feed brings to the clients that want it."""

    def __init__(
        self,
        sio: socketio.AsyncServer,
        sources: SourceTable,
        *,
        batch_interval: float,
        newdata_source: str | None,
        fleet: FleetSummary | None = None,
    ) -> None:
        self.sio = sio
        self.sources = sources
        self.batch_interval = batch_interval
        #: Set: newData carries this source; None: the smallest source id known (:attr:`SourceTable.first_id`).
        self.newdata_source = newdata_source
        self._manager: BackpressureManager = sio.manager
        #: The overview's per-source summary (see :mod:`rtdstream.web.fleet`).
        self.fleet = fleet if fleet is not None else FleetSummary()
        #: Sources with something waiting for the next tick.
        self._waiting: set[str] = set()
        #: Sources seen for the first time since the last tick.
        self._new_sources: set[str] = set()

    async def on_readings(self, batch: ReadingBatch) -> None:
        metrics.WEB_FEED_READINGS.inc(len(batch))
        if self.sources.get(batch.source) is None:
            self._new_sources.add(batch.source)
        state = self.sources.add_batch(batch)
        self.fleet.add(batch.source, batch.times, batch.speeds)
        now = time.monotonic()
        if self._manager.has_participants(source_room(batch.source)):
            state.batch_times.extend(batch.times)
            state.batch_speeds.extend(batch.speeds)
            if now - state.batch_sent_at >= self.batch_interval:
                await self._send_batch(state, now)
            else:
                self._waiting.add(batch.source)
        due, replaced = state.live.offer((batch.times[-1], batch.speeds[-1]), now)
        coalesced = len(batch) - 1 + replaced
        if coalesced:
            _COALESCED_READINGS.inc(coalesced)
        if due is not None:
            await self._push_reading(state.source, *due)
        else:
            self._waiting.add(batch.source)

    async def on_window(self, aggregate: dict[str, Any]) -> None:
        source = aggregate["source"]
        self.sources.touch(source).add_window(aggregate)
        await self.sio.emit("window", aggregate, room=source_room(source))

    async def on_partial(self, partial: dict[str, Any]) -> None:
        state = self.sources.touch(partial["source"])
        due, replaced = state.partials.offer(partial, time.monotonic())
        if replaced:
            _COALESCED_PARTIALS.inc()
        if due is not None:
            await self.sio.emit("partial", due, room=source_room(state.source))
        else:
            self._waiting.add(state.source)

    async def run(self) -> None:
        """Every batch interval: send the batches and the coalesced values whose slot has come."""
        while True:
            await asyncio.sleep(self.batch_interval)
            await self.flush()

    async def flush(self) -> None:
        if self._new_sources:
            new, self._new_sources = self._new_sources, set()
            await self.sio.emit("sources", self.sources.latest(new))
        now = time.monotonic()
        waiting, self._waiting = self._waiting, set()
        for source in waiting:
            state = self.sources.get(source)
            if state is None:
                continue  # forgotten (table full) since it was queued
            await self._flush_source(state, now)
            if state.has_pending:
                self._waiting.add(source)

    async def _flush_source(self, state: SourceState, now: float) -> None:
        if state.batch_times:
            await self._send_batch(state, now)
        reading = state.live.take_due(now)
        if reading is not None:
            await self._push_reading(state.source, *reading)
        partial = state.partials.take_due(now)
        if partial is not None:
            await self.sio.emit("partial", partial, room=source_room(state.source))

    async def _send_batch(self, state: SourceState, now: float) -> None:
        times, speeds = state.take_batch()
        state.batch_sent_at = now
        await self.sio.emit(
            "readings", {"source": state.source, "time": times, "speed": speeds}, room=source_room(state.source)
        )
        # Once per batch, for its oldest reading: per reading it took a sixth of the web view's CPU at 50,000/s.
        _LATENCY_BATCH.observe(time.time() - min(times) / 1000)

    async def _push_reading(self, source: str, reading_time: int, speed: Speed) -> None:
        await self.sio.emit("reading", {"source": source, "time": reading_time, "speed": speed}, room=source_room(source))
        if source == (self.newdata_source or self.sources.first_id):
            await self.sio.emit("newData", legacy_payload(reading_time, speed), room=NEWDATA_ROOM)
        _LATENCY_LIVE.observe(time.time() - reading_time / 1000)
