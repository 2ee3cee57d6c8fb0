"""The sink agents: ``rtd.validated`` -> ``readings`` (and ``Data``), ``rtd.windows`` -> ``window_aggregates``.

Each agent takes its input in batches and hands every batch to a
:class:`~rtdstream.sink.writer.SinkWriter`, which returns only once the batch
is committed (retrying through outages). Returning is what lets ``take_events``
acknowledge the messages, so Kafka commits no offset past an unwritten row.
If the body is interrupted before its batch is written (the worker stopping
during an outage), the batch's messages keep an extra reference and are never
acknowledged: the next start consumes them again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial

from faust import StreamT
from faust.types import TP

from rtdstream.config import Settings
from rtdstream.delivery import send_all, withhold
from rtdstream.sink.database import create_engine
from rtdstream.sink.migrate import prepare
from rtdstream.sink.records import Item, Rejected, SinkBatch, decode_readings, decode_window
from rtdstream.sink.writer import SinkWriter
from rtdstream.topics import VALIDATED, WINDOWS
from rtdstream.worker_app import RtdApp, StageTopics

log = logging.getLogger(__name__)

Decoder = Callable[[bytes | None, int, int], Item]


class SinkStage:
    """The two sink agents of one app, writing to the database its settings name."""

    def __init__(self, app: RtdApp, settings: Settings, topics: StageTopics) -> None:
        self.app = app
        self.settings = settings
        self.topics = topics

    def register(self) -> None:
        """Subscribe the agents, with the schema migrated before any of them runs.

        A database that cannot be used stops the worker at start (:attr:`RtdApp.preparations`).
        """
        self.app.preparations.append(partial(prepare, self.settings))
        self.app.agent(self.topics.validated)(self.store_readings)
        self.app.agent(self.topics.windows)(self.store_windows)

    async def store_readings(self, stream: StreamT) -> None:
        """Write validated readings to ``readings`` (and the legacy ``Data`` table when on)."""
        await self._store(stream, VALIDATED, decode_readings)

    async def store_windows(self, stream: StreamT) -> None:
        """Write final window aggregates to ``window_aggregates``."""
        await self._store(stream, WINDOWS, decode_window)

    async def _store(self, stream: StreamT, topic: str, decode: Decoder) -> None:
        writer = SinkWriter(
            create_engine(self.settings.database_url, writer=True),
            send_dead_letters=self._send_dead_letters,
            legacy=self.settings.legacy_table,
            highwater=self._highwater,
        )
        try:
            async for events in stream.take_events(self.settings.sink_batch, within=self.settings.sink_within):
                batch = SinkBatch(
                    topic, [decode(e.message.value, e.message.partition, e.message.offset) for e in events]
                )
                try:
                    await writer.write_until_done(batch)
                finally:
                    if not batch.written:
                        withhold(events)
                        log.warning("sink: stopped before a batch of %d message(s) was written; it is written "
                                    "after restart", len(events))
        finally:
            # Shielded: the worker's shutdown cancels agents more than once, and a
            # connection close interrupted half-way is logged as an error.
            await asyncio.shield(writer.close())

    async def _send_dead_letters(self, topic: str, rejected: list[Rejected]) -> None:
        """Produce the records to ``rtd.dlq`` and wait until the broker has every one."""
        await send_all([
            (self.topics.dlq, rejection.source.encode() if rejection.source else None, rejection.dead_letter(topic))
            for rejection in rejected
        ])

    def _highwater(self, topic: str, partition: int) -> int | None:
        """The next offset of a partition this worker consumes, None when it is not assigned here."""
        try:
            return self.app.consumer.highwater(TP(topic, partition))
        except (AssertionError, AttributeError, KeyError):
            return None
