"""Produce to and read back from the test broker with plain aiokafka (no consumer group)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import ConsumerRecord

from rtdstream.broker import EmbeddedBroker
from rtdstream.config import load_settings
from rtdstream.lag import topic_partitions
from rtdstream.topics import ensure_topics
from tests.support.apache_kafka import ApacheKafka


async def produce(bootstrap: str, topic: str, values: Iterable[bytes | None], key: bytes | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


@asynccontextmanager
async def _from_start(bootstrap: str, topic: str) -> AsyncIterator[tuple[AIOKafkaConsumer, list[TopicPartition]]]:
    """A consumer assigned every partition of ``topic``, at their beginnings (no group, no commits)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = await _partitions(consumer, topic)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        yield consumer, partitions
    finally:
        await consumer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list[ConsumerRecord]], bool],
    timeout: float = 60.0,
) -> list[ConsumerRecord]:
    """Records of every partition from the start, until ``until(records)`` holds or time runs out."""
    records: list[ConsumerRecord] = []
    async with _from_start(bootstrap, topic) as (consumer, _):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not until(records) and loop.time() < deadline:
            batches = await consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                records.extend(batch)
    return records


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    for _ in range(100):
        if partitions := await topic_partitions(consumer, [topic]):
            return partitions
        await asyncio.sleep(0.1)
    raise AssertionError(f"topic {topic} does not exist")


async def read_to_end(bootstrap: str, topic: str, timeout: float = 60.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` up to the end offsets it had when called.

    The end offsets are the positive marker of absence: once the consumer's position reached them
    on every partition, a record that was in the topic was read, with no sleep to guess how long
    "long enough" is.
    """
    records: list[ConsumerRecord] = []
    async with _from_start(bootstrap, topic) as (consumer, partitions):
        ends = await consumer.end_offsets(partitions)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            assert loop.time() < deadline, f"{topic} not read to its end offsets {ends} within {timeout}s"
            batches = await consumer.getmany(timeout_ms=200)
            for tp, batch in batches.items():
                records.extend(r for r in batch if r.offset < ends[tp])
    return records


def json_values(records: list[ConsumerRecord]) -> list[dict]:
    return [orjson.loads(record.value) for record in records]


async def describe_topic(bootstrap: str, topic: str, config_names: Iterable[str]) -> tuple[dict, dict[str, str]]:
    """(the topic's metadata with its partitions' replicas and ISR, the named topic configs as the broker has them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(100):  # a topic just created may be described before its partitions and configs are
            [metadata] = await admin.describe_topics([topic])
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, topic, dict.fromkeys(config_names))]
            )
            configs = {
                entry["config_names"]: entry["config_value"]
                for resource in response.to_object()["resources"]
                for entry in resource["config_entries"]
            }
            if metadata["partitions"] and configs:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    return metadata, configs


async def produce_at(bootstrap: str, topic: str, messages: Iterable[tuple[int, bytes | None, bytes]]) -> None:
    """Produce (partition, key, value) messages in order, each to its given partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for partition, key, value in messages:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def create_topics(broker: EmbeddedBroker | ApacheKafka, env: dict[str, str]) -> None:
    """The rtdstream topics with the test's partition count, before anything produces to them."""
    await ensure_topics(load_settings(broker=broker.url, partitions=int(env["RTD_PARTITIONS"])))


def envelope_readings(records: list[ConsumerRecord]) -> list[tuple[str, int]]:
    """(source, time) of every reading in rtd.readings envelopes, in record order."""
    found = []
    for record in records:
        envelope = orjson.loads(record.value)
        found += [(r.get("source", envelope["source"]), int(r["time"])) for r in envelope["readings"]]
    return found
