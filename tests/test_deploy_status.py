"""``rtdstream status``: its report, and one clear line when the broker cannot be reached."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from faust.assignor.client_assignment import ClientAssignment, ClientMetadata

from rtdstream.broker import free_port
from rtdstream.lag import GroupLag, PartitionLag
from rtdstream.status import ClusterStatus, GroupMember, WorkerReport, decode_member, render_text


def test_status_says_in_one_line_that_the_broker_is_unreachable(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RTD_")}
    broker = f"kafka://127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "rtdstream", "status"],
        env={**env, "RTD_BROKER": broker},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line, no traceback
    assert result.stderr.startswith(f"rtdstream status: Kafka broker {broker} unreachable:")


def test_a_faust_workers_group_metadata_names_its_url_and_partitions() -> None:
    """What Apache Kafka reports for a member of the worker group, encoded the way Faust encodes it."""
    client = ClientMetadata(
        assignment=ClientAssignment(actives={}, standbys={}),
        url="http://worker-2:6066",
        changelog_distribution={},
    )
    metadata = ConsumerProtocolMemberMetadata(0, ["rtd.readings"], client.dumps()).encode()
    assignment = ConsumerProtocolMemberAssignment(
        0, [("rtd.readings", [3, 1]), ("rtd.validated", [1, 3])], b""
    )
    member = decode_member("faust-1", "client", "/10.0.0.7", metadata, assignment.encode())
    assert member == GroupMember(
        "faust-1", "/10.0.0.7", "http://worker-2:6066", {"rtd.readings": [1, 3], "rtd.validated": [1, 3]}
    )


def test_a_member_without_metadata_is_still_listed() -> None:
    """The embedded broker describes members with empty metadata and assignment."""
    assert decode_member("faust-1", "", "", b"", b"") == GroupMember("faust-1", "")


def test_the_text_report_shows_lag_owners_unreachable_workers_and_summed_counters() -> None:
    offsets = GroupLag(
        "rtdstream",
        [
            PartitionLag("rtd.readings", 0, committed=90, beginning=0, end=100),
            PartitionLag("rtd.readings", 1, committed=None, beginning=5, end=25),
            PartitionLag("rtd.dlq", 0, committed=None, beginning=0, end=7),
        ],
    )
    workers = [
        WorkerReport(
            "http://a:6066",
            "running",
            {"rtd.readings": [0]},
            {"rtd_readings_accepted_total": 10.0, "rtd_web_clients": 3.0},
        ),
        WorkerReport("http://b:6066", "running", {"rtd.readings": [1]}, {"rtd_readings_accepted_total": 5.0}),
        WorkerReport("http://c:6066", error="Cannot connect to host c:6066"),
    ]
    status = ClusterStatus(
        "kafka://k:9092",
        "rtdstream",
        "Stable",
        [GroupMember("m1", "h"), GroupMember("m2", "h")],
        offsets,
        workers,
    )
    lines = render_text(status).splitlines()
    assert lines[0] == "broker kafka://k:9092, consumer group rtdstream: Stable, 2 member(s)"
    rows = [line.split() for line in lines if line.startswith("  rtd.")]
    assert rows == [
        ["rtd.readings", "0", "100", "90", "10", "http://a:6066"],
        ["rtd.readings", "1", "25", "-", "20", "http://b:6066"],
        ["rtd.dlq", "0", "7", "-", "-", "(output)"],
    ]
    assert "  http://c:6066  unreachable: Cannot connect to host c:6066" in lines
    assert "COUNTERS (sum over 2 worker(s), since each started)" in lines
    assert [
        line.split()
        for line in lines[lines.index("COUNTERS (sum over 2 worker(s), since each started)") + 1 :]
    ] == [["rtd_readings_accepted_total", "15"]]
