"""The bridge's envelope batching against a real broker: a quiet source waits for nothing, a busy one is batched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from rtdstream import topics
from rtdstream.bridge.envelopes import EnvelopeProducer
from rtdstream.bridge.stats import BridgeStats
from rtdstream.broker import EmbeddedBroker
from tests.support.kafka import read_topic


def reading(time: int) -> bytes:
    return orjson.dumps({"time": str(time), "speed": "1"})


def envelopes_of(records) -> list[tuple[str, list[int]]]:
    """(source, reading times) of each rtd.readings message, sorted."""
    found = []
    for record in records:
        envelope = orjson.loads(record.value)
        found.append((envelope["source"], [int(r["time"]) for r in envelope["readings"]]))
    return sorted(found)


@pytest.fixture
async def producer(broker: EmbeddedBroker) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


async def test_a_quiet_source_ships_at_once_and_a_busy_one_at_most_once_per_linger(
    broker: EmbeddedBroker, producer: AIOKafkaProducer
) -> None:
    envelopes = EnvelopeProducer(producer, topics.READINGS, max_batch=500, linger=0.5, stats=BridgeStats())
    await envelopes.start()
    await asyncio.sleep(0.05)  # the linger task waits for a first reading, as in a running bridge
    try:
        await envelopes.add("s1", reading(1), 1)  # s1 shipped nothing in the last linger: at once
        await asyncio.sleep(0.05)  # readings arrive over time, as from a stream
        await envelopes.add("s2", reading(1), 1)  # each source has its own slot
        await envelopes.add("s1", reading(2), 2)  # within the linger after s1's envelope: waits
        await envelopes.add("s1", reading(3), 3)
        assert envelopes.waiting() == {"s1": 2}
        records = await read_topic(broker.bootstrap_servers, topics.READINGS, until=lambda rs: len(rs) >= 3)
        # the two waiting readings left together, in one envelope, once the linger was over
        assert envelopes_of(records) == [("s1", [1]), ("s1", [2, 3]), ("s2", [1])]

        await asyncio.sleep(0.6)  # s1 has been quiet for longer than the linger
        await envelopes.add("s1", reading(4), 4)
        assert envelopes.waiting() == {}
    finally:
        await envelopes.stop()
    records = await read_topic(broker.bootstrap_servers, topics.READINGS, until=lambda rs: len(rs) >= 4)
    assert envelopes_of(records)[:2] == [("s1", [1]), ("s1", [2, 3])] and len(records) == 4


async def test_a_full_envelope_does_not_wait_for_the_linger(
    broker: EmbeddedBroker, producer: AIOKafkaProducer
) -> None:
    envelopes = EnvelopeProducer(producer, topics.READINGS, max_batch=3, linger=3600.0, stats=BridgeStats())
    await envelopes.start()
    try:
        for time in range(1, 6):
            await envelopes.add("s1", reading(time), time)
        # 1 left alone (quiet source); 2, 3, 4 filled an envelope; 5 waits for the hour-long linger
        assert envelopes.waiting() == {"s1": 1}
        records = await read_topic(broker.bootstrap_servers, topics.READINGS, until=lambda rs: len(rs) >= 2)
        assert envelopes_of(records) == [("s1", [1]), ("s1", [2, 3, 4])]
    finally:
        await envelopes.stop()  # and the stop flushes what waits
    records = await read_topic(broker.bootstrap_servers, topics.READINGS, until=lambda rs: len(rs) >= 3)
    assert envelopes_of(records) == [("s1", [1]), ("s1", [2, 3, 4]), ("s1", [5])]
