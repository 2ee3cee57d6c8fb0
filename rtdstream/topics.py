"""The Kafka topics of the pipeline, and their creation with explicit partitions.

A broker that auto-creates topics picks its own partition count (the embedded
one picks 4), and Faust refuses a table whose changelog differs from its source
topic. So every process that produces or consumes creates the topics first with
the configured count: the Faust worker through its topic declarations, the
bridge and the web view through :func:`ensure_topics`.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from rtdstream.config import Settings
from rtdstream.errors import UserError

log = logging.getLogger(__name__)

#: Raw input: envelopes from the bridge and single readings from any producer.
READINGS = "rtd.readings"
#: Validated readings, one batch of one source per message (added by rtdstream).
VALIDATED = "rtd.validated"
#: Rejected input with the reason and the raw bytes.
DLQ = "rtd.dlq"
#: Final window aggregates, one message per closed window.
WINDOWS = "rtd.windows"
#: Open-window values at a bounded rate, for live dashboards (added by rtdstream).
PARTIALS = "rtd.partials"

ALL = (READINGS, VALIDATED, DLQ, WINDOWS, PARTIALS)


async def ensure_topics(settings: Settings, *, retry_for: float = 60.0) -> None:
    """Create missing rtdstream topics; wait for the broker up to ``retry_for`` seconds.

    A topic that already exists with another partition count is left alone and
    logged: changing it would reshuffle keys between partitions.
    """
    admin = await _connected_admin(settings, retry_for)
    try:
        # Describe only topics that exist: a metadata request naming an unknown
        # topic makes auto-creating brokers create it with their own count.
        present = set(await admin.list_topics()) & set(ALL)
        existing = await admin.describe_topics(sorted(present)) if present else []
        counts = {
            info["topic"]: len(info["partitions"])
            for info in existing
            if info.get("error_code", 0) == 0 and info["partitions"]
        }
        for name, count in counts.items():
            if count != settings.partitions:
                log.warning(
                    "topic %s has %d partitions, RTD_PARTITIONS is %d; keeping the topic as is",
                    name, count, settings.partitions,
                )
        missing = [
            NewTopic(name, num_partitions=settings.partitions, replication_factor=1)
            for name in ALL
            if name not in counts
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another process created them first
            log.info("created topics %s with %d partitions", [t.name for t in missing], settings.partitions)
    finally:
        await admin.close()


async def _connected_admin(settings: Settings, retry_for: float) -> AIOKafkaAdminClient:
    deadline = asyncio.get_running_loop().time() + retry_for
    delay = 0.2
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
        try:
            await admin.start()
            return admin
        except (KafkaConnectionError, KafkaError, OSError) as exc:
            await admin.close()
            if asyncio.get_running_loop().time() + delay > deadline:
                raise BrokerUnavailable(settings.broker_url, exc) from None
            log.warning("broker %s unreachable (%s); retrying in %.1fs", settings.broker_url, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


class BrokerUnavailable(UserError):
    """The broker did not answer within the start-up wait."""

    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(f"Kafka broker {url} unreachable: {cause}")
