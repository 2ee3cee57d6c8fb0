"""Window results stay exact when the worker is killed with ``kill -9`` mid-stream, twice."""

from __future__ import annotations

import random

import orjson
import pytest

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker
from rtdstream.config import load_settings
from rtdstream.tables.specs import window_specs
from tests.support.kafka import create_topics, produce_at, read_topic
from tests.support.processes import ProcessGroup, start_worker
from tests.support.windows import HOUR_AGO, assert_windows_exact, offline

SOURCES = [f"sensor-{n}" for n in range(8)]
SECONDS = 240
PER_SECOND = 20  # readings per source per second: 38,400 readings in all
GRACE_MS = 2000

Envelope = list[tuple[str, int, int]]


def sensor_data(seed: int = 7) -> list[Envelope]:
    """One envelope per source per second of event time, time-major, shuffled inside each envelope.

    Disorder stays under a second, well within the grace period, so every
    reading must be counted: the offline group-by is the exact expected result.
    """
    rng = random.Random(seed)
    envelopes = []
    for second in range(SECONDS):
        for source in SOURCES:
            times = [HOUR_AGO + second * 1000 + i * (1000 // PER_SECOND) for i in range(PER_SECOND)]
            rng.shuffle(times)
            envelopes.append([(source, t, rng.randint(0, 50)) for t in times])
    return envelopes


def encode(envelope: Envelope) -> tuple[None, bytes, bytes]:
    """A bridge envelope keyed by source; partition None lets the key partitioner decide, as for the bridge."""
    source = envelope[0][0]
    readings = [{"time": str(t), "speed": str(s)} for _, t, s in envelope]  # the original simulator's strings
    return None, source.encode(), orjson.dumps({"source": source, "readings": readings})


async def windows_out(bootstrap: str, at_least: int) -> list:
    return await read_topic(bootstrap, topics.WINDOWS, until=lambda rs: len(rs) >= at_least, timeout=120)


@pytest.mark.slow
async def test_final_windows_are_exact_after_kill_9_twice_mid_stream(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    envelopes = sensor_data()
    expected, late = offline(envelopes, GRACE_MS, window_specs(load_settings()))
    assert late == {} and len(expected) > 2000
    bootstrap = broker.bootstrap_servers
    # Small batches keep the worker busy with the backlog for a few seconds, so
    # each kill lands mid-stream. No idle close before the data is all there:
    # until then windows may only close on the event-time watermark.
    busy = {**rtd_env, "RTD_IDLE_TIMEOUT": "600s", "RTD_WINDOW_BATCH": "10"}
    await create_topics(broker, rtd_env)
    two_thirds = len(envelopes) * 2 // 3
    await produce_at(bootstrap, topics.READINGS, map(encode, envelopes[:two_thirds]))

    first, _ = await start_worker(processes, busy)
    seen = len(await windows_out(bootstrap, 300))
    processes.kill(first)
    await produce_at(bootstrap, topics.READINGS, map(encode, envelopes[two_thirds:]))
    second, _ = await start_worker(processes, busy)
    seen_at_second_kill = len(await windows_out(bootstrap, seen + 400))
    processes.kill(second)
    assert seen_at_second_kill < len(expected)  # both kills happened before the end

    await start_worker(processes, {**rtd_env, "RTD_IDLE_TIMEOUT": "3s"})
    await assert_windows_exact(bootstrap, expected, readings=len(envelopes) * PER_SECOND)


@pytest.mark.slow
async def test_final_windows_are_exact_when_partitions_move_between_workers(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    envelopes = sensor_data()
    expected, _ = offline(envelopes, GRACE_MS, window_specs(load_settings()))
    bootstrap = broker.bootstrap_servers
    busy = {**rtd_env, "RTD_IDLE_TIMEOUT": "600s", "RTD_WINDOW_BATCH": "10"}
    await create_topics(broker, rtd_env)
    third = len(envelopes) // 3
    await produce_at(bootstrap, topics.READINGS, map(encode, envelopes[:third]))
    first, _ = await start_worker(processes, busy)
    await produce_at(bootstrap, topics.READINGS, map(encode, envelopes[third : 2 * third]))
    # A second worker joins (partitions move to it), then the first leaves (they move back). The
    # second closes idle partitions after 3 s, so the last third is in before it can own one: an idle
    # close before all data is there would rightly make the rest late.
    second, _ = await start_worker(processes, {**busy, "RTD_IDLE_TIMEOUT": "3s"}, ready=False)
    await produce_at(bootstrap, topics.READINGS, map(encode, envelopes[2 * third :]))
    await second.await_log(r"\[\^Worker\]: Ready", timeout=90)
    assert processes.terminate(first, timeout=60) == 0
    await assert_windows_exact(bootstrap, expected, readings=len(envelopes) * PER_SECOND)


