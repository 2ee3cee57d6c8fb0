"""``rtdstream web`` as a process on the embedded broker, with python-socketio clients.

The topics are fed directly (what the worker would write), so each test is
about the web view alone: subscriptions and acks, last values, window and
partial events, the original newData payload, rate limits, auth, CORS,
metrics, health and a clean stop.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson
import pytest
import socketio
import sqlalchemy as sa

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker, free_port
from rtdstream.models import ReadingBatch, dead_letter, encode_batch
from rtdstream.sink import schema
from rtdstream.sink.database import create_engine
from rtdstream.sink.migrate import upgrade
from tests.support.apache_kafka import ApacheKafka
from tests.support.kafka import produce_at
from tests.support.processes import ProcessGroup
from tests.support.web import (
    RecordingClient,
    metric_samples,
    now_ms,
    partition_mate,
    produce_keyed,
    produce_readings,
    saw_source,
    start_web,
    until_web_knows,
    window_record,
)


async def test_subscribe_acks_last_value_history_and_routes_events_by_source(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    _, url = start_web(processes, rtd_env)
    t0 = now_ms()
    await produce_readings(
        broker.bootstrap_servers,
        [ReadingBatch("s1", [t0, t0 + 1], [10, 11]), ReadingBatch("s2", [t0], [20])],
    )
    await until_web_knows(url, ["s1", "s2"])
    client = RecordingClient()
    await client.connect(url)
    await client.wait_for(lambda: bool(client.of("sources")))
    assert client.of("sources")[0] == [
        {"source": "s1", "time": t0 + 1, "speed": 11},
        {"source": "s2", "time": t0, "speed": 20},
    ]

    ack = await client.sio.call("subscribe", {"source": "s1"})
    assert ack == {
        "ok": True,
        "source": "s1",
        "last": {"source": "s1", "time": t0 + 1, "speed": 11},
        "history": [{"time": t0, "speed": 10}, {"time": t0 + 1, "speed": 11}],
        "windows": [],
    }
    assert (await client.sio.call("subscribe", "s2"))["ok"]  # a plain string works too
    unknown = await client.sio.call("subscribe", {"source": "nope"})
    assert unknown["ok"] is False and "unknown source" in unknown["error"]
    malformed = await client.sio.call("subscribe", {"sensor": "s1"})
    assert malformed["ok"] is False and "source" in malformed["error"]
    assert await client.sio.call("unsubscribe", {"source": "s2"}) == {"ok": True, "source": "s2"}

    t1 = now_ms()
    # After s2's reading, a new source on its partition: once the client saw that source, anything
    # the web view sent it for s2's reading has arrived too.
    marker = partition_mate("s2", int(rtd_env["RTD_PARTITIONS"]))
    await produce_readings(
        broker.bootstrap_servers,
        [ReadingBatch("s1", [t1], [12]), ReadingBatch("s2", [t1], [21]), ReadingBatch(marker, [t1], [0])],
    )
    await client.wait_for(
        lambda: bool(client.of("readings")) and bool(client.of("reading")) and saw_source(client, marker)
    )
    assert client.of("readings") == [{"source": "s1", "time": [t1], "speed": [12]}]
    assert client.of("reading") == [{"source": "s1", "time": t1, "speed": 12}]
    # newData goes to everyone, in the original shape, for one source: here the smallest id
    assert client.of("newData") == [{"time": str(t1), "speed": "12"}]
    await client.disconnect()


async def store_readings(database_url: str, readings: list[tuple[str, int, float]]) -> None:
    engine = create_engine(database_url, writer=True)
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(schema.readings),
            [{"source": s, "time": t, "speed": v, "ingested_at": schema.utc_now()} for s, t, v in readings],
        )
    await engine.dispose()


async def test_new_data_carries_the_configured_source_else_the_smallest_known_id(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    t0 = now_ms()
    await store_readings(rtd_env["RTD_DATABASE_URL"], [("c", t0 - 5000, 1.0), ("b", t0 - 5000, 2.0)])
    _, url = start_web(processes, rtd_env)
    _, configured_url = start_web(processes, {**rtd_env, "RTD_NEWDATA_SOURCE": "c"}, name="web-c")
    legacy, configured = RecordingClient(), RecordingClient()
    await legacy.connect(url)
    await configured.connect(configured_url)

    async def send_and_settle(batches: list[ReadingBatch], marker: str) -> None:
        # A new source's `sources` event leaves after the newData decisions of everything read before it.
        await produce_readings(broker.bootstrap_servers, batches)
        await produce_readings(broker.bootstrap_servers, [ReadingBatch(marker, [t0], [0])])
        for client in (legacy, configured):
            await client.wait_for(lambda c=client: saw_source(c, marker))

    # b is the smallest stored id: a restarted web view picks the same source as before
    await send_and_settle([ReadingBatch("c", [t0], [3]), ReadingBatch("b", [t0], [4])], "x1")
    assert legacy.of("newData") == [{"time": str(t0), "speed": "4"}]
    assert configured.of("newData") == [{"time": str(t0), "speed": "3"}]
    # a smaller id that appears later takes over; the configured source stays
    await send_and_settle([ReadingBatch("a", [t0 + 1], [5])], "x2")
    await send_and_settle([ReadingBatch("b", [t0 + 1], [6])], "x3")
    assert legacy.of("newData")[1:] == [{"time": str(t0 + 1), "speed": "5"}]
    assert configured.of("newData") == [{"time": str(t0), "speed": "3"}]
    for client in (legacy, configured):
        await client.disconnect()


async def test_window_and_partial_events_reach_only_subscribers(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    _, url = start_web(processes, rtd_env)
    t0 = now_ms()
    await produce_readings(broker.bootstrap_servers, [ReadingBatch("s1", [t0], [5]), ReadingBatch("s2", [t0], [6])])
    await until_web_knows(url, ["s1", "s2"])
    subscriber, other = RecordingClient(), RecordingClient()
    await subscriber.connect(url)
    await other.connect(url)
    assert (await subscriber.sio.call("subscribe", "s1"))["ok"]
    assert (await other.sio.call("subscribe", "s2"))["ok"]

    window = window_record("s1", "10s", 10_000, t0 - t0 % 10_000, [3, 5, 7])
    partial = {"source": "s1", "windows": [{"window": "10s", "start": window["start"] + 10_000, "count": 1}]}
    # Then s2's, on the same partitions: once ``other`` has those, s1's would have reached it before.
    window_2 = {**window, "source": "s2"}
    partial_2 = {**partial, "source": "s2"}
    await produce_at(broker.bootstrap_servers, topics.WINDOWS, [(0, None, orjson.dumps(w)) for w in (window, window_2)])
    await produce_at(
        broker.bootstrap_servers, topics.PARTIALS, [(0, None, orjson.dumps(p)) for p in (partial, partial_2)]
    )
    await subscriber.wait_for(lambda: bool(subscriber.of("window")) and bool(subscriber.of("partial")))
    await other.wait_for(lambda: bool(other.of("window")) and bool(other.of("partial")))
    assert subscriber.of("window") == [window]
    assert subscriber.of("partial") == [partial]
    assert other.of("window") == [window_2] and other.of("partial") == [partial_2]

    # a later subscriber gets the newest aggregate per window in its ack
    late = RecordingClient()
    await late.connect(url)
    assert (await late.sio.call("subscribe", "s1"))["windows"] == [window]
    for client in (subscriber, other, late):
        await client.disconnect()


async def test_new_data_keeps_the_original_payload_and_a_client_can_opt_out(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    _, url = start_web(processes, rtd_env)
    legacy, typed = RecordingClient(), RecordingClient()
    await legacy.connect(url)
    await typed.connect(url, auth={"newData": False})
    t0 = now_ms()
    # the simulator's one reading a second (here faster, but under the rate limit): all go out
    for i in range(5):
        await produce_readings(broker.bootstrap_servers, [ReadingBatch("default", [t0 + 200 * i], [i * 7])])
        await asyncio.sleep(0.2)
    await legacy.wait_for(lambda: len(legacy.of("newData")) == 5)
    assert legacy.of("newData") == [{"time": str(t0 + 200 * i), "speed": str(i * 7)} for i in range(5)]
    # connected before the source existed: told about it when it appeared
    assert legacy.of("sources") == [[], [{"source": "default", "time": t0, "speed": 0}]]
    assert all(list(data) == ["time", "speed"] for data in legacy.of("newData"))
    assert typed.of("newData") == []
    await legacy.disconnect()
    await typed.disconnect()


async def test_live_readings_come_from_rtd_readings_validated_by_the_web_view_itself(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    # No worker runs: what reaches the clients was validated by the web view on its one hop.
    _, url = start_web(processes, rtd_env)
    client = RecordingClient()
    await client.connect(url)
    t0 = now_ms()
    await produce_keyed(broker.bootstrap_servers, topics.READINGS, [
        (b"s1", orjson.dumps({"time": str(t0), "speed": "-3"})),  # negative speed: rejected
        (b"s1", orjson.dumps({"time": "yesterday", "speed": "3"})),  # no time: rejected
        (b"s1", b"{not json"),
        (b"s1", orjson.dumps({"source": "s1", "readings": [{"time": t0, "speed": 4}, {"time": t0 + 1, "speed": -1}]})),
        (b"s1", orjson.dumps({"time": str(t0 + 2), "speed": "16"})),  # the original's shape, one reading
    ])
    await client.wait_for(lambda: client.of("newData")[-1:] == [{"time": str(t0 + 2), "speed": "16"}])
    # Only valid readings; messages that came in one fetch go out as the newest of them (README, Web view).
    valid = [{"time": str(t0), "speed": "4"}, {"time": str(t0 + 2), "speed": "16"}]
    assert client.of("newData") in (valid, valid[1:])
    await client.disconnect()


async def test_with_live_input_validated_live_readings_come_from_the_worker_s_output(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    _, url = start_web(processes, {**rtd_env, "RTD_LIVE_INPUT": "validated"})
    client = RecordingClient()
    await client.connect(url)
    t0 = now_ms()
    await produce_readings(broker.bootstrap_servers, [ReadingBatch("s1", [t0], [1])])  # rtd.readings: not read
    await produce_keyed(
        broker.bootstrap_servers, topics.VALIDATED,
        [(b"s1", encode_batch(ReadingBatch("s1", [t0 + 1], [2], origin=(0, 0, 0))))],
    )
    await client.wait_for(lambda: bool(client.of("newData")))
    assert client.of("newData") == [{"time": str(t0 + 1), "speed": "2"}]
    await client.disconnect()


async def test_a_quiet_source_s_batch_leaves_at_once_and_a_busy_one_waits_for_the_interval(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    _, url = start_web(processes, {**rtd_env, "RTD_LIVE_BATCH_INTERVAL": "1h"})
    t0 = now_ms()
    await produce_readings(broker.bootstrap_servers, [ReadingBatch("s1", [t0], [1])])
    client = RecordingClient()
    await client.connect(url)
    await client.wait_for(lambda: bool(client.of("sources")))
    assert (await client.sio.call("subscribe", "s1"))["ok"]
    # the source sent no batch in the last hour: its reading's batch leaves at once, not an hour later
    await produce_readings(broker.bootstrap_servers, [ReadingBatch("s1", [t0 + 1], [2])])
    await client.wait_for(lambda: bool(client.of("readings")))
    assert client.of("readings") == [{"source": "s1", "time": [t0 + 1], "speed": [2]}]
    # the next one waits for the interval; its live `reading`, sent after the batch decision, proves it was made
    await asyncio.sleep(0.15)  # past RTD_LIVE_MAX_RATE's 100 ms, so the live event is not coalesced
    await produce_readings(broker.bootstrap_servers, [ReadingBatch("s1", [t0 + 2], [3])])
    await client.wait_for(lambda: {"source": "s1", "time": t0 + 2, "speed": 3} in client.of("reading"))
    assert client.of("readings") == [{"source": "s1", "time": [t0 + 1], "speed": [2]}]
    await client.disconnect()


async def test_a_fast_source_is_coalesced_live_but_batches_carry_every_reading(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    _, url = start_web(processes, {**rtd_env, "RTD_LIVE_MAX_RATE": "5"})
    t0 = now_ms()
    await produce_readings(broker.bootstrap_servers, [ReadingBatch("fast", [t0], [0])])
    await until_web_knows(url, ["fast"])
    client = RecordingClient()
    await client.connect(url)
    assert (await client.sio.call("subscribe", "fast"))["ok"]

    loop = asyncio.get_running_loop()
    started = loop.time()
    sent = 0
    while loop.time() - started < 2.0:  # 2,000 readings in about 2 s, 20 per message
        await produce_readings(
            broker.bootstrap_servers,
            [ReadingBatch("fast", [t0 + 1 + sent + j for j in range(20)], [j for j in range(20)]) for _ in range(1)],
        )
        sent += 20
    duration = loop.time() - started
    await client.wait_for(lambda: sum(len(b["time"]) for b in client.of("readings")) >= sent)
    await asyncio.sleep(0.5)

    batched = [t for batch in client.of("readings") for t in batch["time"]]
    assert batched == [t0 + 1 + i for i in range(sent)]  # all, in order, once
    live = client.of("reading")
    assert 2 <= len(live) <= 5 * (duration + 1) + 1  # at most RTD_LIVE_MAX_RATE a second
    assert live[-1]["time"] == t0 + sent  # the newest value always goes out
    samples = await metric_samples(url)
    assert samples[("rtd_web_live_dropped_total", (("event", "reading"), ("reason", "coalesced")))] >= sent - len(live)
    await client.disconnect()


async def test_a_restarted_web_view_serves_last_values_and_history_from_the_database(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    t0 = now_ms() - 60_000
    engine = create_engine(rtd_env["RTD_DATABASE_URL"], writer=True)
    await upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(schema.readings),
            [{"source": "stored", "time": t0 + i, "speed": float(i), "ingested_at": schema.utc_now()} for i in range(200)],
        )
        await conn.execute(
            sa.insert(schema.window_aggregates),
            [
                {
                    "source": "stored", "window": "1s", "size_ms": 1000, "step_ms": 1000, "start": t0, "end": t0 + 1000,
                    "count": 200, "min": 0.0, "max": 199.0, "sum": 19900.0, "mean": 99.5,
                    "first_time": t0, "last_time": t0 + 199, "last_speed": 199.0, "updated_at": schema.utc_now(),
                }
            ],
        )
    await engine.dispose()

    _, url = start_web(processes, rtd_env)
    client = RecordingClient()
    await client.connect(url)
    await client.wait_for(lambda: bool(client.of("sources")))
    assert client.of("sources")[0] == [{"source": "stored", "time": t0 + 199, "speed": 199.0}]
    ack = await client.sio.call("subscribe", "stored")
    assert ack["ok"] and ack["last"]["time"] == t0 + 199
    assert [r["time"] for r in ack["history"]] == [t0 + i for i in range(80, 200)]  # RTD_LIVE_HISTORY=120
    assert ack["windows"][0]["count"] == 200 and ack["windows"][0]["window"] == "1s"
    await client.disconnect()


async def test_auth_token_guards_socket_io_and_the_api_but_not_health_or_metrics(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    _, url = start_web(processes, {**rtd_env, "RTD_AUTH_TOKEN": "s3cret"})

    for auth in (None, {"token": "wrong"}, {"newData": False}):
        refused = RecordingClient()
        with pytest.raises(socketio.exceptions.ConnectionError):
            await refused.connect(url, auth=auth)
        assert refused.of("connect_error") == [{"message": "unauthorized: missing or wrong token"}]
    by_auth = await RecordingClient().connect(url, auth={"token": "s3cret"})
    by_query = await RecordingClient().connect(f"{url}?token=s3cret")
    await by_auth.disconnect()
    await by_query.disconnect()

    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            async with http.get(f"{url}/api/sources", headers=headers) as response:
                assert response.status == 401
                assert "bearer token" in (await response.json())["error"]
        async with http.get(f"{url}/api/sources", headers={"Authorization": "Bearer s3cret"}) as response:
            assert response.status == 200
            assert await response.json() == {"sources": []}
        async with http.get(f"{url}/healthz") as response:
            assert response.status in (200, 503)
            assert "checks" in await response.json()
        async with http.get(f"{url}/metrics") as response:
            assert response.status == 200
            assert "rtd_web_clients" in await response.text()
        async with http.get(f"{url}/") as response:
            assert response.status == 200


async def test_cors_allows_the_configured_origin_and_the_page_itself(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    _, url = start_web(processes, rtd_env)  # default RTD_CORS_ORIGINS: http://localhost:5173
    handshake = f"{url}/socket.io/?EIO=4&transport=polling"
    async with aiohttp.ClientSession() as http:
        async with http.get(handshake, headers={"Origin": "http://localhost:5173"}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
            assert (await response.text()).startswith("0{")
        async with http.get(handshake, headers={"Origin": url}) as response:
            assert response.status == 200
        async with http.get(handshake, headers={"Origin": "http://evil.example"}) as response:
            assert response.status == 400
        preflight = {"Origin": "http://localhost:5173", "Access-Control-Request-Method": "GET",
                     "Access-Control-Request-Headers": "Authorization"}
        async with http.options(f"{url}/api/readings", headers=preflight) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"


async def test_metrics_count_the_pipeline_from_the_topics(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    _, url = start_web(processes, rtd_env)
    t0 = now_ms()
    await produce_readings(broker.bootstrap_servers, [ReadingBatch("m", [t0 + i for i in range(7)], [1] * 7)])
    rejects = [dead_letter("not_json", b"{", stage="validate")] * 3 + [dead_letter("late", b"{}", stage="windows")]
    await produce_keyed(broker.bootstrap_servers, topics.DLQ, ((None, r) for r in rejects))
    # records nobody should have written are skipped and counted, not fatal
    await produce_keyed(broker.bootstrap_servers, topics.WINDOWS, [(None, b"not json"), (None, orjson.dumps([1]))])
    client = await RecordingClient().connect(url)

    async def settled() -> dict:
        for _ in range(100):
            samples = await metric_samples(url)
            if samples.get(("rtd_web_feed_undecodable_total", (("topic", topics.WINDOWS),))) == 2:
                return samples
            await asyncio.sleep(0.1)
        return samples

    samples = await settled()
    assert samples[("rtd_web_feed_readings_total", ())] == 7
    assert samples[("rtd_web_feed_rejected_total", (("reason", "not_json"),))] == 3
    assert samples[("rtd_web_feed_rejected_total", (("reason", "late"),))] == 1
    assert samples[("rtd_web_clients", ())] == 1
    assert samples[("rtd_web_latency_seconds_count", (("path", "live"),))] >= 1
    await client.disconnect()


async def test_health_reports_each_dependency(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup, tmp_path: Path
) -> None:
    _, healthy_url = start_web(processes, rtd_env)
    down_db = f"mysql+aiomysql://root@127.0.0.1:{free_port()}/nothing_listens"
    _, sick_url = start_web(processes, {**rtd_env, "RTD_DATABASE_URL": down_db}, name="web-no-db")
    async with aiohttp.ClientSession() as http:
        # On a fresh Apache Kafka the first lag check makes it create __consumer_offsets: the
        # group's coordinator is pending for a moment, and the lag is unknown (None) until then.
        for _ in range(30):
            async with http.get(f"{healthy_url}/healthz") as response:
                body = await response.json()
                assert response.status == 200, body
                assert body["status"] == "ok"
            if body["lag"] is not None:
                break
            await asyncio.sleep(0.5)
        assert body["lag"] is not None, body
        assert body["lag"]["group"] == rtd_env.get("RTD_APP_ID", "rtdstream")  # the worker group's id
        assert set(body["lag"]["topics"]) == {topics.READINGS, topics.VALIDATED, topics.WINDOWS}
        async with http.get(f"{sick_url}/healthz") as response:
            body = await response.json()
            assert response.status == 503
            assert body["checks"]["database"]["ok"] is False
            assert body["checks"]["broker"]["ok"] is True
        async with http.get(f"{sick_url}/api/sources") as response:
            assert response.status == 503
            assert (await response.json())["error"] == "history database unavailable"


@pytest.mark.slow
async def test_health_on_a_new_apache_kafka_cluster_is_ok_before_the_group_has_a_coordinator(
    apache_kafka: ApacheKafka, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    # No worker ever ran: Kafka creates __consumer_offsets on the first coordinator lookup,
    # and until then the group's lag cannot be read. The broker itself answers.
    _, url = start_web(processes, {**rtd_env, "RTD_BROKER": apache_kafka.url})
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
        body = await response.json()
    assert response.status == 200, body
    assert body["checks"]["broker"]["ok"] is True


async def test_health_checks_the_broker_and_database_once_a_second_however_many_ask(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    _, url = start_web(processes, rtd_env)
    checks = ("rtd_web_health_checks_total", ())
    async with aiohttp.ClientSession() as http:

        async def probe() -> int:
            async with http.get(f"{url}/healthz") as response:
                await response.read()
                return response.status

        before = (await metric_samples(url)).get(checks, 0)
        started = time.monotonic()
        statuses = await asyncio.gather(*(probe() for _ in range(300)))
        elapsed = time.monotonic() - started
        made = (await metric_samples(url))[checks] - before
        assert statuses == [200] * 300
        # Uncached, that is 300 checks. Shared, a new one starts at most once a second after the last.
        assert 1 <= made <= elapsed + 1, (made, elapsed)

        await asyncio.sleep(1.5)  # past the answer's age limit: the next request checks anew
        assert await probe() == 200
        assert (await metric_samples(url))[checks] == before + made + 1


async def test_sigterm_stops_the_web_view_cleanly_with_clients_connected(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    web, url = start_web(processes, rtd_env)
    websocket = await RecordingClient().connect(url, transports=["websocket"])
    polling = await RecordingClient().connect(url, transports=["polling"])
    assert await asyncio.to_thread(processes.terminate, web) == 0
    assert "Traceback" not in web.log_text()
    await websocket.wait_for(lambda: not websocket.sio.connected)
    await polling.wait_for(lambda: not polling.sio.connected)
