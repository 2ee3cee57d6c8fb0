"""The topics rtdstream creates on Apache Kafka: replicas, min.insync.replicas and retention from the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtdstream import topics
from rtdstream.config import load_settings
from tests.support.apache_kafka import ApacheKafka
from tests.support.kafka import describe_topic
from tests.support.processes import ProcessGroup

CONFIGS = ("min.insync.replicas", "retention.ms")


async def test_a_single_broker_gets_one_replica_one_in_sync_and_a_week_of_retention(apache_kafka: ApacheKafka) -> None:
    await topics.ensure_topics(load_settings(broker=apache_kafka.url, partitions=2))
    for name in topics.ALL:
        metadata, configs = await describe_topic(apache_kafka.bootstrap_servers, name, CONFIGS)
        assert {len(p["replicas"]) for p in metadata["partitions"]} == {1}, name
        assert configs == {"min.insync.replicas": "1", "retention.ms": str(7 * 86_400_000)}, name


@pytest.mark.slow
async def test_a_cluster_gets_the_configured_replicas_two_in_sync_and_retention(tmp_path: Path) -> None:
    with ApacheKafka(tmp_path / "kafka", brokers=3, extra=("min.insync.replicas=1",)) as kafka:
        settings = load_settings(broker=kafka.url, partitions=2, replication_factor=3, topic_retention="2h")
        await topics.ensure_topics(settings)
        for name in topics.ALL:
            metadata, configs = await describe_topic(kafka.bootstrap_servers, name, CONFIGS)
            assert {len(p["replicas"]) for p in metadata["partitions"]} == {3}, name
            # 2 of 3 by default: the topic's own setting, not the broker's default of 1 given above
            assert configs == {"min.insync.replicas": "2", "retention.ms": "7200000"}, name


async def test_more_replicas_than_brokers_stops_each_process_with_one_line(
    apache_kafka: ApacheKafka, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    env = {**rtd_env, "RTD_BROKER": apache_kafka.url, "RTD_REPLICATION_FACTOR": "2"}
    for command in (["bridge"], ["worker", "-l", "info"]):
        proc = processes.start(command[0], command, env)
        assert proc.popen.wait(90) != 0
        last_line = proc.log_text().strip().splitlines()[-1]
        # (the worker's stderr goes through Faust's logging, so its one line has the log prefix)
        assert f"rtdstream {command[0]}: the broker refused to create topic rtd." in last_line, last_line
        assert "InvalidReplicationFactorError" in last_line and "Traceback" not in proc.log_text()


def test_more_in_sync_replicas_than_replicas_is_a_bad_setting() -> None:
    with pytest.raises(Exception, match="RTD_MIN_INSYNC_REPLICAS=3: cannot exceed RTD_REPLICATION_FACTOR"):
        load_settings(replication_factor=2, min_insync_replicas=3)
