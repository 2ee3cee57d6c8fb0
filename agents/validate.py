"""The validation agent: ``rtd.readings`` -> ``rtd.validated`` and ``rtd.dlq``.

It decodes and checks every message itself (never through a Faust codec, whose
errors crash the agent) and forwards one batch per source, keyed by source so
the next stages see each source in order on one partition. Each batch carries
its origin (partition, offset, index) so a replay after a crash is recognisable
downstream; the readings stay at-least-once here and become exact in the
window state and the database.

Input is taken in batches, and a batch is acknowledged (so its offsets can be
committed) only once the broker has acknowledged everything it produced: see
:mod:`rtdstream.delivery` for why Faust's own flush before a commit is not
enough.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from faust import StreamT

from rtdstream import metrics
from rtdstream.app import app, dlq_topic, readings_topic, settings, validated_topic
from rtdstream.delivery import Record, send_until_acknowledged
from rtdstream.models import dead_letter, encode_batch
from rtdstream.topics import READINGS
from rtdstream.validation import Validated, validate_message

log = logging.getLogger(__name__)

STAGE = "validate"


@app.agent(readings_topic)
async def validate(stream: StreamT) -> None:
    """Validate batches of messages; forward the accepted readings, dead-letter the rest."""
    async for events in stream.take_events(settings.validate_batch, within=settings.validate_within):
        outputs = Outputs()
        now_ms = int(time.time() * 1000)
        for event in events:
            message = event.message
            result = validate_message(
                message.value, message.key, now_ms=now_ms, max_bytes=settings.max_message_bytes
            )
            outputs.add(result, message.partition, message.offset)
        await send_until_acknowledged(outputs.records, what="validated readings and rejections", input_events=events)
        outputs.count()


@dataclass
class Outputs:
    """The records a batch of input messages produces, and what to count once they are delivered."""

    records: list[Record] = field(default_factory=list)
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, result: Validated, partition: int, offset: int) -> None:
        """The batches and rejections of the input message at ``partition``/``offset``."""
        for index, batch in enumerate(result.batches.values()):
            batch.origin = (partition, offset, index)
            self.records.append((validated_topic, batch.source.encode(), encode_batch(batch)))
        for rejection in result.rejections:
            record = dead_letter(
                rejection.reason,
                rejection.raw,
                stage=STAGE,
                detail=rejection.detail,
                source=rejection.source,
                topic=READINGS,
                partition=partition,
                offset=offset,
            )
            self.records.append((dlq_topic, rejection.source.encode() if rejection.source else None, record))
            self.rejected[rejection.reason] += 1
        self.accepted += result.accepted

    def count(self) -> None:
        """Counted only once delivered, so a batch sent again after a stop is not counted twice."""
        metrics.READINGS_ACCEPTED.inc(self.accepted)
        for reason, rejected in self.rejected.items():
            metrics.READINGS_REJECTED.labels(STAGE, reason).inc(rejected)


@app.timer(30.0)
async def log_counters() -> None:
    """One line per interval with what validation accepted and rejected so far."""
    counts = metrics.snapshot("rtd_readings_")
    if counts:
        log.info("validation totals %s", " ".join(f"{k}={v:g}" for k, v in sorted(counts.items())))
