"""Benchmark: the sink's sustained rows/s into MySQL against the raw limit of the same rows.

``python -m rtdstream.sink.bench --database-url mysql+aiomysql://root@127.0.0.1/rtd_bench``
(the database must exist and is emptied). It measures the raw limit,
the readings written with plain aiomysql ``executemany`` (the same upsert, the
same rows per transaction, no Kafka), before and after the sink run. For that
run it puts the same readings on ``rtd.validated`` (on the embedded broker
unless RTD_BROKER is set), starts a real worker and measures from the sink's
first commit to its last, using the ``ingested_at`` stamps of the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext

import aiomysql
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from rtdstream.broker import EmbeddedBroker, free_port
from rtdstream.config import load_settings
from rtdstream.models import ReadingBatch, encode_batch
from rtdstream.sink.database import create_engine
from rtdstream.sink.migrate import upgrade
from rtdstream.topics import VALIDATED, ensure_topics

#: The statement the sink sends for readings, as SQLAlchemy compiles it for MariaDB.
RAW_UPSERT = (
    "INSERT INTO readings (source, time, speed) VALUES (%s, %s, %s) ON DUPLICATE KEY UPDATE speed = VALUES(speed)"
)
SINK_TABLES = ("readings", "sink_offsets", "sink_origins", "sink_source_origins", "window_aggregates")


def batches(rows: int, per_message: int, sources: int) -> Iterator[ReadingBatch]:
    """Readings of ``sources`` sensors, one batch per message, with origins like the validation stage's."""
    start = int(time.time() * 1000) - 86_400_000
    for index in range(rows // per_message):
        source = f"bench-{index % sources}"
        first = start + (index // sources) * per_message
        yield ReadingBatch(
            source, list(range(first, first + per_message)), [j % 50 for j in range(per_message)],
            origin=(index % sources, index // sources, 0),
        )


async def raw_limit(url: sa.URL, all_batches: list[ReadingBatch], rows_per_transaction: int) -> float:
    """Rows/s of plain aiomysql executemany into ``readings``, committing every ``rows_per_transaction``."""
    rows = [(b.source, t, s) for b in all_batches for t, s in zip(b.times, b.speeds, strict=True)]
    conn = await aiomysql.connect(
        host=url.host, port=url.port or 3306, user=url.username, password=url.password or "", db=url.database
    )
    try:
        started = time.perf_counter()
        async with conn.cursor() as cursor:
            for low in range(0, len(rows), rows_per_transaction):
                await cursor.executemany(RAW_UPSERT, rows[low:low + rows_per_transaction])
                await conn.commit()
        return len(rows) / (time.perf_counter() - started)
    finally:
        conn.close()


async def empty(engine: sa.ext.asyncio.AsyncEngine) -> None:
    async with engine.begin() as conn:
        for table in SINK_TABLES:
            await conn.exec_driver_sql(f"TRUNCATE TABLE {table}")


async def produce(bootstrap: str, all_batches: list[ReadingBatch]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=4_000_000)
    await producer.start()
    try:
        for batch in all_batches:
            await producer.send(VALIDATED, encode_batch(batch), key=batch.source.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def sink_rate(engine: sa.ext.asyncio.AsyncEngine, total: int, timeout: float) -> tuple[float, int]:
    """(rows/s from the first commit to the last, transactions) once ``readings`` holds ``total`` rows."""
    deadline = time.monotonic() + timeout
    async with engine.connect() as conn:
        while True:
            count = (await conn.exec_driver_sql("SELECT COUNT(*) FROM readings")).scalar_one()
            await conn.rollback()
            if count >= total:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the sink wrote only {count} of {total} rows in {timeout}s")
            await asyncio.sleep(0.5)
        first, last, commits = (await conn.exec_driver_sql(
            "SELECT MIN(ingested_at), MAX(ingested_at), COUNT(DISTINCT ingested_at) FROM readings"
        )).one()
        in_first = (await conn.exec_driver_sql(
            "SELECT COUNT(*) FROM readings WHERE ingested_at = (SELECT MIN(ingested_at) FROM readings)"
        )).scalar_one()
    return (total - in_first) / (last - first).total_seconds(), commits


async def run(args: argparse.Namespace) -> None:
    engine = create_engine(args.database_url)
    try:
        await upgrade(engine)
        await empty(engine)
        await compare(engine, args)
    finally:
        await engine.dispose()


async def compare(engine: sa.ext.asyncio.AsyncEngine, args: argparse.Namespace) -> None:
    settings = load_settings()
    all_batches = list(batches(args.rows, args.per_message, args.sources))
    total = sum(len(b) for b in all_batches)
    rows_per_transaction = settings.sink_batch * args.per_message

    raw = [await raw_limit(sa.make_url(args.database_url), all_batches, rows_per_transaction)]
    await empty(engine)

    embedded = EmbeddedBroker() if not os.environ.get("RTD_BROKER") else nullcontext(None)
    with embedded as broker:
        broker_url = broker.url if broker else os.environ["RTD_BROKER"]
        settings = load_settings(broker=broker_url)
        await ensure_topics(settings)
        await produce(settings.bootstrap_servers, all_batches)
        env = {**os.environ, "RTD_BROKER": broker_url, "RTD_DATABASE_URL": args.database_url,
               "RTD_SESSION_TIMEOUT": os.environ.get("RTD_SESSION_TIMEOUT", "6s")}
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rtdstream", "worker", "-l", "warn", "--web-port", str(free_port()),
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            rate, commits = await sink_rate(engine, total, args.timeout)
        finally:
            worker.terminate()
            await asyncio.wait_for(worker.wait(), timeout=60)
    await empty(engine)
    # Measured before and after the sink: the machine's load drifts.
    raw.append(await raw_limit(sa.make_url(args.database_url), all_batches, rows_per_transaction))
    limit = sum(raw) / len(raw)
    print(f"raw limit: {total} rows via aiomysql executemany, {rows_per_transaction} per commit: "
          f"{limit:,.0f} rows/s (runs: {', '.join(f'{r:,.0f}' for r in raw)})")
    print(f"sink: {total} rows from {len(all_batches)} messages in {commits} transactions: {rate:,.0f} rows/s "
          f"({rate / limit:.0%} of the raw limit)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", required=True, help="mysql+aiomysql:// URL of an existing database")
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--per-message", type=int, default=500, help="readings per rtd.validated message")
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
