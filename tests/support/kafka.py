"""Produce to and read back from the test broker with plain aiokafka (no consumer group)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from rtdstream.lag import topic_partitions


async def produce(bootstrap: str, topic: str, values: Iterable[bytes | None], key: bytes | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord]], bool],
    timeout: float = 60.0,
) -> list[ConsumerRecord]:
    """Records of every partition from the start, until ``until(records)`` holds or time runs out."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not until(records) and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    for _ in range(100):
        if partitions := await topic_partitions(consumer, [topic]):
            return partitions
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic} does not exist")


def json_values(records: list[ConsumerRecord]) -> list[dict]:
    return [orjson.loads(record.value) for record in records]
