"""The machine's raw limits for the same data: plain aiokafka produce and consume, plain executemany.

They bound what any pipeline on this machine could do, so the benchmark
prints its own figures as fractions of them. The Kafka limits use envelopes
of the size the bridge produced during the run, filled with the simulator's
own records; the MySQL limit is :func:`rtdstream.sink.bench.raw_limit`, the
sink's upsert sent with aiomysql ``executemany``, as many rows per commit as
the sink's transactions held.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rtdstream.bench.database import BenchDatabase
from rtdstream.bridge.envelopes import build_envelope
from rtdstream.kafka_security import ClientOptions
from rtdstream.lag import topic_partitions
from rtdstream.sim.server import Sensor
from rtdstream.sink.bench import batches, raw_limit

#: The source ids :func:`rtdstream.sink.bench.batches` gives its rows (removed from a database that is kept).
RAW_SOURCE_PREFIX = "bench-"


@dataclass(frozen=True)
class RawLimits:
    readings: int
    readings_per_message: int
    rows_per_transaction: int
    kafka_produce_per_s: float
    kafka_consume_per_s: float
    mysql_executemany_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return {key: round(value, 1) if isinstance(value, float) else value for key, value in asdict(self).items()}


def sim_envelopes(readings: int, per_message: int, sources: int) -> list[tuple[bytes, bytes]]:
    """(key, envelope) pairs as the bridge builds them from the simulator's lines."""
    rng = random.Random(7)
    sensors = [Sensor(f"sensor-{n}", rng) for n in range(1, sources + 1)]
    now = int(time.time() * 1000)
    envelopes = []
    for index in range(max(1, readings // per_message)):
        sensor = sensors[index % len(sensors)]
        lines = [sensor.next_record(now).rstrip(b"\n") for _ in range(per_message)]
        envelopes.append((sensor.key.encode(), build_envelope(sensor.key, lines)))
    return envelopes


async def kafka_limits(
    client: ClientOptions, envelopes: list[tuple[bytes, bytes]], *, partitions: int, per_message: int
) -> tuple[float, float]:
    """(produce, consume) readings/s through a scratch topic, deleted afterwards."""
    topic = f"rtd.bench.raw.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        produce = await _produce(client, topic, envelopes)
        consume = await _consume(client, topic, len(envelopes))
        await admin.delete_topics([topic])
    finally:
        await admin.close()
    readings = len(envelopes) * per_message
    return readings / produce, readings / consume


async def _produce(client: ClientOptions, topic: str, envelopes: list[tuple[bytes, bytes]]) -> float:
    """Seconds to produce every envelope with the bridge's producer settings, acknowledged."""
    producer = AIOKafkaProducer(
        **client, acks="all", linger_ms=2, max_request_size=1_048_576
    )
    await producer.start()
    try:
        started = time.perf_counter()
        deliveries = [await producer.send(topic, value, key=key) for key, value in envelopes]
        await asyncio.gather(*deliveries)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def _consume(client: ClientOptions, topic: str, messages: int) -> float:
    """Seconds to fetch ``messages`` messages from the start of every partition (undecoded)."""
    consumer = AIOKafkaConsumer(**client, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = await topic_partitions(consumer, [topic])
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        return await fetch_seconds(consumer, messages)
    finally:
        await consumer.stop()


async def fetch_seconds(consumer: AIOKafkaConsumer, messages: int) -> float:
    """Seconds ``consumer`` takes to fetch ``messages`` messages from where it stands, undecoded."""
    started = time.perf_counter()
    seen = 0
    while seen < messages:
        batches_ = await consumer.getmany(timeout_ms=1000, max_records=10_000)
        seen += sum(len(records) for records in batches_.values())
    return time.perf_counter() - started


async def measure_limits(
    *, client: ClientOptions, database: BenchDatabase, readings: int, per_message: int,
    sink_batch: int, sources: int, partitions: int,
) -> RawLimits:
    """Every raw limit, with ``readings`` readings in messages of ``per_message``."""
    envelopes = sim_envelopes(readings, per_message, sources)
    produce, consume = await kafka_limits(
        client, envelopes, partitions=partitions, per_message=per_message
    )
    rows_per_transaction = sink_batch * per_message
    raw_batches = list(batches(len(envelopes) * per_message, per_message, sources))
    executemany = await raw_limit(sa.make_url(database.url), raw_batches, rows_per_transaction)
    return RawLimits(
        readings=len(envelopes) * per_message,
        readings_per_message=per_message,
        rows_per_transaction=rows_per_transaction,
        kafka_produce_per_s=produce,
        kafka_consume_per_s=consume,
        mysql_executemany_per_s=executemany,
    )
