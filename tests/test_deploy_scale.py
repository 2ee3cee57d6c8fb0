"""Scale-out: two workers share the partitions; one killed by ``kill -9`` hands its share over intact."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict

import orjson
import pytest

from rtdstream import topics
from rtdstream.broker import EmbeddedBroker, free_port
from rtdstream.status import CONSUMED, collect_status
from rtdstream.tables.specs import window_specs
from tests.support.apache_kafka import ApacheKafka
from tests.support.cluster import partition_owners, port_of, settings_of
from tests.support.kafka import read_to_end, read_topic
from tests.support.mariadb import MariaDB
from tests.support.pipeline import stored_exactly_once, wait_for_rows
from tests.support.processes import ProcessGroup, sim_total, start_worker, until
from tests.support.windows import offline

GRACE_MS = 2000
#: Longer than a takeover (session timeout + rebalance + recovery, about 10 s here): a partition
#: paused by the rebalance must not look idle, or its open windows close early (see README, Operate).
IDLE_TIMEOUT = "15s"


def status_command(env: dict[str, str], *urls: str) -> dict:
    """``rtdstream status --json`` as an operator runs it."""
    args = [arg for url in urls for arg in ("--worker", url)]
    result = subprocess.run(
        [sys.executable, "-m", "rtdstream", "status", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return orjson.loads(result.stdout)


@pytest.mark.slow
async def test_a_worker_killed_mid_stream_hands_its_partitions_over_and_nothing_is_lost_or_doubled(
    broker: EmbeddedBroker, mysql_url: str, mariadb: MariaDB, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    database = mysql_url.rsplit("/", 1)[1]
    sim_port = free_port()
    env = {
        **rtd_env,
        "RTD_DATABASE_URL": mysql_url,
        "RTD_SOURCES": f"http://127.0.0.1:{sim_port}/stream",
        "RTD_GRACE": f"{GRACE_MS}ms",
        "RTD_IDLE_TIMEOUT": IDLE_TIMEOUT,
        "RTD_LEGACY_TABLE": "true",  # stored_exactly_once counts the key-less table
    }
    settings = settings_of(env)
    (doomed, doomed_url), (survivor, survivor_url) = (
        await start_worker(processes, env, ready=False),
        await start_worker(processes, env, ready=False),
    )
    for worker in (doomed, survivor):
        await worker.await_log(r"\[\^Worker\]: Ready", timeout=120)

    # Owners by port: Apache Kafka's group also lists a worker by the URL it publishes (its host
    # name), next to the one the status asked; the embedded broker lists the asked one only.
    async def owner_ports() -> list[set[int | None]]:
        by_partition = await partition_owners(env, [doomed_url, survivor_url])
        return [{port_of(url) for url in urls} for urls in by_partition.values()]

    async def shared() -> bool:
        owned = await owner_ports()
        return all(len(ports) == 1 for ports in owned) and set().union(*owned) == {
            port_of(doomed_url), port_of(survivor_url)
        }

    await until(shared, timeout=60, what="both workers owning partitions")

    sim = processes.start("sim", ["sim", "--port", str(sim_port), "--rate", "200", "--sources", "4"], env)
    bridge = processes.start("bridge", ["bridge"], env)
    await wait_for_rows(mariadb, database, 1000)
    processes.kill(doomed)

    async def taken_over() -> bool:
        return all(ports == {port_of(survivor_url)} for ports in await owner_ports())

    await until(taken_over, timeout=90, what="the survivor owning every partition")
    after = await collect_status(settings, [doomed_url, survivor_url])
    # (on Apache Kafka the survivor is also asked at the URL it publishes: a second entry, same port)
    assert {(port_of(w.url), w.state, w.error is None) for w in after.workers} == {
        (port_of(doomed_url), None, False),
        (port_of(survivor_url), "running", True),  # the dead one is reported, not fatal
    }
    assert sim.is_running() and processes.terminate(sim) == 0  # the stream ran through the takeover
    emitted = sim_total(sim)

    # Every reading the simulator sent is in MySQL exactly once.
    readings = await stored_exactly_once(
        mariadb, database, emitted, env, timeout=120, workers=[(doomed, doomed_url), (survivor, survivor_url)]
    )

    # The final windows on rtd.windows are those of an offline group-by of the stored readings.
    expected, late = offline([sorted(readings, key=lambda r: r[1])], GRACE_MS, window_specs(settings))
    assert late == {}
    # All of rtd.validated is committed (stored_exactly_once waited for it), and a late reading goes to
    # rtd.dlq before its input is acknowledged: up to the end offsets it has now is all there can be.
    dead = await read_to_end(broker.bootstrap_servers, topics.DLQ)
    assert [orjson.loads(r.value)["reason"] for r in dead] == []  # no reading was taken for late
    records = await read_topic(
        broker.bootstrap_servers,
        topics.WINDOWS,
        timeout=90,
        until=lambda rs: len({_window_key(orjson.loads(r.value)) for r in rs}) >= len(expected),
    )
    values: dict[tuple[str, str, int], set[bytes]] = defaultdict(set)
    for record in records:
        values[_window_key(orjson.loads(record.value))].add(record.value)
    assert {
        key: vs for key, vs in values.items() if len(vs) > 1
    } == {}  # a replayed window has the same value
    assert {key: _aggregate(orjson.loads(next(iter(vs)))) for key, vs in values.items()} == expected

    # rtdstream status, as an operator sees it: one worker left, owning all, nothing lagging.
    async def caught_up() -> bool:
        report = await collect_status(settings, [survivor_url])
        return all(p.lag == 0 for p in report.offsets.partitions if p.topic in CONSUMED)

    await until(caught_up, timeout=60, what="zero lag")
    report = status_command(env, survivor_url)
    for topic in CONSUMED:
        partitions = report["topics"][topic]["partitions"]
        assert len(partitions) == int(env["RTD_PARTITIONS"])
        assert all(
            {port_of(url) for url in p["owners"]} == {port_of(survivor_url)} and p["lag"] == 0 for p in partitions
        ), partitions
    assert report["group"]["members"] == 1
    assert {(port_of(w["url"]), w["state"], w["error"]) for w in report["workers"]} == {
        (port_of(survivor_url), "running", None)
    }
    assert report["counters"]["rtd_readings_accepted_total"] > 0

    for proc in (bridge, survivor):
        assert processes.terminate(proc, timeout=60) == 0


def _window_key(window: dict) -> tuple[str, str, int]:
    return window["source"], window["window"], window["start"]


def _aggregate(window: dict) -> list:
    return [window[name] for name in ("count", "min", "max", "sum", "first_time", "last_time", "last_speed")]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_worker_stopped_with_sigterm_leaves_the_group_so_its_partitions_move_before_the_session_timeout(
    apache_kafka: ApacheKafka, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    # A session timeout far longer than the wait below: a worker that stopped without leaving the
    # group would keep its partitions that long, as a killed one does.
    env = {**rtd_env, "RTD_BROKER": apache_kafka.url, "RTD_SESSION_TIMEOUT": "45s"}
    (leaving, leaving_url), (staying, staying_url) = (
        await start_worker(processes, env),
        await start_worker(processes, env, ready=False),
    )
    urls = [leaving_url, staying_url]

    ports = {port_of(url) for url in urls}

    async def shared() -> bool:
        by_partition = await partition_owners(env, urls)
        return {port_of(url) for owned in by_partition.values() for url in owned} == ports

    await until(shared, timeout=120, what="both workers owning partitions")
    assert processes.terminate(leaving, timeout=60) == 0

    async def moved() -> bool:
        by_partition = await partition_owners(env, [staying_url])
        # (a worker may be listed twice: by the URL it publishes and by the one the status asked)
        return all({port_of(url) for url in owned} == {port_of(staying_url)} for owned in by_partition.values())

    # Heartbeats come every 9 s (a fifth of the session timeout): the survivor hears of the
    # rebalance the leaving worker started within one of them, far before the 45 s.
    await until(moved, timeout=25, what="the staying worker owning every partition")
    status = await collect_status(settings_of(env), [staying_url])
    assert [port_of(member.url) for member in status.members] == [port_of(staying_url)]
    assert processes.terminate(staying, timeout=60) == 0
