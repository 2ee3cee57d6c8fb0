"""``rtdstream bridge``: every URL of RTD_SOURCES into ``rtd.readings``, bad lines into ``rtd.dlq``."""

from __future__ import annotations

import asyncio
import logging
from functools import partial

import aiohttp
from aiokafka import AIOKafkaProducer

from rtdstream import topics
from rtdstream.bridge.envelopes import LONG_PAUSE, EnvelopeProducer
from rtdstream.bridge.framing import BadLine, Frame
from rtdstream.bridge.positions import recover_positions, resume_url, time_of
from rtdstream.bridge.reader import StreamReader
from rtdstream.bridge.stats import BridgeStats
from rtdstream.config import BridgeCommandSettings, is_valid_source_id
from rtdstream.models import dead_letter
from rtdstream.producer import start_idempotent_producer, stop_producer

log = logging.getLogger(__name__)

STAGE = "bridge"
STATS_INTERVAL = 30.0
#: Longest a stopping bridge waits for the broker to acknowledge what it read.
STOP_SECONDS = 10.0


class Bridge:
    """Reads the configured streams concurrently through one shared Kafka producer."""

    def __init__(self, settings: BridgeCommandSettings) -> None:
        self.settings = settings
        self.stats = BridgeStats()
        self._envelopes: EnvelopeProducer | None = None

    async def run(self) -> None:
        """Run until cancelled; on the way out, deliver everything already read."""
        settings = self.settings
        await topics.ensure_topics(settings)
        limit = await topics.max_message_bytes(settings, topics.READINGS)
        producer = await start_producer(settings, limit)
        self._envelopes = EnvelopeProducer(
            producer,
            topics.READINGS,
            max_batch=settings.bridge_batch,
            linger=settings.bridge_linger,
            stats=self.stats,
            max_bytes=envelope_limit(limit),
        )
        await self._envelopes.start()
        if settings.resume:
            self._envelopes.delivered_times.update(await recover_positions(settings))
        session = aiohttp.ClientSession()
        readers = [
            StreamReader(
                session,
                url,
                partial(self._on_frames, source, url),
                max_line_bytes=settings.max_line_bytes,
                read_timeout=settings.read_timeout,
                connect_url=(
                    partial(resume_url, url, source, source, self._envelopes.delivered_times)
                    if settings.resume else None
                ),
            )
            for source, url in settings.source_urls
        ]
        log.info("bridge reading %s into %s", ", ".join(r.url for r in readers), settings.broker_url)
        tasks = [asyncio.create_task(reader.run(), name=f"read {reader.url}") for reader in readers]
        tasks.append(asyncio.create_task(self._log_stats(), name="bridge-stats"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            try:
                await self._hand_over(readers, producer)
            finally:
                await session.close()
                log.info("bridge stopped: %s", self.stats.summary())

    async def _hand_over(self, readers: list[StreamReader], producer: AIOKafkaProducer) -> None:
        """Deliver what was read and close the producer, within STOP_SECONDS.

        Without the bound a stop waited for the broker for ever: with the broker
        away, aiokafka retries each send for its whole request timeout (two
        minutes) and the bridge then sends again, as it must while running.
        Past the bound the deliveries still in flight are cancelled: they never
        moved their sources' resume positions, so a resumable source sends them
        again when the bridge restarts. Raises BrokerRefused once the broker
        refused a message for good (nothing more is sent then).
        """
        envelopes = self._envelopes
        assert envelopes is not None
        deadline = asyncio.get_running_loop().time() + STOP_SECONDS
        try:
            async with asyncio.timeout_at(deadline):
                for reader in readers:
                    await reader.finish_handover()
                await envelopes.stop()
        except TimeoutError:
            log.warning(
                "bridge: the broker acknowledged nothing more in %.0fs of stopping; stopping with %d message(s) "
                "undelivered (a resumable source sends them again when the bridge restarts)",
                STOP_SECONDS, envelopes.abandon(),
            )
        finally:
            await stop_producer(producer, within=max(0.0, deadline - asyncio.get_running_loop().time()))

    async def _on_frames(self, default_source: str, url: str, frames: list[Frame]) -> None:
        """Queue a chunk's records in their sources' envelopes; waits only when one must ship (or the broker lags)."""
        envelopes = self._envelopes
        assert envelopes is not None
        for frame in frames:
            if isinstance(frame, BadLine):
                self.stats.bad_lines += 1
                record = dead_letter(
                    frame.reason, frame.raw, stage=STAGE, detail=frame.detail, source=default_source, url=url
                )
                await envelopes.send_raw(default_source, record, topics.DLQ)
                continue
            self.stats.readings_read += 1
            source = _source_of(frame.value, default_source)
            if envelopes.queue(source, frame.raw, time_of(frame.value)):
                await envelopes.ship(source)

    async def _log_stats(self) -> None:
        """The totals every STATS_INTERVAL; a warning every LONG_PAUSE while the broker acknowledges nothing."""
        assert self._envelopes is not None
        loop = asyncio.get_running_loop()
        reported = loop.time()
        while True:
            await asyncio.sleep(1.0)
            paused_for = self._envelopes.paused_for() or 0.0
            outage = paused_for >= LONG_PAUSE
            if loop.time() - reported < (LONG_PAUSE if outage else STATS_INTERVAL):
                continue
            reported = loop.time()
            if outage:
                log.warning(
                    "bridge paused for %.0fs: the broker acknowledges nothing, so the bridge reads nothing (%s)",
                    paused_for, self.stats.summary(),
                )
            else:
                log.info("bridge totals %s", self.stats.summary())


#: Envelopes stay below this, and below the topic's own limit less room for the batch's framing.
ENVELOPE_MAX_BYTES = 512 * 1024
FRAMING_BYTES = 512


def envelope_limit(limit: int | None) -> int:
    """The largest envelope to build: below rtd.readings' ``max.message.bytes`` (``limit``) from the start.

    A refusal as too large costs more than the message: an idempotent producer's sequence for the
    partition is broken by it (the next send fails with OutOfOrderSequenceNumber), so the bridge
    asks the topic's limit instead of finding it out. Splitting on refusal stays for a limit lowered
    while the bridge runs.
    """
    if limit is None:
        return ENVELOPE_MAX_BYTES
    envelope = min(ENVELOPE_MAX_BYTES, limit - FRAMING_BYTES if limit > 2 * FRAMING_BYTES else limit // 2)
    if envelope < ENVELOPE_MAX_BYTES:
        log.info("%s takes messages of at most %d bytes: envelopes of at most %d bytes", topics.READINGS, limit, envelope)
    return envelope


async def start_producer(settings: BridgeCommandSettings, limit: int | None = None) -> AIOKafkaProducer:
    """The bridge's producer (idempotent where the broker supports it, :mod:`rtdstream.producer`).

    Apache Kafka holds the whole record batch, not each record, to the topic's
    ``max.message.bytes`` (``limit``): envelopes for one partition that queue while a request is in
    flight go in one batch, and a batch over the limit is refused as too large for every envelope
    in it, however small (the bridge then split down to single readings and stopped). So batches
    stay below the limit; one envelope alone always fits in a batch of its own.
    """
    options = {} if limit is None else {"max_batch_size": min(limit, 1_048_576)}
    return await start_idempotent_producer(
        settings,
        **options,
        # No linger: aiokafka sends while no request to the node is in flight and batches
        # what arrives meanwhile, so a quiet bridge waits for nothing (README, Latency).
        linger_ms=0,
    )


def _source_of(value: object, default_source: str) -> str:
    """The record's own source when it has a usable one, else the URL's."""
    if isinstance(value, dict):
        source = value.get("source")
        if isinstance(source, str) and is_valid_source_id(source):
            return source
    return default_source

