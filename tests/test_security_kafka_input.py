"""Hostile messages written straight to ``rtd.readings`` by a foreign producer, through a real worker.

Every message is traced by its (partition, offset): each good reading must
reach ``rtd.validated`` (and MySQL) and each bad record ``rtd.dlq`` with its
reason, and the worker must never crash an agent on the way.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker
from rtdstream.models import ReadingBatch, decode_validated
from rtdstream.validation import EARLIEST_TIME_MS, Reason
from tests.support.kafka import json_values, read_topic
from tests.support.mariadb import MariaDB
from tests.support.pipeline import wait_for_rows
from tests.support.processes import ProcessGroup, start_worker

NOW = int(time.time() * 1000)
#: The foreign producer may send what Apache Kafka would refuse; the embedded broker takes it.
MAX_REQUEST = 8 * 1024 * 1024
#: RTD_MAX_MESSAGE_BYTES of the hostile-messages worker: its oversize cases must stay below what
#: Apache Kafka takes at all (message.max.bytes, 1 MiB by default) to reach the worker on both
#: brokers, and its largest accepted cases (the 200 KB junk and nesting bomb) below this.
MAX_MESSAGE_BYTES = 256 * 1024

Reading = tuple[str, int, float]


@dataclass
class Case:
    """One hostile message and what it must yield: readings accepted, DLQ reasons (with multiplicity)."""

    name: str
    value: bytes | None
    key: bytes | None = None
    accepted: list[Reading] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def reading(time_ms: int, speed: object, **extra: object) -> bytes:
    return orjson.dumps({"time": time_ms, "speed": speed, **extra})


def hostile_cases() -> list[Case]:
    t = NOW - 60_000
    utf8 = '{"time":"%d","speed":"16","source":"café"}' % t
    big_readings = b",".join(reading(t + i, 1) for i in range(15_000))  # ~500 KB
    return [
        Case("latin-1", utf8.encode("latin-1"), rejected=["bad_encoding"]),
        Case("utf-16", utf8.encode("utf-16"), rejected=["bad_encoding"]),
        Case("invalid utf-8", b'{"time":"%d","speed":"\xc3\x28"}' % t, rejected=["bad_encoding"]),
        Case("utf-8 BOM", b"\xef\xbb\xbf" + reading(t, 1), rejected=["bad_encoding"]),
        Case("600 KB", reading(t, 1, note="x" * 600_000), rejected=["oversize"]),
        Case("15k readings", b'{"source":"bulk","readings":[' + big_readings + b"]}", rejected=["oversize"]),
        Case("100k junk readings", b'{"source":"bulk","readings":[' + b",".join([b"0"] * 100_000) + b"]}",
             rejected=["wrong_type"] * 100_000),  # one dead letter per bad reading
        Case("1e308", reading(t + 1, 1e308), key=b"huge", accepted=[("huge", t + 1, 1e308)]),
        Case("10^400 number", b'{"time":%d,"speed":1%s}' % (t, b"0" * 400), rejected=["not_finite"]),
        Case("1e400", b'{"time":%d,"speed":1e400}' % t, rejected=["not_finite"]),
        Case("10^400 string", reading(t, "1" + "0" * 400), rejected=["non_numeric"]),
        Case("time 10^400", b'{"time":"1%s","speed":1}' % (b"0" * 400), rejected=["non_numeric"]),
        Case("time 1e308", reading(1e308, 1), rejected=["time_in_future"]),
        Case("NaN", b'{"time":%d,"speed":NaN}' % t, rejected=["not_json"]),
        Case("nesting bomb", b"[" * 100_000 + b"]" * 100_000, rejected=["not_json"]),
        Case("binary junk", random.Random(8).randbytes(4096), rejected=["bad_encoding"]),
        Case("binary zeros", b"\x00" * 64, rejected=["not_json"]),
        Case("empty value", b"", rejected=["not_json"]),
        Case("null value (tombstone)", None, key=b"sensor-t", rejected=["not_json"]),
        Case("null key, valid reading", reading(t + 2, 7), key=None, accepted=[("default", t + 2, 7)]),
        Case("key with weird bytes", reading(t + 3, 8), key=b"\xff\x00../\n", accepted=[("default", t + 3, 8)]),
        Case("key as source", reading(t + 4, 9), key=b"sensor-k", accepted=[("sensor-k", t + 4, 9)]),
        Case("source with SQL", reading(t + 5, 9, source="x'; DROP TABLE readings; --"), rejected=["bad_source"]),
        Case("huge source", reading(t + 6, 9, source="s" * 100_000), rejected=["bad_source"]),
        Case(
            "envelope, good and bad",
            orjson.dumps({"source": "mixed", "readings": [
                {"time": t + 7, "speed": 3}, {"time": t + 8, "speed": -1}, "junk", {"time": t + 9, "speed": "4"},
            ]}),
            accepted=[("mixed", t + 7, 3), ("mixed", t + 9, 4)],
            rejected=["negative_speed", "wrong_type"],
        ),
    ]


async def produce_traced(bootstrap: str, cases: list) -> dict[tuple[int, int], object]:
    """Produce each case's message; {(partition, offset): case}."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=MAX_REQUEST)
    await producer.start()
    try:
        sent = [await producer.send(topics.READINGS, case.value, key=case.key) for case in cases]
        placed = await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return {(meta.partition, meta.offset): case for meta, case in zip(placed, cases, strict=True)}


@dataclass
class Outcome:
    """What the worker made of each traced input message."""

    accepted: dict[tuple[int, int], list[Reading]]
    rejected: dict[tuple[int, int], list[str]]


async def outcome(bootstrap: str, readings: int, dead: int) -> Outcome:
    """rtd.validated and rtd.dlq, grouped by the rtd.readings message each record came from."""
    def batches(records) -> list[ReadingBatch]:
        return [b for b in map(decode_validated, (r.value for r in records)) if isinstance(b, ReadingBatch)]

    validated = await read_topic(
        bootstrap, topics.VALIDATED, until=lambda rs: sum(map(len, batches(rs))) >= readings, timeout=90
    )
    dlq = await read_topic(bootstrap, topics.DLQ, until=lambda rs: len(rs) >= dead, timeout=90)
    accepted: dict[tuple[int, int], list[Reading]] = {}
    for batch in batches(validated):
        readings = list(zip(batch.times, batch.speeds, strict=True))
        for offset, _index, count in batch.origin_parts():  # a batch gathers several input messages
            part, readings = readings[:count], readings[count:]
            accepted.setdefault((batch.origin[0], offset), []).extend((batch.source, t, s) for t, s in part)
    rejected: dict[tuple[int, int], list[str]] = {}
    for record in json_values(dlq):
        assert record["stage"] == "validate" and record["topic"] == topics.READINGS, record
        rejected.setdefault((record["partition"], record["offset"]), []).append(record["reason"])
    return Outcome(accepted, rejected)


def assert_no_agent_crash(log: str) -> None:
    assert "Traceback" not in log, log[log.find("Traceback") - 2000:][:6000]
    assert "crashed" not in log.lower()


async def test_hostile_messages_end_in_the_dlq_with_a_reason_and_good_ones_in_mysql(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    env = {**rtd_env, "RTD_DATABASE_URL": mysql_url, "RTD_MAX_MESSAGE_BYTES": str(MAX_MESSAGE_BYTES)}
    worker, _ = await start_worker(processes, env)
    cases = hostile_cases()
    assert all(len(c.value or b"") < 1_000_000 for c in cases)  # Apache Kafka takes every one
    traced = await produce_traced(broker.bootstrap_servers, cases)
    good = sum(len(c.accepted) for c in cases)
    result = await outcome(broker.bootstrap_servers, good, sum(len(c.rejected) for c in cases))

    for position, case in traced.items():
        assert sorted(result.accepted.get(position, [])) == sorted(case.accepted), case.name
        assert Counter(result.rejected.get(position, [])) == Counter(case.rejected), case.name
    assert set(result.accepted) | set(result.rejected) <= set(traced)

    database = mysql_url.rsplit("/", 1)[1]
    stored = await wait_for_rows(mariadb, database, good, timeout=60)
    assert sorted(stored) == sorted((s, t, float(v)) for c in cases for s, t, v in c.accepted)
    assert worker.is_running()
    assert_no_agent_crash(worker.log_text())


# ---- generated traffic: hypothesis drafts messages whose outcome is known by construction ----

#: Where a drafted reading's time goes; rendering puts a unique time there, so every good
#: reading is one distinct row in MySQL.
TIME = "<time>"
#: Messages drafted by hypothesis for the generated-traffic test.
GENERATED_MESSAGES = 1500

#: The expected reasons of junk bytes: one dead letter, with whichever reason fits.
ANY_REASON = "any"

int64 = st.integers(-(2**63), 2**63 - 1)
source_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)


@dataclass(frozen=True)
class Draft:
    """A reading (or anything in its place) and what validation must make of it."""

    value: object
    reason: str | None = None  # None: a good reading
    speed: float | None = None  # the stored speed of a good reading
    time_style: str = "int"


def good_speeds() -> st.SearchStrategy[tuple[object, float]]:
    numbers = st.integers(0, 50) | st.floats(0, 1e6, allow_nan=False, allow_infinity=False)
    return st.one_of(numbers.map(lambda v: (v, v)), numbers.map(lambda v: (str(v), v)))


def good_readings() -> st.SearchStrategy[Draft]:
    def draft(speed: tuple[object, float], source: str | None, style: str) -> Draft:
        fields = {"time": TIME, "speed": speed[0], **({"source": source} if source else {})}
        return Draft(fields, None, speed[1], style)

    return st.builds(draft, good_speeds(), st.none() | source_ids, st.sampled_from(["int", "str", "float"]))


def bad_readings() -> st.SearchStrategy[Draft]:
    def bad(reason: str, **fields: object) -> st.SearchStrategy[Draft]:
        return st.fixed_dictionaries(fields).map(lambda value: Draft(value, reason))

    not_numbers = st.none() | st.booleans() | st.lists(int64, max_size=3) | st.just({"v": 1})
    return st.one_of(
        bad("missing_field", speed=st.just(1)),
        bad("missing_field", time=st.just(TIME)),
        bad("negative_speed", time=st.just(TIME), speed=st.integers(-1000, -1)),
        # No letters of nan, inf or e-notation: none of these parse as a number.
        bad("non_numeric", time=st.just(TIME), speed=st.text("bcdgh!?# ", min_size=1, max_size=10)),
        bad("non_numeric", time=st.just(TIME), speed=st.text(st.characters(min_codepoint=0x100, exclude_categories=["Cs"]), min_size=1)),
        bad("wrong_field_type", time=st.just(TIME), speed=not_numbers),
        bad("time_too_old", time=st.integers(0, EARLIEST_TIME_MS - 1), speed=st.just(1)),
        bad("time_in_future", time=st.integers(NOW + 2 * 86_400_000, NOW + 10**12), speed=st.just(1)),
        bad("bad_source", time=st.just(TIME), speed=st.just(1),
            source=st.text(" /'\"$;", min_size=1, max_size=5) | st.just("x" * 65)),
        (int64 | st.text(max_size=5) | st.lists(int64, max_size=2)).map(
            lambda value: Draft(value, "wrong_type")
        ),
    )


#: Half good, half bad. (``good | bad`` would flatten into one choice among eleven
#: strategies and draft about 1,000 good readings, too few to count on.)
readings_drafts = st.booleans().flatmap(lambda good: good_readings() if good else bad_readings())
keys = st.none() | source_ids.map(str.encode) | st.binary(max_size=8).map(lambda b: b"\xff" + b)


def _is_json_object(data: bytes) -> bool:
    try:
        return isinstance(orjson.loads(data), dict)
    except orjson.JSONDecodeError:
        return False


#: (kind, key, envelope source, drafts or junk bytes)
messages = st.one_of(
    st.tuples(st.just("single"), keys, st.none(), readings_drafts.map(lambda d: [d])),
    st.tuples(st.just("envelope"), keys, st.none() | source_ids, st.lists(readings_drafts, min_size=1, max_size=12)),
    st.tuples(st.just("junk"), keys, st.none(), st.binary(max_size=300).filter(lambda b: not _is_json_object(b))),
)


def draft_messages(count: int) -> list[tuple]:
    """``count`` messages drafted by hypothesis: its generator, none of its shrinking (no per-case oracle)."""
    drafted: list[tuple] = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(messages)
    def collect(message: tuple) -> None:
        drafted.append(message)

    collect()
    return drafted


@dataclass
class TimeCounter:
    next: int

    def take(self) -> int:
        self.next += 1
        return self.next


def render(message: tuple, times: TimeCounter) -> Case:
    """The bytes of a drafted message and its expected outcome, with a unique time in each reading."""
    kind, key, envelope_source, body = message
    if kind == "junk":
        return Case(kind, body, key=key, rejected=[ANY_REASON])
    key_source = key.decode() if key and not key.startswith(b"\xff") else "default"
    case = Case(kind, None, key=key)
    values = []
    for draft in body:
        value = draft.value
        if draft.reason is None or (isinstance(value, dict) and value.get("time") == TIME):
            time_ms = times.take()
            value = {**value, "time": {"int": time_ms, "str": str(time_ms), "float": float(time_ms)}[draft.time_style]}
        values.append(value)
        if draft.reason is None:
            case.accepted.append((value.get("source", envelope_source or key_source), time_ms, draft.speed))
        else:
            case.rejected.append(draft.reason)
    if kind == "single":
        case.value = orjson.dumps(values[0])
    else:
        case.value = orjson.dumps({"readings": values, **({"source": envelope_source} if envelope_source else {})})
    return case


async def test_thousands_of_generated_messages_each_end_where_they_belong(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    # Hypothesis drafts (about 10 s) while the worker starts.
    (worker, _), drafted = await asyncio.gather(
        start_worker(processes, {**rtd_env, "RTD_DATABASE_URL": mysql_url}),
        asyncio.to_thread(draft_messages, GENERATED_MESSAGES),
    )
    times = TimeCounter(NOW - 3_600_000)
    cases = [render(message, times) for message in drafted]
    traced = await produce_traced(broker.bootstrap_servers, cases)
    good = sum(len(c.accepted) for c in cases)
    result = await outcome(broker.bootstrap_servers, good, sum(len(c.rejected) for c in cases))

    kinds = Counter()
    for position, case in traced.items():
        assert sorted(result.accepted.get(position, [])) == sorted(case.accepted), case
        reasons = result.rejected.get(position, [])
        if case.rejected == [ANY_REASON]:  # junk bytes: one dead letter, whatever the reason
            assert len(reasons) == 1 and reasons[0] in set(Reason), (case, reasons)
        else:
            assert Counter(reasons) == Counter(case.rejected), case
        kinds.update(reasons)
    assert good > 1000 and sum(kinds.values()) > 1000, kinds  # both kinds in quantity

    stored = await wait_for_rows(mariadb, mysql_url.rsplit("/", 1)[1], good, timeout=60)
    assert sorted(stored) == sorted((s, t, float(v)) for c in cases for s, t, v in c.accepted)
    assert worker.is_running()
    assert_no_agent_crash(worker.log_text())


pytestmark = pytest.mark.timeout(240)
