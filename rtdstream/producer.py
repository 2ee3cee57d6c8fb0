"""The Kafka producer of the stages that write rtdstream's topics themselves (bridge, validation).

Idempotent where the broker supports it. Without idempotence, a batch the
producer sends again after a partition's leader died (the first send may have
been written before the leader went) is a second copy at another offset,
which every later stage takes for new readings: the three-broker test found 5
readings stored twice in the legacy Data table. With it, the broker drops the
repeat. The embedded broker does not implement it (no InitProducerId); it has
no leaders to lose, so the plain producer is used there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import UnknownError, UnsupportedVersionError

from rtdstream.config import ProducerSettings
from rtdstream.kafka_security import client_options

log = logging.getLogger(__name__)


def compression_type(settings: ProducerSettings) -> str | None:
    """aiokafka's ``compression_type`` for ``RTD_COMPRESSION`` (its codecs come with cramjam)."""
    return None if settings.compression == "none" else settings.compression


async def start_idempotent_producer(settings: ProducerSettings, **options: Any) -> AIOKafkaProducer:
    """A started producer with ``acks=all``, idempotent if the broker allows; ``options`` for aiokafka."""
    options = dict(
        **client_options(settings),
        acks="all",
        compression_type=compression_type(settings),
        # Ride out a broker outage inside the client; a send that still fails is final.
        request_timeout_ms=120_000,
        max_request_size=1_048_576,
        # send() waits while its partition's batch is full; at the default 16 KiB one large
        # envelope filled it, and the bridge read at the pace of the broker's round trips.
        max_batch_size=1_048_576,
    ) | options
    producer = AIOKafkaProducer(**options, enable_idempotence=True)
    try:
        with _without_init_pid_errors():
            await producer.start()
        return producer
    except (UnknownError, UnsupportedVersionError) as exc:
        await producer.stop()
        log.info("the broker does not support idempotent producers (%r); producing without", exc)
    producer = AIOKafkaProducer(**options)
    await producer.start()
    return producer


async def stop_producer(producer: AIOKafkaProducer, *, within: float) -> None:
    """Stop ``producer``, waiting at most ``within`` seconds for the broker to take what it holds.

    ``AIOKafkaProducer.stop`` waits until every batch it holds is delivered or
    has expired (the request timeout, two minutes), so with the broker away a
    SIGTERM went unanswered that long. Past ``within`` the producer's sender
    task is cancelled, aiokafka having no public way to drop its batches; its
    ``stop`` then only closes the connections. The caller has not committed
    the input of what is dropped, or can have it sent again.
    """
    stopping = asyncio.ensure_future(producer.stop())
    try:
        async with asyncio.timeout(within):
            await asyncio.shield(stopping)
    except TimeoutError:
        sender = producer._sender  # aiokafka 0.12-0.14: its stop() ends early once this task is done
        if sender.sender_task is not None:
            sender.sender_task.cancel()
        await stopping


@contextmanager
def _without_init_pid_errors() -> Iterator[None]:
    """aiokafka logs a refused InitProducerId as an ERROR with a traceback; the caller reports it in one line."""
    sender = logging.getLogger("aiokafka.producer.sender")
    refusal = _InitPidRefusal()
    sender.addFilter(refusal)
    try:
        yield
    finally:
        sender.removeFilter(refusal)


class _InitPidRefusal(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "InitProducerIdRequest" not in str(record.msg)
