"""Where each source's stream stands: what the broker already holds, as resume positions.

After a crash the bridge has no memory of what it delivered, but the topic
does: the newest reading time of each source in the tail of ``rtd.readings``
is where a resumed simulator session must pick up, so that nothing read but
undelivered is lost and nothing delivered comes twice.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode, urlsplit, urlunsplit

import orjson
from aiokafka import AIOKafkaConsumer

from rtdstream.config import KafkaSettings
from rtdstream.kafka_security import client_options
from rtdstream.lag import topic_partitions
from rtdstream.topics import READINGS

#: How many of the newest messages per partition to read back.
TAIL_MESSAGES = 2000


def time_of(record: object) -> int | None:
    """A record's ``time`` as epoch ms when it is usable as a position, else None."""
    if not isinstance(record, dict):
        return None
    value = record.get("time")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 16:
        return int(value)
    return None


async def recover_positions(settings: KafkaSettings) -> dict[str, int]:
    """Newest reading time per source in the tail of every ``rtd.readings`` partition."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    positions: dict[str, int] = {}
    try:
        partitions = await topic_partitions(consumer, [READINGS])
        if not partitions:
            return positions
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.beginning_offsets(partitions)
        for tp in partitions:
            if ends[tp] > starts[tp]:
                consumer.seek(tp, max(starts[tp], ends[tp] - TAIL_MESSAGES))
        remaining = {tp for tp in partitions if ends[tp] > starts[tp]}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    _note_envelope(record.value, positions)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            if not batches:
                break
    finally:
        await consumer.stop()
    return positions


def _note_envelope(value: bytes | None, positions: dict[str, int]) -> None:
    try:
        envelope = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return
    if not isinstance(envelope, dict) or not isinstance(envelope.get("readings"), list):
        return
    source = envelope.get("source")
    for reading in envelope["readings"]:
        reading_source = reading.get("source", source) if isinstance(reading, dict) else source
        time = time_of(reading)
        if isinstance(reading_source, str) and time is not None and time > positions.get(reading_source, -1):
            positions[reading_source] = time


def resume_url(url: str, session: str, default_source: str, positions: dict[str, int]) -> str:
    """``url`` with the simulator's resume parameters (other servers ignore them)."""
    since = {("" if source == default_source else source): time for source, time in positions.items()}
    parts = urlsplit(url)
    extra = urlencode({"session": session, "since": json.dumps(since, separators=(",", ":"))})
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))
