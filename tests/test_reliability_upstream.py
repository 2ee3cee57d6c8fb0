"""The upstream fault ``tests/test_bridge.py`` leaves out: the simulator killed with ``kill -9`` mid-stream."""

from __future__ import annotations

import asyncio
import time

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker
from tests.support.kafka import envelope_readings, read_topic
from tests.support.pipeline import Pipeline
from tests.support.processes import ProcessGroup, sim_total


async def test_the_bridge_reconnects_to_a_simulator_killed_and_restarted(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    pipeline = Pipeline(processes, rtd_env, rate=200, sources=2)
    sim_port = pipeline.sim_port
    first = await pipeline.start_sim()
    bridge = pipeline.start_bridge()
    await bridge.await_log("connected to", timeout=30)
    await asyncio.sleep(2)
    processes.kill(first)  # no clean end: the connection just breaks
    await bridge.await_log(rf"stream http://127.0.0.1:{sim_port}/stream (failed|ended)", timeout=30)
    await bridge.await_log(rf"stream http://127.0.0.1:{sim_port}/stream failed: Cannot connect", timeout=30)
    await bridge.await_log(r"reconnecting to .* in", count=2, timeout=30)
    restarted_at = int(time.time() * 1000)

    second = await pipeline.start_sim()
    await bridge.await_log("connected to", count=2, timeout=60)
    await asyncio.sleep(3)
    assert processes.terminate(second) == 0
    emitted = sim_total(second)
    assert emitted > 300

    def of_second(records: list) -> list[tuple[str, int]]:
        return [reading for reading in envelope_readings(records) if reading[1] >= restarted_at]

    records = await read_topic(
        broker.bootstrap_servers, topics.READINGS, until=lambda rs: len(of_second(rs)) >= emitted, timeout=30
    )
    assert len(envelope_readings(records)) - len(of_second(records)) > 100  # the first simulator's got through
    # Every reading of the restarted simulator arrives, once.
    assert len(of_second(records)) == len(set(of_second(records))) == emitted
    assert bridge.is_running() and "Traceback" not in bridge.log_text()
    assert processes.terminate(bridge) == 0
