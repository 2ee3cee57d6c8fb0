"""End to end on the embedded broker: simulator -> bridge -> rtd.readings -> validation -> rtd.validated."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import web

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker, free_port
from rtdstream.models import ReadingBatch, decode_validated
from tests.support.kafka import json_values, read_topic
from tests.support.processes import ProcessGroup, sim_total, start_worker


def validated_readings(records) -> list[tuple[str, int, float]]:
    readings = []
    for record in records:
        batch = decode_validated(record.value)
        if isinstance(batch, ReadingBatch):
            readings += [(batch.source, t, s) for t, s in zip(batch.times, batch.speeds)]
    return readings


async def test_simulated_readings_reach_the_validated_topic_through_a_simulator_restart(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    sim_port = free_port()
    env = {**rtd_env, "RTD_SOURCES": f"http://127.0.0.1:{sim_port}/stream"}
    sim_args = ["sim", "--port", str(sim_port), "--rate", "1000", "--sources", "4"]
    await start_worker(processes, env)
    bridge = processes.start("bridge", ["bridge"], env)

    first_sim = processes.start("sim", sim_args, env)
    await bridge.await_log("connected to", timeout=30)
    await asyncio.sleep(4)
    assert processes.terminate(first_sim) == 0
    await bridge.await_log("ended cleanly")  # the original never reconnected after this

    second_sim = processes.start("sim", sim_args, env)
    await bridge.await_log("connected to", count=2, timeout=60)
    await asyncio.sleep(3)
    assert processes.terminate(second_sim) == 0

    emitted = sim_total(first_sim) + sim_total(second_sim)
    assert emitted > 1000
    records = await read_topic(
        broker.bootstrap_servers, topics.VALIDATED,
        until=lambda rs: len(validated_readings(rs)) >= emitted, timeout=60,
    )
    readings = validated_readings(records)
    assert len(readings) == emitted
    assert len({(source, time) for source, time, _ in readings}) == emitted
    assert {source for source, _, _ in readings} == {"sensor-1", "sensor-2", "sensor-3", "sensor-4"}
    assert all(isinstance(speed, int) and 0 <= speed <= 50 for _, _, speed in readings)

    # the bridge batched them: far fewer Kafka messages than readings
    envelopes = await read_topic(broker.bootstrap_servers, topics.READINGS, until=lambda rs: False, timeout=2)
    assert sum(len(orjson.loads(e.value)["readings"]) for e in envelopes) == emitted
    assert len(envelopes) < emitted / 2
    assert processes.terminate(bridge) == 0
    # on SIGTERM the bridge delivered everything it had read, and says so
    final = re.search(r"bridge stopped: readings_read=(\d+) readings_delivered=(\d+)", bridge.log_text())
    assert final and final.group(1) == final.group(2) == str(emitted)


MESSY_STREAM = [
    b'{"time":"1795625575478","speed":"16"}\n',
    b"hello, I am not JSON\n",
    b'{"time":"1795625575479",',  # split across chunks
    b'"speed":"17"}\n{"time":"1795625575480","speed":"18"}\n',  # ... and two in one chunk
    b'data: {"time":"1795625575481","speed":"19"}\r\n\r\n',  # SSE framing
    b'{"time":"1795625575482","speed":"fast"}\n',  # JSON, but not a valid reading
    b'{"time":"1795625575483","speed":"20"}',  # last line without newline, then a clean end
]


@pytest.fixture
async def messy_source() -> AsyncIterator[str]:
    """A stream that sends MESSY_STREAM once, then nothing on later connections."""
    served = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if served.is_set():
            await asyncio.sleep(3600)
        served.set()
        for chunk in MESSY_STREAM:
            await response.write(chunk)
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/stream"
    finally:
        await runner.cleanup()


async def test_garbage_and_invalid_records_go_to_the_dlq_with_reasons_and_the_rest_goes_on(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup, messy_source: str
) -> None:
    env = {**rtd_env, "RTD_SOURCES": f"dock={messy_source}"}
    await start_worker(processes, env)
    processes.start("bridge", ["bridge"], env)

    validated = await read_topic(
        broker.bootstrap_servers, topics.VALIDATED, until=lambda rs: len(validated_readings(rs)) >= 5, timeout=60
    )
    assert validated_readings(validated) == [
        ("dock", 1795625575478, 16), ("dock", 1795625575479, 17), ("dock", 1795625575480, 18),
        ("dock", 1795625575481, 19), ("dock", 1795625575483, 20),
    ]

    dead = json_values(await read_topic(broker.bootstrap_servers, topics.DLQ, until=lambda rs: len(rs) >= 2))
    by_stage = {record["stage"]: record for record in dead}
    assert by_stage["bridge"]["reason"] == "not_json"
    assert by_stage["bridge"]["raw"] == "hello, I am not JSON"
    assert by_stage["bridge"]["url"] == messy_source
    assert by_stage["validate"]["reason"] == "non_numeric"
    assert orjson.loads(by_stage["validate"]["raw"]) == {"time": "1795625575482", "speed": "fast"}
    assert by_stage["validate"]["topic"] == topics.READINGS and by_stage["validate"]["offset"] is not None
