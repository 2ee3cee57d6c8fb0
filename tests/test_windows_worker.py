"""The window agent in a real worker on the embedded broker: scripted results, late data, partials, idle close."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import orjson

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker
from rtdstream.models import IdleTick, decode_validated, encode_batch, encode_tick
from tests.support.kafka import create_topics, json_values, produce_at, read_topic
from tests.support.processes import ProcessGroup, start_worker, until
from tests.support.windows import HOUR_AGO, SCRIPT, SCRIPT_LATE, SCRIPT_WINDOWS, T0

SCRIPT_ENV = {"RTD_WINDOWS": "1s,10s", "RTD_HOPPING_WINDOW": "4s/2s", "RTD_GRACE": "2s"}


async def get_json(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.json()


def window_key(record: dict) -> tuple[str, str, int]:
    return record["source"], record["window"], record["start"] - T0


async def test_scripted_readings_give_exact_windows_through_the_worker(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    env = {**rtd_env, **SCRIPT_ENV, "RTD_IDLE_TIMEOUT": "2s"}
    await create_topics(broker, env)
    await produce_at(
        broker.bootstrap_servers,
        topics.VALIDATED,
        (
            (partition, None, encode_tick(message))
            if isinstance(message, IdleTick)
            else (partition, message.source.encode(), encode_batch(message))
            for partition, message in SCRIPT
        ),
    )
    # Not what rtdstream writes there: dead-lettered, and the agent keeps going.
    await produce_at(broker.bootstrap_servers, topics.VALIDATED, [(2, None, b"{not json"), (3, None, b"[1, 2]")])
    _, web = await start_worker(processes, env)

    # The last windows of each partition close only when the worker notices it is idle.
    records = await read_topic(
        broker.bootstrap_servers, topics.WINDOWS, until=lambda rs: len(rs) >= len(SCRIPT_WINDOWS), timeout=60
    )
    windows = json_values(records)
    assert len(windows) == len(SCRIPT_WINDOWS)  # each exactly once: no crash here
    assert {
        window_key(w): (w["count"], w["min"], w["max"], w["sum"], w["first_time"] - T0, w["last_time"] - T0,
                        w["last_speed"])
        for w in windows
    } == SCRIPT_WINDOWS
    a_10s = next(w for w in windows if window_key(w) == ("a", "10s", 0))
    assert a_10s == {
        "source": "a", "window": "10s", "size": 10000, "step": 10000, "start": T0, "end": T0 + 10000,
        "count": 6, "min": 7, "max": 50, "sum": 157, "mean": 157 / 6,
        "first_time": T0 + 100, "last_time": T0 + 5100, "last_speed": 7,
    }
    assert {(w["window"], w["size"], w["step"]) for w in windows} == {
        ("1s", 1000, 1000), ("10s", 10000, 10000), ("4s/2s", 4000, 2000)
    }
    assert all(r.key == w["source"].encode() for r, w in zip(records, windows))

    def from_windows(records) -> list[dict]:
        return [d for d in json_values(records) if d["stage"] == "windows"]

    dlq = from_windows(
        await read_topic(broker.bootstrap_servers, topics.DLQ, until=lambda rs: len(from_windows(rs)) >= 4)
    )
    late = [d for d in dlq if d["reason"] == "late"]
    assert sorted((d["source"], d["time"] - T0, d["lateness_ms"], tuple(d["windows"])) for d in late) == sorted(
        SCRIPT_LATE
    )
    assert {d["topic"] for d in late} == {topics.VALIDATED}
    assert orjson.loads(late[0]["raw"])["source"] == late[0]["source"]
    assert sorted((d["reason"], d["partition"], d["raw"]) for d in dlq if d["reason"] != "late") == [
        ("not_json", 2, "{not json"), ("wrong_type", 3, "[1, 2]")
    ]

    # The worker put a tick into partition 0 (partition 1 got the scripted one first).
    validated = await read_topic(broker.bootstrap_servers, topics.VALIDATED, until=lambda rs: False, timeout=2)
    ticks = [(r.partition, decode_validated(r.value)) for r in validated if b'"tick"' in r.value]
    assert (0, IdleTick(0, T0 + 5100)) in ticks

    status, report = await get_json(f"{web}/windows/open/")
    assert status == 200
    # Sources with neither open windows nor late readings are not listed.
    assert {s: (v["late"], v["windows"]) for s, v in report["sources"].items()} == {"a": (1, []), "c": (1, [])}
    counters = (await get_json(f"{web}/counters/"))[1]
    assert counters["rtd_late_readings_total"] == 2
    emitted = {label: counters[f'rtd_windows_emitted_total{{window="{label}"}}'] for label in ("1s", "10s", "4s/2s")}
    assert emitted == {"1s": 8, "10s": 4, "4s/2s": 11}


async def test_open_windows_are_readable_live_and_closed_when_the_source_stops(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    env = {**rtd_env, "RTD_IDLE_TIMEOUT": "6s", "RTD_PARTIAL_INTERVAL": "250ms"}
    _, web = await start_worker(processes, env)
    # A sensor sends 120 readings over 12 s of event time through rtd.readings, then stops.
    envelopes = [
        orjson.dumps({"source": "s1", "readings": [{"time": HOUR_AGO + 100 * i, "speed": i % 50}]}) for i in range(120)
    ]
    await produce_at(broker.bootstrap_servers, topics.READINGS, ((0, b"s1", e) for e in envelopes))

    def all_counted(report: dict) -> bool:
        windows = report.get("sources", {}).get("s1", {}).get("windows", [])
        return any(w["window"] == "60s" and w["count"] == 120 for w in windows)

    status, report = await poll_json(f"{web}/windows/open/s1/", all_counted)
    assert status == 200 and all_counted(report)
    open_windows = {(w["window"], w["start"] - HOUR_AGO): w for w in report["sources"]["s1"]["windows"]}
    # Newest reading 11900, watermark 9900: 1s windows from [9000, 10000) on are open, and both 10s windows.
    assert sorted(start for window, start in open_windows if window == "1s") == [9000, 10000, 11000]
    assert open_windows[("10s", 0)]["count"] == 100
    assert open_windows[("10s", 10000)]["count"] == 20
    assert open_windows[("10s", 10000)]["last_speed"] == 119 % 50
    assert report["sources"]["s1"]["late"] == 0
    assert (await get_json(f"{web}/windows/open/nobody/"))[0] == 404

    closed = await read_topic(
        broker.bootstrap_servers, topics.WINDOWS,
        until=lambda rs: any(orjson.loads(r.value)["window"] == "60s" for r in rs), timeout=60,
    )
    by_key = {(w["window"], w["start"] - HOUR_AGO): w for w in json_values(closed)}
    assert by_key[("60s", 0)]["count"] == 120 and by_key[("60s", 0)]["sum"] == sum(i % 50 for i in range(120))
    assert by_key[("10s", 10000)]["count"] == 20
    assert len([k for k in by_key if k[0] == "1s"]) == 12

    partials = await read_topic(
        broker.bootstrap_servers, topics.PARTIALS,
        until=lambda rs: rs and orjson.loads(rs[-1].value)["windows"] == [], timeout=30,
    )
    values = json_values(partials)
    assert {p["source"] for p in values} == {"s1"}
    assert values[-1]["windows"] == []  # the idle close cleared the open windows
    assert any(w["window"] == "60s" and w["count"] == 120 for p in values for w in p["windows"])
    # At most one update per 250 ms (1 s of slack for producer batching), not one per reading.
    span_ms = partials[-1].timestamp - partials[0].timestamp
    assert len(partials) - 1 <= (span_ms + 1000) / 250
    assert len(partials) < len(envelopes)


async def poll_json(url: str, until_body: Callable[[dict], bool], timeout: float = 30.0) -> tuple[int, dict]:
    """GET ``url`` until its JSON body satisfies ``until_body``: (status, that body)."""
    answer: tuple[int, dict] = (0, {})

    async def answered() -> bool:
        nonlocal answer
        answer = await get_json(url)
        return until_body(answer[1])

    await until(answered, timeout=timeout, what=f"{url} to answer as expected")
    return answer
