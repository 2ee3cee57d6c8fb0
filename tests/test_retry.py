"""The retry policy: outages are retried, anything else ends the process once, loudly, to be restarted."""

from __future__ import annotations

import asyncio
import sqlite3

import pymysql
import pytest
import sqlalchemy as sa
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NotLeaderForPartitionError,
    TopicAuthorizationFailedError,
)

from rtdstream.broker import EmbeddedBroker
from rtdstream.models import ReadingBatch
from rtdstream.retry import EXIT_BUG, is_transient
from tests.support.processes import ProcessGroup, start_worker, until
from tests.support.web import now_ms, produce_readings


def mysql_error(kind: type[sa.exc.DBAPIError], code: int) -> sa.exc.DBAPIError:
    return kind("INSERT ...", {}, pymysql.err.OperationalError(code, "message"))


@pytest.mark.parametrize(("error", "transient"), [
    (KafkaConnectionError(), True),
    (NotLeaderForPartitionError(), True),
    (KafkaTimeoutError(), True),  # expired in the client's buffer: never sent
    (MessageSizeTooLargeError(), False),
    (TopicAuthorizationFailedError(), False),
    (ConnectionResetError(), True),
    (TimeoutError(), True),
    (mysql_error(sa.exc.OperationalError, 2003), True),  # can't connect
    (mysql_error(sa.exc.OperationalError, 2013), True),  # lost connection during a query
    (mysql_error(sa.exc.OperationalError, 1205), True),  # lock wait timeout
    (mysql_error(sa.exc.OperationalError, 1213), True),  # deadlock
    (mysql_error(sa.exc.OperationalError, 1054), False),  # unknown column
    (mysql_error(sa.exc.ProgrammingError, 1146), False),  # no such table
    (sa.exc.InterfaceError("SELECT 1", {}, pymysql.err.InterfaceError(0, "")), True),  # closed under us
    (sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked")), True),
    (sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("no such column: speed")), False),
    (TypeError("a bug"), False),
])
def test_outages_are_transient_and_everything_else_is_not(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient


async def test_a_database_error_no_retry_can_fix_ends_the_worker_once_with_its_traceback(
    broker: EmbeddedBroker, rtd_env: dict[str, str], processes: ProcessGroup
) -> None:
    worker, _ = await start_worker(processes, rtd_env)
    database = rtd_env["RTD_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    t0 = now_ms()
    await produce_readings(broker.bootstrap_servers, [ReadingBatch("s1", [t0], [1])])

    def stored() -> int:
        with sqlite3.connect(database) as conn:
            return conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]

    await until(lambda: stored() == 1, timeout=60, what="the first reading stored")
    with sqlite3.connect(database) as conn:  # an operator's mistake: the sink's statement no longer fits
        conn.execute("ALTER TABLE readings RENAME COLUMN speed TO velocity")
    await produce_readings(broker.bootstrap_servers, [ReadingBatch("s1", [t0 + 1], [2])])

    assert await asyncio.to_thread(worker.popen.wait, 90) == EXIT_BUG
    log = worker.log_text()
    # One record: the error with its traceback (chained, as SQLAlchemy raises it), and no retry.
    assert log.count("no retry can fix") == 1 and "Traceback (most recent call last)" in log, log[-3000:]
    assert "has no column named speed" in log and "retrying in" not in log
