"""rtdstream on an Apache Kafka that requires SASL_SSL: SCRAM-SHA-256, and a certificate authority of the test's own.

The broker's SASL_SSL listener is the only address the processes are given, so a reading that gets
through went over TLS with the user's credentials; a wrong password or an unknown authority stops
each process with one line naming the setting, instead of a retry loop that looks like an outage.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rtdstream.broker import free_port
from tests.support.apache_kafka import ApacheKafka, free_port_range
from tests.support.mariadb import MariaDB
from tests.support.pipeline import Pipeline, stored_exactly_once
from tests.support.processes import ProcessGroup

USER, PASSWORD = "alice", "alice-secret"


def openssl(*args: str | Path, cwd: Path) -> None:
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


def certificate_authority(folder: Path, name: str) -> Path:
    """A self-signed CA in ``folder``: its certificate (the key lies beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN={name}", cwd=folder)
    return folder / f"{name}.pem"


def broker_keystore(folder: Path, ca: Path) -> Path:
    """One PEM with the broker's key and its certificate for 127.0.0.1, signed by ``ca``."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
            "-subj", "/CN=127.0.0.1", cwd=folder)
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "broker.csr", "-CA", ca, "-CAkey", ca.with_suffix(".key"), "-CAcreateserial",
            "-out", "broker.crt", "-days", "2", "-extfile", "san.ext", cwd=folder)
    keystore = folder / "broker.pem"
    keystore.write_text((folder / "broker.key").read_text() + (folder / "broker.crt").read_text())
    return keystore


@dataclass
class SecuredKafka:
    kafka: ApacheKafka
    url: str
    ca: Path

    def env(self, **overrides: str) -> dict[str, str]:
        """The settings of a client of the SASL_SSL listener, with ``overrides``."""
        return {
            "RTD_BROKER": self.url,
            "RTD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "RTD_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "RTD_KAFKA_USERNAME": USER,
            "RTD_KAFKA_PASSWORD": PASSWORD,
            "RTD_KAFKA_CA_FILE": str(self.ca),
            **overrides,
        }


@pytest.fixture
def secured_kafka(tmp_path: Path) -> Iterator[SecuredKafka]:
    ca = certificate_authority(tmp_path / "tls", "test-ca")
    keystore = broker_keystore(tmp_path / "tls", ca)
    port = free_port_range(3)  # plaintext clients, the controller, SASL_SSL clients
    secured = port + 2
    listener = "listener.name.sasl_ssl."
    with ApacheKafka(tmp_path / "kafka", port=port, extra=(
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1},SASL_SSL://127.0.0.1:{secured}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secured}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms=SCRAM-SHA-256",
        f"{listener}scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"{listener}ssl.keystore.type=PEM",
        f"{listener}ssl.keystore.location={keystore}",
    )) as kafka:
        kafka.add_scram_user(USER, PASSWORD)
        yield SecuredKafka(kafka, f"kafka://127.0.0.1:{secured}", ca)


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_the_pipeline_runs_over_sasl_ssl_and_stores_every_reading_once(
    secured_kafka: SecuredKafka, rtd_env: dict[str, str], processes: ProcessGroup, mysql_url: str, mariadb: MariaDB
) -> None:
    env = {**rtd_env, **secured_kafka.env(), "RTD_DATABASE_URL": mysql_url}
    pipeline = Pipeline(processes, env, rate=50, sources=2)
    await pipeline.start_worker()
    await pipeline.start_web()
    await pipeline.start_sim()
    pipeline.start_bridge()
    emitted = await pipeline.end_stream(after=5.0)
    await stored_exactly_once(mariadb, mysql_url.rsplit("/", 1)[1], emitted, pipeline.env, workers=pipeline.workers)
    status = processes.start("status", ["status"], env)
    assert await asyncio.to_thread(status.popen.wait, 60) == 0, status.log_text()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_wrong_password_or_authority_stops_each_process_with_one_line_naming_the_setting(
    secured_kafka: SecuredKafka, rtd_env: dict[str, str], processes: ProcessGroup, tmp_path: Path
) -> None:
    stranger = certificate_authority(tmp_path / "other", "stranger-ca")
    cases = [
        ({"RTD_KAFKA_PASSWORD": "wrong"}, "RTD_KAFKA_USERNAME/RTD_KAFKA_PASSWORD"),
        ({"RTD_KAFKA_CA_FILE": str(stranger)}, "RTD_KAFKA_CA_FILE"),
    ]
    for overrides, setting in cases:
        env = {**rtd_env, **secured_kafka.env(**overrides)}
        for command in (["bridge"], ["worker", "-l", "info"], ["web", "--port", str(free_port())], ["status"]):
            proc = processes.start(command[0], command, env)
            assert await asyncio.to_thread(proc.popen.wait, 90) != 0, f"{command[0]} kept running"
            last_line = proc.log_text().strip().splitlines()[-1]
            # (the worker's stderr goes through Faust's logging, so its one line has the log prefix)
            assert f"rtdstream {command[0]}: " in last_line and setting in last_line, last_line
            assert "Traceback" not in proc.log_text(), proc.log_text()
