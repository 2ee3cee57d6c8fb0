"""Consumer lag of a consumer group: how far its committed offsets trail the end of each partition.

``/healthz`` of the web view and ``rtdstream status`` both ask this of the
workers' groups (Faust's, and the validation stage's for ``rtd.readings``). It uses short-lived clients on purpose: a health check must
report a broker that went away, not a client that is still retrying inside.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from rtdstream.kafka_security import ClientOptions
from rtdstream.topics import worker_groups


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    #: The group's committed offset, or None when it never committed on this partition.
    committed: int | None
    beginning: int
    end: int

    @property
    def lag(self) -> int:
        """Messages the group still has to process (from the log start when it never committed)."""
        position = self.committed if self.committed is not None else self.beginning
        return max(self.end - position, 0)


@dataclass(frozen=True, slots=True)
class GroupLag:
    group: str
    partitions: list[PartitionLag]

    @property
    def total(self) -> int:
        return sum(p.lag for p in self.partitions)

    @property
    def caught_up(self) -> bool:
        """Whether the group has processed all its input; not while it has no partitions to measure yet."""
        return bool(self.partitions) and self.total == 0

    def by_topic(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for p in self.partitions:
            totals[p.topic] = totals.get(p.topic, 0) + p.lag
        return totals


async def measure_lag(
    client: ClientOptions, group: str, topics: Iterable[str], *, timeout: float = 5.0
) -> GroupLag:
    """Lag of ``group`` on every partition of ``topics`` (topics that do not exist are left out).

    Raises ``TimeoutError`` or a Kafka error when the broker does not answer in ``timeout`` seconds.
    """
    return await measure_groups_lag(client, group, {group: tuple(topics)}, timeout=timeout)


async def measure_worker_lag(client: ClientOptions, app_id: str, *, timeout: float = 5.0) -> GroupLag:
    """The workers' lag on their inputs, each topic under the group that consumes it.

    ``rtd.readings`` is consumed by the validation stage's group, the other inputs by
    the Faust group ``app_id`` (:func:`rtdstream.topics.worker_groups`).
    """
    return await measure_groups_lag(client, app_id, worker_groups(app_id), timeout=timeout)


async def measure_groups_lag(
    client: ClientOptions, label: str, groups: Mapping[str, tuple[str, ...]], *, timeout: float = 5.0
) -> GroupLag:
    """Lag of each group on its topics, as one :class:`GroupLag` named ``label``."""
    async with asyncio.timeout(timeout):
        consumer = AIOKafkaConsumer(**client, enable_auto_commit=False)
        admin = AIOKafkaAdminClient(**client)
        try:
            await consumer.start()
            await admin.start()
            partitions = await topic_partitions(consumer, [topic for topics in groups.values() for topic in topics])
            if not partitions:
                return GroupLag(label, [])
            committed = {}
            for group, topics in groups.items():
                mine = [tp for tp in partitions if tp.topic in topics]
                if mine:
                    committed.update(await admin.list_consumer_group_offsets(group, partitions=mine))
            beginnings = await consumer.beginning_offsets(partitions)
            ends = await consumer.end_offsets(partitions)
        finally:
            await admin.close()
            await consumer.stop()
    return GroupLag(
        label,
        [
            PartitionLag(
                tp.topic,
                tp.partition,
                _committed_offset(committed.get(tp)),
                beginnings[tp],
                ends[tp],
            )
            for tp in partitions
        ],
    )


async def topic_partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of those ``topics`` that exist (none is auto-created by asking).

    One metadata request for all topics names none of them, so an auto-creating broker creates
    nothing. Its answer is read directly: ``consumer.topics()`` makes the same request but keeps
    the partitions out of the consumer's cache, where ``partitions_for_topic`` looks (that cache
    holds only what was assigned or subscribed). The embedded broker happened to fill it anyway;
    Apache Kafka does not, and asking the cache there found no partition at all.
    """
    cluster = await consumer._client.fetch_all_metadata()  # aiokafka has no public twin
    return [
        TopicPartition(topic, partition)
        for topic in topics
        for partition in sorted(cluster.partitions_for_topic(topic) or ())
    ]


def _committed_offset(meta: object) -> int | None:
    offset = getattr(meta, "offset", -1)
    return offset if offset is not None and offset >= 0 else None
