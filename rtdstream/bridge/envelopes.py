"""Batch readings into envelopes (one source per message) and produce them to Kafka.

One Kafka message per reading caps a Faust worker at a few thousand readings a
second; an envelope of a hundred readings moves that cap past a hundred
thousand (README, Bridge). An envelope is flushed when it holds
``max_batch`` readings or ``max_bytes`` of JSON (below the broker's message
limit), or when it falls due.

**Linger only under load.** A source's envelope falls due at once when the
source's previous envelope left at least ``linger`` ago, else ``linger`` after
that one: a leading-edge throttle, as a TCP stack corks only while data is
outstanding. A sensor at one reading a second pays no wait at all (a fixed
linger made every reading of the original's rate wait its full 50 ms), while
a busy source still sends at most one envelope per ``linger``, so the message
rate the worker pays for per message stays bounded by sources / linger
whatever the reading rate.

Delivery is bounded: at most ``max_in_flight`` messages wait for the broker's
acknowledgement. When the broker is away, :meth:`EnvelopeProducer.add` blocks,
the bridge stops reading its HTTP streams, and TCP pushes back on the
simulator, so memory stays flat and nothing read is dropped. A message counts
as delivered only once the broker acknowledged it.

A broker that refuses a message for good is never answered by dropping it:
an envelope over the topic's ``max.message.bytes`` is split in halves until
the halves fit (and later envelopes are built that small), and any other
refusal (no authorisation, a topic that cannot take writes) stops the bridge
with :class:`BrokerRefused`, so a restart resumes from the last reading the
broker acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

from rtdstream.backoff import Backoff
from rtdstream.bridge.stats import BridgeStats
from rtdstream.errors import UserError
from rtdstream.retry import is_transient

log = logging.getLogger(__name__)

#: A wait for the broker's acknowledgements this long is an outage, not load: it is logged.
LONG_PAUSE = 5.0


class BrokerRefused(UserError):
    """The broker refused a message for good: the bridge stops rather than drop what it read."""


def build_envelope(source: str, raws: list[bytes]) -> bytes:
    """``{"source": s, "readings": [...]}`` from JSON texts already checked by the framer."""
    return b'{"source":' + orjson.dumps(source) + b',"readings":[' + b",".join(raws) + b"]}"


class _Pending:
    """Readings of one source waiting for their envelope to fill."""

    __slots__ = ("raws", "size", "due", "max_time")

    def __init__(self, due: float) -> None:
        self.raws: list[bytes] = []
        self.size = 0
        #: Loop time at which the envelope ships, full or not.
        self.due = due
        self.max_time = -1


class EnvelopeProducer:
    """Per-source batching in front of one aiokafka producer, with bounded in-flight messages."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        max_batch: int,
        linger: float,
        stats: BridgeStats,
        max_bytes: int = 512 * 1024,
        max_in_flight: int = 256,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._max_batch = max_batch
        self._linger = linger
        self._max_bytes = max_bytes
        self._stats = stats
        self._pending: dict[str, _Pending] = {}
        #: Loop time each source's last envelope shipped (only those within the last ``linger`` matter).
        self._shipped_at: dict[str, float] = {}
        #: Set while an envelope is pending: the linger task sleeps on it when there is none.
        self._has_pending = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._in_flight: deque[asyncio.Task[None]] = deque()
        #: Hands messages to the client one at a time, in the order their deliveries started: a send()
        #: that waits for room in the client's buffer must not be overtaken by a later one (it was, and
        #: a source's envelopes reached the topic out of order under load).
        self._send_order = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        #: Per source, the newest reading time the broker has acknowledged (resume positions).
        self.delivered_times: dict[str, int] = {}
        #: Loop time since which a send has waited for an in-flight slot with no acknowledgement since.
        self._paused_since: float | None = None
        #: The broker's final refusal of a message, raised to every later caller.
        self._refused: BrokerRefused | None = None

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_lingering(), name="envelope-linger")

    async def add(self, source: str, raw: bytes, time: int | None = None) -> None:
        """Queue one reading (``time`` feeds the resume positions); waits when the broker is behind."""
        if self.queue(source, raw, time):
            await self.ship(source)

    def queue(self, source: str, raw: bytes, time: int | None = None) -> bool:
        """:meth:`add` without its wait: True when the source's envelope must ship now, by :meth:`ship`.

        The bridge queues a whole chunk's readings this way and awaits only for
        the few that fill or release an envelope.
        """
        self._raise_if_refused()
        if self._flusher is not None and self._flusher.done():
            self._flusher.result()  # the linger task died of a bug: crash loudly rather than stop shipping
        pending = self._pending.get(source)
        due_now = False
        if pending is None:
            now = asyncio.get_running_loop().time()
            pending = self._pending[source] = _Pending(self._due_time(source, now))
            due_now = pending.due <= now
            if not due_now:
                self._has_pending.set()
        pending.raws.append(raw)
        pending.size += len(raw) + 1
        if time is not None and time > pending.max_time:
            pending.max_time = time
        return due_now or len(pending.raws) >= self._max_batch or pending.size >= self._max_bytes

    def _due_time(self, source: str, now: float) -> float:
        """Now if the source shipped nothing in the last ``linger``, else ``linger`` after its last envelope."""
        shipped_at = self._shipped_at.get(source)
        return now if shipped_at is None else max(now, shipped_at + self._linger)

    def waiting(self) -> dict[str, int]:
        """Readings per source that wait for their envelope to fall due or fill."""
        return {source: len(pending.raws) for source, pending in self._pending.items()}

    async def send_raw(self, key: str | None, value: bytes, topic: str) -> None:
        """Produce one message outside the batching (dead letters)."""
        self._raise_if_refused()
        await self._acquire_slot()
        self._start_delivery(self._deliver(key, value, topic))

    async def flush(self) -> None:
        """Send every pending envelope and wait until the broker acknowledged all messages."""
        self._raise_if_refused()
        for source in list(self._pending):
            await self.ship(source)
        while self._in_flight:
            await asyncio.shield(self._in_flight[0])
        self._raise_if_refused()

    def _raise_if_refused(self) -> None:
        if self._refused is not None:
            raise self._refused

    async def stop(self) -> None:
        """Flush and stop the linger timer; the caller stops the Kafka producer afterwards."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.flush()

    def abandon(self) -> int:
        """Cancel the deliveries in flight and drop what waits to ship; how many messages that was.

        For a bridge that stops while the broker is away: none of them moved its
        source's resume position (:attr:`delivered_times`).
        """
        for task in self._in_flight:
            task.cancel()
        left, self._pending = len(self._in_flight) + len(self._pending), {}
        return left

    async def _flush_lingering(self) -> None:
        """Ship each envelope when it falls due, waking when the first one does.

        A fixed tick of ``linger`` would ship an envelope started just after a
        tick only at the tick after next: up to twice the linger (measured: 35 ms
        at the median with 20 ms).
        """
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                self._has_pending.clear()
                await self._has_pending.wait()
                continue  # what woke us may have shipped at once since
            first = min(pending.due for pending in self._pending.values())
            await asyncio.sleep(max(0.0, first - loop.time()))
            now = loop.time()
            for source in [s for s, p in self._pending.items() if p.due <= now]:
                await self.ship(source)

    async def ship(self, source: str) -> None:
        """Start delivering a source's pending envelope once an in-flight slot is free.

        The envelope leaves ``_pending`` only after the slot is ours, so a
        cancellation while waiting (shutdown) leaves it pending for the final
        flush instead of losing it.
        """
        await self._acquire_slot()
        batch = self._pending.pop(source, None)
        if batch is None:  # shipped by another path while we waited
            self._slots.release()
            return
        self._note_shipped(source)
        self._start_delivery(self._deliver_envelope(source, batch.raws, batch.max_time))

    def _note_shipped(self, source: str) -> None:
        """Remember when ``source`` shipped; forget sources quiet for longer than ``linger`` (ids are unbounded)."""
        now = asyncio.get_running_loop().time()
        self._shipped_at[source] = now
        if len(self._shipped_at) > 2 * len(self._pending) + 1024:
            self._shipped_at = {s: t for s, t in self._shipped_at.items() if now - t < self._linger}

    def paused_for(self) -> float | None:
        """Seconds the bridge has waited for the broker to acknowledge anything; None when it is not waiting."""
        if self._paused_since is None:
            return None
        return asyncio.get_running_loop().time() - self._paused_since

    async def _acquire_slot(self) -> None:
        if self._slots.locked():
            self._stats.backpressure_waits += 1
            if self._paused_since is None:
                self._paused_since = asyncio.get_running_loop().time()
        await self._slots.acquire()

    def _start_delivery(self, delivery: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._note_refusal(delivery))
        self._in_flight.append(task)
        task.add_done_callback(self._on_delivered)

    async def _note_refusal(self, delivery: Coroutine[Any, Any, None]) -> None:
        """Keep a final refusal for the callers (a task's exception would reach nobody)."""
        try:
            await delivery
        except MessageSizeTooLargeError as exc:  # a dead letter, or a single reading: nothing to split
            self._refuse(BrokerRefused(f"a message was refused as too large ({exc!r}): raise max.message.bytes"))
        except BrokerRefused as exc:
            self._refuse(exc)

    def _refuse(self, refusal: BrokerRefused) -> None:
        self._stats.delivery_failures += 1
        if self._refused is None:
            log.error("%s", refusal)
            self._refused = refusal

    def _on_delivered(self, task: asyncio.Task[None]) -> None:
        self._slots.release()
        self._in_flight.remove(task)
        paused_for, self._paused_since = self.paused_for(), None
        if paused_for is not None and paused_for >= LONG_PAUSE and not task.cancelled():  # cancelled: abandon()
            log.info("the broker acknowledges again: reading resumed after %.1fs (%s)", paused_for, self._stats.summary())

    async def _deliver_envelope(self, source: str, raws: list[bytes], max_time: int) -> None:
        """Deliver one source's readings as one envelope, or in halves if the topic finds it too large.

        The halves go one after the other, and only the last moves the source's resume position
        (what a reconnect asks the source for), so a reconnect between them asks for the second
        half again rather than skip it. Later envelopes are built no larger
        than the half, so a topic with a small ``max.message.bytes`` costs one refusal, not one
        per envelope.
        """
        value = build_envelope(source, raws)
        try:
            await self._deliver(source, value, self._topic, len(raws), max_time)
        except MessageSizeTooLargeError:
            if len(raws) == 1:
                raise
            half = len(raws) // 2
            self._max_bytes = min(self._max_bytes, len(value) // 2)
            self._stats.envelopes_split += 1
            log.warning(
                "%s refused an envelope of %d bytes as too large; sending it in halves, and envelopes of "
                "at most %d bytes from now on (raise the topic's max.message.bytes to batch more)",
                self._topic, len(value), self._max_bytes,
            )
            await self._deliver_envelope(source, raws[:half], -1)
            await self._deliver_envelope(source, raws[half:], max_time)

    async def _deliver(
        self, key: str | None, value: bytes, topic: str, readings: int = 0, max_time: int = -1
    ) -> None:
        """Produce until the broker acknowledges; re-send only what was never sent.

        A message too large for the topic raises :class:`MessageSizeTooLargeError`, for an envelope
        to be split; any other final refusal raises :class:`BrokerRefused`.
        """
        backoff = Backoff(initial=0.5, cap=10.0)
        key_bytes = key.encode() if key is not None else None
        while True:
            try:
                async with self._send_order:
                    delivery = await self._producer.send(topic, value, key=key_bytes)
                await delivery
            except MessageSizeTooLargeError:
                raise
            except KafkaError as exc:
                # Retriable errors, and a message that expired in the client's buffer before it was
                # sent (sending it again cannot duplicate it), are outages: rtdstream.retry.
                if not is_transient(exc):
                    raise BrokerRefused(
                        f"the broker refused a message for {topic} ({exc!r}); the bridge stops so that "
                        f"nothing it read is dropped, and resumes from the last acknowledged reading when restarted"
                    ) from None
                delay = backoff.next()
                self._stats.delivery_retries += 1
                log.warning("producing to %s failed (%r); retrying in %.1fs", topic, exc, delay)
                await asyncio.sleep(delay)
            else:
                self._stats.on_delivered(topic, readings)
                if key is not None and max_time > self.delivered_times.get(key, -1):
                    self.delivered_times[key] = max_time
                return
