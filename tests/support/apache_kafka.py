"""Apache Kafka for tests: ``scripts/kafka-broker`` run as a child process, one node or three."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import UnknownTopicOrPartitionError

from rtdstream.bench.runner import local_listener_pid
from rtdstream.broker import can_bind, wait_for_port

REPO = Path(__file__).resolve().parents[2]
KAFKA_BROKER = REPO / "scripts" / "kafka-broker"
POM = REPO / "scripts" / "kafka" / "pom.xml"
#: The version scripts/kafka-broker installs: the one the pom names.
KAFKA_VERSION = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text()).group(1)  # type: ignore[union-attr]
KAFKA_LIBS = REPO / ".kafka" / KAFKA_VERSION / "libs"


def free_port_range(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive TCP ports that nothing listens on right now.

    The script places a node's client and controller listeners on consecutive ports.
    """
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((host, 0))
            base = int(probe.getsockname()[1])
        if base + count <= 65536 and all(can_bind(host, port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


@dataclass
class ApacheKafka:
    """A KRaft cluster of ``brokers`` nodes that keeps its data in ``data`` across restarts.

    Use as a context manager. ``stop()`` sends SIGTERM, as a supervisor would, and returns the
    script's exit status.
    """

    data: Path
    brokers: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    log: Path | None = None
    #: Broker settings ``key=value`` passed after ``--``, over the script's own.
    extra: tuple[str, ...] = ()
    #: Keep the other nodes running when one exits (``--keep-going``): for tests that kill a broker.
    keep_going: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{self.port + node}" for node in range(self.brokers))

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap_servers}"

    def start(self, timeout: float = 120.0) -> ApacheKafka:
        self.port = self.port or free_port_range(2 * self.brokers, self.host)
        self.log = self.log or self.data.with_name(self.data.name + ".log")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [str(KAFKA_BROKER), "--port", str(self.port), "--host", self.host,
                 "--data", str(self.data), "--brokers", str(self.brokers),
                 *(["--keep-going"] if self.keep_going else []), *(("--", *self.extra) if self.extra else ())],
                stdout=log, stderr=subprocess.STDOUT,
                # Its own process group: a test's signal reaches the script alone, as from a supervisor.
                start_new_session=True,
            )
        for node in range(self.brokers):
            # A node opens its client port once it has joined the cluster and can serve requests.
            wait_for_port(self.host, self.port + node, timeout)
        return self

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, as a supervisor sends it; the script's exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def group_alive(self) -> bool:
        """Whether any process the script started (a JVM, say) still runs."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL to every process of the group: nothing of it outlives a test."""
        assert self.process is not None
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def kill_node(self, node_id: int) -> None:
        """``kill -9`` of one node's JVM (node ids count from 1; node n takes clients on port + n - 1)."""
        address = f"{self.host}:{self.port + node_id - 1}"
        pid = local_listener_pid(address)
        assert pid is not None, f"nothing listens on {address}"
        os.kill(pid, signal.SIGKILL)

    def add_scram_user(self, name: str, password: str, mechanism: str = "SCRAM-SHA-256") -> None:
        """Create a SASL/SCRAM user through the plaintext listener, with Kafka's own ConfigCommand."""
        subprocess.run(
            ["java", "-cp", f"{KAFKA_LIBS}/*", "kafka.admin.ConfigCommand",
             "--bootstrap-server", f"{self.host}:{self.port}", "--alter", "--entity-type", "users",
             "--entity-name", name, "--add-config", f"{mechanism}=[iterations=8192,password={password}]"],
            check=True, capture_output=True, timeout=120,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log else ""

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.kill()


async def delete_topics(bootstrap: str, timeout: float = 30.0) -> None:
    """Delete every topic but Kafka's internal ones, and wait until the cluster no longer lists them.

    Deletion is asynchronous in Kafka: a topic recreated while still listed would be "already
    existing" and then vanish under its new users.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while leftover := [t for t in await admin.list_topics() if not t.startswith("__")]:
            if loop.time() > deadline:
                raise RuntimeError(f"topics still listed {timeout:g}s after their deletion: {leftover}")
            try:
                await admin.delete_topics(leftover)
            except UnknownTopicOrPartitionError:
                pass  # deleted meanwhile
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def partition_leader(bootstrap: str, topic: str, partition: int) -> int:
    """The node id that leads ``topic``'s ``partition``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [metadata] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return next(p["leader"] for p in metadata["partitions"] if p["partition"] == partition)
