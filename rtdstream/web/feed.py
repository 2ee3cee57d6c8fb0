"""The web view's own reader of the output topics.

It uses no consumer group: it assigns itself every partition of rtd.readings,
rtd.windows, rtd.partials and rtd.dlq and starts at their end, so any number of
web processes each see all data (a group would split it between them), and a
web process never holds up the worker's group. Live data only: what happened
while it was away is in the database, which the API and subscribe acks read.

Live readings come by default from ``rtd.readings`` itself, checked with the
same pure :func:`~rtdstream.validation.validate_message` as the worker's
validation stage, not from that stage's output ``rtd.validated``: a reading
reaches clients one broker hop after the bridge sent it instead of two, and
without waiting for the stage's batch and its acknowledgements (README,
Latency). A rejected message is only skipped here; the worker dead-letters it,
and the count by reason comes from ``rtd.dlq``. The price is the validation's
CPU (about 1 µs a reading, against 0.06 µs to decode a validated batch) in
each web process: ``RTD_LIVE_INPUT=validated`` reads ``rtd.validated``
instead, for machines where the web view's CPU matters more than a hop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError

from rtdstream import metrics, topics
from rtdstream.backoff import Backoff
from rtdstream.config import WebSettings, is_valid_source_id
from rtdstream.kafka_security import client_options
from rtdstream.lag import topic_partitions
from rtdstream.models import IdleTick, ReadingBatch, decode_validated
from rtdstream.retry import exit_on_bug, is_transient
from rtdstream.validation import Reason, validate_message
from rtdstream.web.deadletters import DeadLetterRing
from rtdstream.web.live import LiveHub

log = logging.getLogger(__name__)

#: The topics besides the live readings' (``RTD_LIVE_INPUT``).
OUTPUT_TOPICS = (topics.WINDOWS, topics.PARTIALS, topics.DLQ)
_REASONS = frozenset(Reason)


class UndecodableRecord(ValueError):
    """A record on an output topic that rtdstream did not write (or wrote in another version)."""


class TopicFeed:
    """Reads the topics from their end and hands what they bring to the hub (live readings a fetch at a time)."""

    def __init__(self, settings: WebSettings, hub: LiveHub, dead_letters: DeadLetterRing | None = None) -> None:
        self.settings = settings
        self.hub = hub
        #: The newest dead letters, for the dashboard (bounded, see :mod:`rtdstream.web.deadletters`).
        self.dead_letters = dead_letters if dead_letters is not None else DeadLetterRing()
        self.ready = asyncio.Event()
        #: The live readings' topic, whose records are taken a fetch at a time (:meth:`_on_live`).
        self.live_topic = topics.READINGS if settings.live_input == "readings" else topics.VALIDATED
        self._live_batches = self._validate if settings.live_input == "readings" else self._decode_validated
        self._handlers: dict[str, Callable[[bytes, bytes | None], Awaitable[None]]] = {
            topics.WINDOWS: self._on_window,
            topics.PARTIALS: self._on_partial,
            topics.DLQ: self._on_dead_letter,
        }

    async def run(self) -> None:
        """Read until cancelled; reconnect (from the end again) after the broker goes away."""
        backoff = Backoff(initial=0.5, cap=15.0)
        while True:
            try:
                await self._consume(backoff)
            except (KafkaError, OSError, TimeoutError, topics.BrokerUnavailable) as exc:
                if not (is_transient(exc) or isinstance(exc, topics.BrokerUnavailable)):
                    exit_on_bug("web feed", exc)
                self.ready.clear()
                delay = backoff.next()
                log.warning("web feed lost the broker (%s); reconnecting in %.1fs", exc, delay)
                await asyncio.sleep(delay)

    async def _consume(self, backoff: Backoff) -> None:
        await topics.ensure_topics(self.settings)
        consumer = AIOKafkaConsumer(
            **client_options(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="latest",
            # A broker may hold a fetch until this wait is over even when data is
            # there (the embedded one does): it bounds the live view's latency.
            fetch_max_wait_ms=round(self.settings.fetch_max_wait * 1000),
        )
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, [self.live_topic, *self._handlers])
            consumer.assign(partitions)
            await consumer.seek_to_end(*partitions)
            for tp in partitions:
                await consumer.position(tp)  # resolve now: "ready" means nothing newer is missed
            self.ready.set()
            backoff.reset()
            log.info(
                "web feed reading %d partitions of %s from their end",
                len(partitions), ", ".join([self.live_topic, *self._handlers]),
            )
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=2000)
                for tp, records in batches.items():
                    if tp.topic == self.live_topic:
                        await self._on_live(records)
                        continue
                    handler = self._handlers[tp.topic]
                    for record in records:
                        try:
                            await handler(record.value, record.key)
                        except UndecodableRecord as exc:
                            _skipped(record, str(exc))
        finally:
            self.ready.clear()
            await consumer.stop()

    async def _on_live(self, records: list[ConsumerRecord]) -> None:
        """Hand a fetch's readings of one partition to the hub, each source's as one batch.

        Any producer may write one reading per message: handed over one at a
        time, every reading would cost the hub's work per batch (its rooms, rate
        limits and overview). The fetch's newest readings are not delayed by
        this; its first ones wait for the rest of the fetch (at most 2,000
        messages) to be validated.
        """
        merged: dict[str, ReadingBatch] = {}
        for record in records:
            for batch in self._live_batches(record):
                into = merged.get(batch.source)
                if into is None:
                    into = merged[batch.source] = ReadingBatch(batch.source)
                into.times.extend(batch.times)
                into.speeds.extend(batch.speeds)
        for batch in merged.values():
            await self.hub.on_readings(batch)

    def _validate(self, record: ConsumerRecord) -> Iterable[ReadingBatch]:
        """The valid readings of an ``rtd.readings`` message (the worker dead-letters the rest)."""
        now_ms = int(time.time() * 1000)
        return validate_message(
            record.value, record.key, now_ms=now_ms, max_bytes=self.settings.max_message_bytes
        ).batches.values()

    @staticmethod
    def _decode_validated(record: ConsumerRecord) -> Iterable[ReadingBatch]:
        """The readings of an ``rtd.validated`` message; none for the window agent's idle ticks."""
        try:
            item = decode_validated(record.value)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            _skipped(record, str(exc))
            return ()
        if isinstance(item, IdleTick) or not item.times:
            return ()
        return (item,)

    async def _on_window(self, value: bytes, key: bytes | None) -> None:
        aggregate = _json_object(value)
        _require_source(aggregate)
        if not isinstance(aggregate.get("window"), str) or not isinstance(aggregate.get("start"), int):
            raise UndecodableRecord("window aggregate without window name or start")
        await self.hub.on_window(aggregate)

    async def _on_partial(self, value: bytes, key: bytes | None) -> None:
        partial = _json_object(value)
        _require_source(partial)
        await self.hub.on_partial(partial)

    async def _on_dead_letter(self, value: bytes, key: bytes | None) -> None:
        record = _json_object(value)
        reason = record.get("reason")
        metrics.WEB_FEED_REJECTED.labels(reason if reason in _REASONS else "other").inc()
        self.dead_letters.add(record, int(time.time() * 1000))


def _skipped(record: ConsumerRecord, why: str) -> None:
    metrics.WEB_FEED_UNDECODABLE.labels(record.topic).inc()
    log.debug("skipped %s[%d]@%d: %s", record.topic, record.partition, record.offset, why)


def _json_object(value: bytes | None) -> dict[str, Any]:
    try:
        obj = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise UndecodableRecord(str(exc)) from None
    if not isinstance(obj, dict):
        raise UndecodableRecord("not a JSON object")
    return obj


def _require_source(obj: dict[str, Any]) -> None:
    source = obj.get("source")
    if not isinstance(source, str) or not is_valid_source_id(source):
        raise UndecodableRecord(f"bad source {source!r}")
