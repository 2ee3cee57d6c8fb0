"""Fixtures for tests against real components: the embedded broker, MariaDB, rtdstream processes."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rtdstream.broker import EmbeddedBroker
from tests.support.apache_kafka import ApacheKafka, delete_topics
from tests.support.mariadb import MariaDB
from tests.support.processes import ProcessGroup

#: Fixtures of the sink tests (database_url over MariaDB and SQLite, a migrated engine).
pytest_plugins = ["tests.support.sink"]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


#: Which broker the ``broker`` fixture gives: ``kafka`` (Apache Kafka, default) or ``embedded``.
#: The embedded broker stays covered either way by the tests of ``rtdstream dev`` and the Procfile,
#: which start it themselves.
TEST_BROKER = os.environ.get("RTD_TEST_BROKER", "kafka")


def pytest_configure(config: pytest.Config) -> None:
    if TEST_BROKER not in ("embedded", "kafka"):
        raise pytest.UsageError(f"RTD_TEST_BROKER must be 'embedded' or 'kafka', not {TEST_BROKER!r}")


@pytest.fixture(scope="session")
def session_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """One Apache Kafka for every test of the session that runs on RTD_TEST_BROKER=kafka (the default)."""
    with ApacheKafka(tmp_path_factory.mktemp("session-kafka") / "kafka") as running:
        yield running


@pytest.fixture
def broker(request: pytest.FixtureRequest) -> Iterator[EmbeddedBroker | ApacheKafka]:
    """A broker with no topic or group of an earlier test.

    The session's Apache Kafka (RTD_TEST_BROKER=kafka, the default), with every topic of earlier
    tests deleted first (their groups cannot be joined by mistake either: ``rtd_env`` gives each
    test an app id of its own); with RTD_TEST_BROKER=embedded the embedded one, fresh per test (in
    memory, starts in milliseconds).
    """
    if TEST_BROKER == "kafka":
        kafka = request.getfixturevalue("session_kafka")
        asyncio.run(delete_topics(kafka.bootstrap_servers))
        yield kafka
        return
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def apache_kafka(tmp_path: Path) -> Iterator[ApacheKafka]:
    """A one-node Apache Kafka of this test's own (scripts/kafka-broker), stopped afterwards."""
    with ApacheKafka(tmp_path / "kafka") as running:
        yield running


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'rtdstream.sqlite3'}"


@pytest.fixture(scope="session")
def mariadb() -> MariaDB:
    """The machine's MariaDB (127.0.0.1:3306, root, empty password); started if it is down."""
    server = MariaDB.from_environment()
    server.ensure_running()
    return server


@pytest.fixture
def mysql_url(mariadb: MariaDB) -> Iterator[str]:
    """A new empty database on MariaDB for one test, dropped afterwards."""
    name = f"rtd_test_{uuid.uuid4().hex[:12]}"
    mariadb.create_database(name)
    try:
        yield mariadb.url(name)
    finally:
        mariadb.drop_database(name)


@pytest.fixture
def rtd_env(broker: EmbeddedBroker, sqlite_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for rtdstream processes pointed at this test's broker and database."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RTD_")}
    env.update(
        RTD_BROKER=broker.url,
        RTD_DATABASE_URL=sqlite_url,
        RTD_SESSION_TIMEOUT="6s",
        RTD_PARTITIONS="4",
        RTD_LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    if TEST_BROKER == "kafka":  # one cluster for the session: a consumer group of this test's own
        env["RTD_APP_ID"] = f"rtd-test-{uuid.uuid4().hex[:8]}"
    env.pop("PORT", None)
    return env


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ProcessGroup]:
    """Start rtdstream commands as real processes; all are stopped (and checked gone) after the test."""
    group = ProcessGroup(log_dir=tmp_path / "logs", cwd=tmp_path)
    try:
        yield group
    finally:
        group.stop_all()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            group.dump_logs()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
