"""The bridge against real faults: kill -9 mid-stream, and upstreams that misbehave in every way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker, free_port
from tests.support.apache_kafka import ApacheKafka
from tests.support.kafka import envelope_readings, json_values, read_topic
from tests.support.pipeline import Pipeline
from tests.support.processes import Proc, ProcessGroup, sim_total


async def test_killing_the_bridge_loses_and_duplicates_nothing(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    sim_port = free_port()
    env = {**rtd_env, "RTD_SOURCES": f"http://127.0.0.1:{sim_port}/stream"}
    sim = processes.start("sim", ["sim", "--port", str(sim_port), "--rate", "2000", "--sources", "4"], env)
    await sim.await_log("listening")
    bridge = processes.start("bridge", ["bridge"], env)
    for round_ in range(3):
        await bridge.await_log("connected to", timeout=30)
        await asyncio.sleep(2.0 + round_ * 0.7)
        processes.kill(bridge)  # kill -9: whatever it had read but not delivered must come back
        bridge = processes.start("bridge", ["bridge"], env)
    await bridge.await_log("connected to", timeout=30)
    await asyncio.sleep(2)
    assert processes.terminate(sim) == 0
    await bridge.await_log("ended cleanly")
    emitted = sim_total(sim)
    assert sim.log_text().count("resumed: replayed") >= 1

    records = await read_topic(
        broker.bootstrap_servers, topics.READINGS, until=lambda rs: len(envelope_readings(rs)) >= emitted, timeout=30
    )
    readings = envelope_readings(records)
    assert len(set(readings)) == emitted  # nothing lost...
    assert len(readings) == emitted  # ...and nothing twice
    assert processes.terminate(bridge) == 0


class Upstream:
    """An HTTP server whose paths misbehave in the ways a real upstream does."""

    GOOD = b'{"time":"1795625575478","speed":"16"}\n'

    def __init__(self) -> None:
        self.connections: dict[str, int] = {}

    def app(self) -> web.Application:
        app = web.Application()
        for name in ("error", "html", "loop", "stall", "trickle", "endless"):
            app.router.add_get(f"/{name}", getattr(self, name))
        return app

    def _count(self, request: web.Request) -> None:
        name = request.path.strip("/")
        self.connections[name] = self.connections.get(name, 0) + 1

    async def error(self, request: web.Request) -> web.Response:
        self._count(request)
        return web.Response(status=500, text="Internal Server Error")

    async def html(self, request: web.Request) -> web.Response:
        self._count(request)
        return web.Response(text="<html><body>Maintenance</body></html>", content_type="text/html")

    async def loop(self, request: web.Request) -> web.Response:
        self._count(request)
        raise web.HTTPFound("/loop")

    async def stall(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await asyncio.sleep(3600)  # headers, then nothing
        return response

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.connections["trickle"] == 1:
            for byte in self.GOOD.replace(b"16", b"21"):
                await response.write(bytes([byte]))  # one byte per chunk
                await asyncio.sleep(0.01)
        await asyncio.sleep(3600)
        return response

    async def endless(self, request: web.Request) -> web.StreamResponse:
        self._count(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if self.connections["endless"] == 1:
            for _ in range(50):  # 500 kB without a newline
                await response.write(b"x" * 10_000)
            await response.write(b"\n" + self.GOOD.replace(b"16", b"22"))
        await asyncio.sleep(3600)
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    server = Upstream()
    runner = web.AppRunner(server.app(), shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield server, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_the_bridge_survives_every_upstream_fault_with_the_right_log_line(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup, upstream
) -> None:
    server, base = upstream
    names = ("error", "html", "loop", "stall", "trickle", "endless")
    env = {
        **rtd_env,
        "RTD_SOURCES": ",".join(f"{name}={base}/{name}" for name in names),
        "RTD_READ_TIMEOUT": "1s",
        "RTD_MAX_LINE_BYTES": "4096",
    }
    bridge: Proc = processes.start("bridge", ["bridge"], env)
    await bridge.await_log(rf"stream {base}/error: HTTP 500 Internal Server Error")
    await bridge.await_log(rf"stream {base}/html: got text/html.*not a stream")
    await bridge.await_log(rf"stream {base}/loop redirects too many times")
    await bridge.await_log(rf"stream {base}/stall stalled: no data for 1s")
    for name in ("error", "html", "stall"):
        await bridge.await_log(rf"reconnecting to {base}/{name} in", count=2)  # and it keeps trying

    records = await read_topic(broker.bootstrap_servers, topics.READINGS, until=lambda rs: len(rs) >= 2, timeout=30)
    assert sorted(envelope_readings(records)) == [("endless", 1795625575478), ("trickle", 1795625575478)]
    assert {orjson.loads(r.value)["readings"][0]["speed"] for r in records} == {"21", "22"}

    (dead,) = json_values(await read_topic(broker.bootstrap_servers, topics.DLQ, until=lambda rs: len(rs) >= 1))
    assert dead["reason"] == "line_too_long" and dead["source"] == "endless" and len(dead["raw"]) == 4096
    assert bridge.is_running()
    assert processes.terminate(bridge) == 0


async def create_readings_topic(bootstrap: str, partitions: int, max_message_bytes: int) -> None:
    """rtd.readings made before the bridge starts, with a message size limit of the test's choosing."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([
            NewTopic(topics.READINGS, partitions, 1, topic_configs={"max.message.bytes": str(max_message_bytes)})
        ])
    finally:
        await admin.close()


@pytest.mark.slow
async def test_envelopes_stay_below_the_topic_s_message_limit_and_nothing_is_dropped(
    apache_kafka: ApacheKafka, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    # About 100 readings of ~50 bytes per 100 ms envelope: 5 KB, over the 2 KB limit twice over.
    await create_readings_topic(apache_kafka.bootstrap_servers, int(rtd_env["RTD_PARTITIONS"]), 2048)
    env = {**rtd_env, "RTD_BROKER": apache_kafka.url, "RTD_BRIDGE_LINGER": "100ms"}
    pipeline = Pipeline(processes, env, rate=1000, sources=1)
    await pipeline.start_sim()
    bridge = pipeline.start_bridge()
    # The bridge reads the topic's limit at start and builds envelopes below it: an idempotent
    # producer's sequence would not survive a refusal (OutOfOrderSequenceNumber after it).
    await bridge.await_log("takes messages of at most 2048 bytes: envelopes of at most 1536 bytes", timeout=30)
    emitted = await pipeline.end_stream(after=3.0)
    await bridge.await_log("ended cleanly")

    records = await read_topic(
        apache_kafka.bootstrap_servers, topics.READINGS,
        until=lambda rs: len(envelope_readings(rs)) >= emitted, timeout=30,
    )
    readings = envelope_readings(records)
    assert len(set(readings)) == emitted  # nothing dropped...
    assert len(readings) == emitted  # ...and nothing twice
    assert max(len(record.value) for record in records) < 2048
    assert processes.terminate(bridge) == 0


@pytest.mark.slow
async def test_a_reading_the_topic_can_never_take_stops_the_bridge_with_one_line(
    apache_kafka: ApacheKafka, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    await create_readings_topic(apache_kafka.bootstrap_servers, int(rtd_env["RTD_PARTITIONS"]), 64)
    pipeline = Pipeline(processes, {**rtd_env, "RTD_BROKER": apache_kafka.url}, rate=10, sources=1)
    await pipeline.start_sim()
    bridge = pipeline.start_bridge()
    assert bridge.popen.wait(60) == 1
    last_line = bridge.log_text().strip().splitlines()[-1]
    assert "max.message.bytes" in last_line and last_line.startswith("rtdstream bridge:"), last_line
    assert "Traceback" not in bridge.log_text() and "Unclosed" not in bridge.log_text()
