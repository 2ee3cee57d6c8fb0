"""The validation agent: ``rtd.readings`` -> ``rtd.validated`` and ``rtd.dlq``.

It decodes and checks every message itself (never through a Faust codec, whose
errors crash the agent) and forwards one batch per source, keyed by source so
the next stages see each source in order on one partition. Each batch carries
its origin (partition, offset, index) so a replay after a crash is recognisable
downstream; the readings stay at-least-once here and become exact in the
window state and the database.
"""

from __future__ import annotations

import logging
import time

from faust import EventT, StreamT

from rtdstream import metrics
from rtdstream.app import app, dlq_topic, readings_topic, settings, validated_topic
from rtdstream.models import dead_letter, encode_batch
from rtdstream.topics import READINGS
from rtdstream.validation import Validated, validate_message

log = logging.getLogger(__name__)

STAGE = "validate"


@app.agent(readings_topic)
async def validate(stream: StreamT) -> None:
    """Validate each message, forward the accepted readings, dead-letter the rest."""
    async for event in stream.events():
        result = validate_message(
            event.message.value,
            event.message.key,
            now_ms=int(time.time() * 1000),
            max_bytes=settings.max_message_bytes,
        )
        await forward(result, event)


async def forward(result: Validated, event: EventT) -> None:
    """Send the batches and rejections of one input message, and count them."""
    partition, offset = event.message.partition, event.message.offset
    for index, batch in enumerate(result.batches.values()):
        batch.origin = (partition, offset, index)
        await validated_topic.send(key=batch.source.encode(), value=encode_batch(batch))
    for rejection in result.rejections:
        await dlq_topic.send(
            key=rejection.source.encode() if rejection.source else None,
            value=dead_letter(
                rejection.reason,
                rejection.raw,
                stage=STAGE,
                detail=rejection.detail,
                source=rejection.source,
                topic=READINGS,
                partition=partition,
                offset=offset,
            ),
        )
        metrics.READINGS_REJECTED.labels(STAGE, rejection.reason).inc()
    metrics.READINGS_ACCEPTED.inc(result.accepted)


@app.timer(30.0)
async def log_counters() -> None:
    """One line per interval with what validation accepted and rejected so far."""
    counts = metrics.snapshot("rtd_readings_")
    if counts:
        log.info("validation totals %s", " ".join(f"{k}={v:g}" for k, v in sorted(counts.items())))
