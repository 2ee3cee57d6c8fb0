"""``rtdstream bench --drain N``: the workers alone, over a pre-filled ``rtd.readings``.

The end-to-end benchmark offers load at a rate and shows whether the pipeline
keeps up; this one measures how fast the workers can go at all, and for either
kind of input: ``single`` is one reading per message as any Kafka producer
writes it (``{"time": "<ms>", "speed": "<n>", "source": "sNN"}``, keyed by
source), ``envelope`` is the bridge's messages of 500 readings. The topic is
filled first, then the workers start; the figure is readings per second from
the first row the database stored to the last (``readings.ingested_at``).

The same messages are then read once more with a plain aiokafka consumer and
no processing at all: the ceiling any Python consumer has on this machine.
The check is the end-to-end benchmark's: exactly the readings produced are
stored, counted in the key-less legacy ``Data`` table, where a double write
would show.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from rtdstream import topics
from rtdstream.bench.database import BenchDatabase
from rtdstream.bench.limits import fetch_seconds
from rtdstream.bench.options import DEFAULT_SERVER_URL
from rtdstream.bench.pipeline import Pipeline, PipelineFailed
from rtdstream.bench.runner import BenchFailed, BenchLostReadings, start_groups_at_end
from rtdstream.broker import EmbeddedBroker
from rtdstream.config import Settings
from rtdstream.kafka_security import ClientOptions, client_options
from rtdstream.lag import measure_worker_lag, topic_partitions
from rtdstream.sink.schema import legacy_data, readings

FORMATS = ("single", "envelope")
ENVELOPE_READINGS = 500
#: The drain is given up once the workers' lag stood still this long.
STALL_SECONDS = 30.0
#: How often the workers' lag is measured while they drain, in seconds.
LAG_INTERVAL = 1.0


@dataclass(frozen=True)
class DrainOptions:
    readings: int = 200_000
    format: str = "single"
    sources: int = 50
    workers: int = 1
    output: Path = Path("bench-results")


@dataclass(frozen=True)
class DrainResult:
    format: str
    broker: str
    workers: int
    readings: int
    messages: int
    stored: int
    legacy_rows: int
    seconds: float
    readings_per_s: float
    raw_consume_per_s: float

    @property
    def exact(self) -> bool:
        return self.stored == self.readings == self.legacy_rows

    def line(self) -> str:
        return (
            f"drain {self.format} on {self.broker}, {self.workers} worker(s): {self.readings:,} readings in "
            f"{self.messages:,} messages stored in {self.seconds:.1f}s = {self.readings_per_s:,.0f} readings/s "
            f"(plain aiokafka consume of the same messages: {self.raw_consume_per_s:,.0f}/s, "
            f"{self.readings_per_s / self.raw_consume_per_s:.1%} of it); "
            f"stored {self.stored:,}, Data rows {self.legacy_rows:,}: {'exact' if self.exact else 'NOT EXACT'}"
        )


async def run_drain(options: DrainOptions, settings: Settings, out: Callable[[str], None] = print) -> DrainResult:
    """Fill, drain, check and report; raises :class:`BenchLostReadings` when the store is not exact."""
    broker = EmbeddedBroker().start() if settings.broker is None else None
    database = await BenchDatabase.fresh(DEFAULT_SERVER_URL)
    run_dir = options.output / f"drain-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        await database.prepare()
        settings = settings.model_copy(update={"broker": broker.url}) if broker else settings
        result = await _drain(options, settings, database, run_dir, out, embedded=broker is not None)
    finally:
        await database.close(drop=True)
        if broker is not None:
            broker.stop()
    (run_dir / "drain.json").write_text(json.dumps(asdict(result), indent=2))
    out(result.line())
    if not result.exact:
        raise BenchLostReadings({
            "drained": True, "client_missing": 0,
            "lost": max(result.readings - min(result.stored, result.legacy_rows), 0),
            "unexpected_rows": max(max(result.stored, result.legacy_rows) - result.readings, 0),
        })
    return result


async def _drain(
    options: DrainOptions, settings: Settings, database: BenchDatabase, run_dir: Path,
    out: Callable[[str], None], *, embedded: bool,
) -> DrainResult:
    client = client_options(settings)
    app_id = f"{settings.app_id}-drain-{time.strftime('%H%M%S')}"
    await topics.ensure_topics(settings)
    await start_groups_at_end(client, app_id)  # a shared Kafka holds other runs' readings
    start = await _ends(client)
    messages = await _fill(client, options)
    out(f"drain: {options.readings:,} readings in {messages:,} {options.format} messages in rtd.readings; "
        "starting the worker(s)")
    pipeline = Pipeline.configure(run_dir, broker_url=settings.broker_url, database_url=database.url,
                                  app_id=app_id, workers=options.workers, embedded=embedded)
    pipeline.env["RTD_LEGACY_TABLE"] = "true"  # key-less: a double write shows there
    try:
        await pipeline.start_workers()
        await _wait_until_drained(client, app_id, pipeline)
    except PipelineFailed as exc:
        raise BenchFailed(f"the worker failed: {exc}") from None
    finally:
        await pipeline.stop()
    stored, legacy_rows, seconds = await _stored(database)
    raw = await _raw_consume(client, start, messages)
    return DrainResult(
        format=options.format, broker="embedded" if embedded else settings.broker_url, workers=options.workers,
        readings=options.readings, messages=messages, stored=stored, legacy_rows=legacy_rows, seconds=seconds,
        readings_per_s=stored / seconds if seconds else 0.0,
        raw_consume_per_s=options.readings / raw if raw else 0.0,
    )


def _messages(options: DrainOptions) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs: ``options.readings`` readings of ``options.sources`` sources, times 1 ms apart."""
    rng = random.Random(13)
    first = int(time.time() * 1000) - options.readings
    per_message = 1 if options.format == "single" else ENVELOPE_READINGS
    for index in range(0, options.readings, per_message):
        source = f"s{(index // per_message) % options.sources:02d}"
        count = min(per_message, options.readings - index)
        if options.format == "single":
            value = orjson.dumps({"time": str(first + index), "speed": str(rng.randint(0, 50)), "source": source})
        else:
            value = orjson.dumps({"source": source, "readings": [
                {"time": first + index + i, "speed": rng.randint(0, 50)} for i in range(count)
            ]})
        yield source.encode(), value


async def _fill(client: ClientOptions, options: DrainOptions) -> int:
    producer = AIOKafkaProducer(**client, acks="all", linger_ms=5, max_batch_size=1_048_576,
                                max_request_size=1_048_576)
    await producer.start()
    try:
        deliveries = [await producer.send(topics.READINGS, value, key=key) for key, value in _messages(options)]
        await asyncio.gather(*deliveries)
        return len(deliveries)
    finally:
        await producer.stop()


async def _ends(client: ClientOptions) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(**client, enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.end_offsets(await topic_partitions(consumer, [topics.READINGS]))
    finally:
        await consumer.stop()


async def _wait_until_drained(client: ClientOptions, app_id: str, pipeline: Pipeline) -> None:
    """Until the workers have committed all of their input, or their lag stood still for STALL_SECONDS.

    Each stage commits its input only once its output is acknowledged (the sink:
    once MySQL has committed the rows), so no lag on ``rtd.readings`` and
    ``rtd.validated`` means every reading is stored. Not the highest
    ``readings.id``: MariaDB reserves the ids of an ``INSERT ... SELECT`` in
    doubling blocks and drops what a statement leaves unused, so the highest id
    passed the number of readings with nearly a quarter of them still to store
    (200,000 with 153,861 stored).
    """
    last, changed = None, time.monotonic()
    while time.monotonic() - changed < STALL_SECONDS:
        pipeline.check_alive()
        try:
            lag = await measure_worker_lag(client, app_id)
        except (KafkaError, OSError, TimeoutError):
            lag = None  # a busy broker: measured again at the next interval
        if lag is not None and lag.caught_up:
            return
        total = lag.total if lag is not None else last
        if total != last:
            last, changed = total, time.monotonic()
        await asyncio.sleep(LAG_INTERVAL)


async def _stored(database: BenchDatabase) -> tuple[int, int, float]:
    """Readings stored, rows in Data, and seconds from the first stored row to the last."""
    async with database.engine.connect() as conn:
        count, first, last = (await conn.execute(
            sa.select(sa.func.count(), sa.func.min(readings.c.ingested_at), sa.func.max(readings.c.ingested_at))
        )).one()
        legacy = (await conn.execute(sa.select(sa.func.count()).select_from(legacy_data))).scalar_one()
    seconds = (last - first).total_seconds() if count else 0.0
    return count, legacy, seconds


async def _raw_consume(client: ClientOptions, start: dict[TopicPartition, int], messages: int) -> float:
    """Seconds a plain consumer takes to fetch the filled messages again, undecoded."""
    consumer = AIOKafkaConsumer(**client, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(start))
        for tp, offset in start.items():
            consumer.seek(tp, offset)
        return await fetch_seconds(consumer, messages)
    finally:
        await consumer.stop()
