"""scripts/kafka-broker: Apache Kafka from Maven Central, started, used and stopped as a user would."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.apache_kafka import KAFKA_BROKER, KAFKA_VERSION, REPO, ApacheKafka
from tests.support.kafka import describe_topic, produce, read_topic


def test_the_broker_is_the_version_the_compose_file_runs() -> None:
    compose = (REPO / "docker" / "compose.yml").read_text()
    image = re.search(r"image: apache/kafka:(\S+)", compose).group(1)
    assert KAFKA_VERSION == image


async def test_a_single_node_serves_producers_and_consumers_and_keeps_its_data(tmp_path: Path) -> None:
    data = tmp_path / "kafka"
    readings = [b'{"time":"%d","speed":"7"}' % n for n in range(200)]

    with ApacheKafka(data) as kafka:
        await produce(kafka.bootstrap_servers, "rtd.readings", readings, key=b"s1")
        records = await read_topic(kafka.bootstrap_servers, "rtd.readings", until=lambda got: len(got) >= 200)
        assert [r.value for r in records] == readings
        assert kafka.stop() == 0, kafka.output()
        assert not kafka.group_alive(), "a JVM outlived SIGTERM"

    # The same data folder: the topic and its records are there after a restart.
    with ApacheKafka(data) as kafka:
        records = await read_topic(kafka.bootstrap_servers, "rtd.readings", until=lambda got: len(got) >= 200)
        assert [r.value for r in records] == readings

    assert "Kafka Server started" in kafka.output()


def test_bad_arguments_stop_it_with_one_line_naming_them() -> None:
    for arguments, named in ((["--brokers", "2"], "--brokers"), (["--port", "http"], "--port"),
                             (["--colour"], "--colour")):
        result = subprocess.run([str(KAFKA_BROKER), *arguments], capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and named in result.stderr, result.stderr


@pytest.mark.slow
async def test_three_nodes_replicate_every_topic_three_times_with_two_in_sync(tmp_path: Path) -> None:
    with ApacheKafka(tmp_path / "kafka", brokers=3) as kafka:
        await produce(kafka.bootstrap_servers, "auto.created", [b"x"] * 10)
        topic, configs = await describe_topic(kafka.bootstrap_servers, "auto.created", ["min.insync.replicas"])
        assert {len(p["replicas"]) for p in topic["partitions"]} == {3}
        assert {len(p["isr"]) for p in topic["partitions"]} == {3}
        assert configs == {"min.insync.replicas": "2"}
        assert kafka.stop() == 0, kafka.output()
        assert not kafka.group_alive(), "a JVM outlived SIGTERM"
