"""Schema migrations, the legacy table, and what a user sees when the database cannot be used."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from rtdstream.broker import free_port
from rtdstream.config import load_settings
from rtdstream.sink.database import DatabaseUnavailable
from rtdstream.sink.migrate import LegacyTableMismatch, current_revision, prepare, upgrade
from rtdstream.sink.records import SinkBatch, decode_readings
from rtdstream.sink.writer import SinkWriter
from rtdstream.topics import VALIDATED
from tests.support.processes import ProcessGroup
from tests.support.sink import T0, envelopes, query

HEAD = "0003"
#: What Sequelize 6 ``sync()`` runs for the original backend's model, per dialect.
SEQUELIZE_DDL = {
    "mysql": "CREATE TABLE IF NOT EXISTS `Data` (`id` INTEGER NOT NULL auto_increment , `time` VARCHAR(255), "
    "`speed` VARCHAR(255), `createdAt` DATETIME NOT NULL, `updatedAt` DATETIME NOT NULL, "
    "PRIMARY KEY (`id`)) ENGINE=InnoDB;",
    "sqlite": "CREATE TABLE IF NOT EXISTS `Data` (`id` INTEGER PRIMARY KEY AUTOINCREMENT, `time` VARCHAR(255), "
    "`speed` VARCHAR(255), `createdAt` DATETIME NOT NULL, `updatedAt` DATETIME NOT NULL);",
}


async def tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names()))


async def test_upgrade_from_empty(blank_engine: AsyncEngine) -> None:
    engine = blank_engine
    assert await current_revision(engine) is None
    assert await upgrade(engine) == HEAD
    assert await upgrade(engine) == HEAD  # again: nothing to do, nothing dropped
    assert {"readings", "window_aggregates", "sink_offsets", "sink_origins", "sink_source_origins"} <= await tables(engine)
    assert "Data" not in await tables(engine)  # only with the legacy writer on
    assert await current_revision(engine) == HEAD


async def test_upgrade_from_previous_revision_keeps_rows(blank_engine: AsyncEngine) -> None:
    engine = blank_engine
    assert await upgrade(engine, revision="0001") == "0001"
    assert "window_aggregates" not in await tables(engine)
    async with engine.begin() as conn:
        await conn.execute(
            sa.text("INSERT INTO readings (source, time, speed) VALUES (:s, :t, :v)"),
            [{"s": "s1", "t": T0 + i, "v": i} for i in range(5)],
        )

    assert await upgrade(engine) == HEAD

    assert await query(engine, "SELECT COUNT(*), MIN(time), MAX(speed) FROM readings") == [(5, T0, 4.0)]
    assert await query(engine, "SELECT COUNT(*) FROM window_aggregates") == [(0,)]


async def test_legacy_table_is_created_in_the_original_layout(database_url: str, blank_engine: AsyncEngine) -> None:
    assert await prepare(load_settings(database_url=database_url, legacy_table=True)) == HEAD
    await write_readings(blank_engine, envelopes("s1", 2, 3))

    rows = await query(blank_engine, "SELECT id, time, speed, createdAt = updatedAt FROM Data ORDER BY id")
    assert rows == [(i + 1, str(T0 + i), str(i % 50), 1) for i in range(6)]
    async with blank_engine.connect() as conn:
        columns = await conn.run_sync(lambda sync: sa.inspect(sync).get_columns("Data"))
    layout = [(c["name"], type(c["type"]).__name__.upper(), c["nullable"]) for c in columns]
    assert layout == [
        ("id", "INTEGER", False),
        ("time", "VARCHAR", True),
        ("speed", "VARCHAR", True),
        ("createdAt", "DATETIME", False),
        ("updatedAt", "DATETIME", False),
    ]


async def test_existing_sequelize_data_table_is_used_as_is(database_url: str, blank_engine: AsyncEngine) -> None:
    async with blank_engine.begin() as conn:
        await conn.exec_driver_sql(SEQUELIZE_DDL[blank_engine.dialect.name])
        await conn.exec_driver_sql(
            "INSERT INTO Data (time, speed, createdAt, updatedAt) "
            "VALUES ('1718000000000', '16', '2024-06-10 06:13:20', '2024-06-10 06:13:20')"
        )
    assert await prepare(load_settings(database_url=database_url, legacy_table=True)) == HEAD

    await write_readings(blank_engine, envelopes("s1", 1, 2))
    assert await query(blank_engine, "SELECT id, time, speed FROM Data ORDER BY id") == [
        (1, "1718000000000", "16"), (2, str(T0), "0"), (3, str(T0 + 1), "1"),
    ]


async def test_data_table_of_another_layout_stops_the_start(database_url: str, blank_engine: AsyncEngine) -> None:
    async with blank_engine.begin() as conn:
        await conn.exec_driver_sql("CREATE TABLE Data (id INTEGER PRIMARY KEY, payload TEXT)")
    with pytest.raises(LegacyTableMismatch, match="time, speed, createdAt, updatedAt"):
        await prepare(load_settings(database_url=database_url, legacy_table=True))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql+aiomysql://root:not-the-password@127.0.0.1:3306/test", "Access denied"),
        ("mysql+aiomysql://root@127.0.0.1:3306/rtd_no_such_database", "Unknown database"),
        ("mysql+aiomysql://root:s3cret@127.0.0.1:{free}/test", "Can't connect"),
        ("sqlite+aiosqlite:////nonexistent-dir/rtd.sqlite3", "unable to open database file"),
    ],
    ids=["bad-credentials", "unknown-database", "unreachable", "bad-sqlite-path"],
)
async def test_unusable_database_is_one_clear_error(url: str, expected: str) -> None:
    url = url.format(free=free_port())
    with pytest.raises(DatabaseUnavailable) as raised:
        await prepare(load_settings(database_url=url, database_wait="1s"))
    await asyncio.sleep(0.2)  # aiosqlite's thread closes a failed connection after the error is raised
    message = str(raised.value)
    assert message.startswith("cannot use the database RTD_DATABASE_URL=")
    assert expected in message
    assert "s3cret" not in message and "not-the-password" not in message
    assert "\n" not in message


def test_db_upgrade_command(processes: ProcessGroup, rtd_env: dict[str, str], sqlite_url: str) -> None:
    proc = processes.start("db", ["db", "upgrade"], {**rtd_env, "RTD_LEGACY_TABLE": "true"})
    assert proc.popen.wait(timeout=60) == 0
    assert f"is at schema revision {HEAD}" in proc.log_text()


@pytest.mark.parametrize("database", ["bad-credentials", "unreachable"])
def test_worker_exits_with_one_clear_line(
    database: str, processes: ProcessGroup, rtd_env: dict[str, str]
) -> None:
    url = {
        "bad-credentials": "mysql+aiomysql://root:s3cret@127.0.0.1:3306/test",
        "unreachable": f"mysql+aiomysql://root:s3cret@127.0.0.1:{free_port()}/test",
    }[database]
    env = {**rtd_env, "RTD_DATABASE_URL": url, "RTD_DATABASE_WAIT": "1s"}
    worker = processes.start("worker", ["worker", "-l", "info", "--web-port", str(free_port())], env)

    assert worker.popen.wait(timeout=90) != 0
    output = worker.log_text()
    errors = [line for line in output.splitlines() if "RTD_DATABASE_URL" in line]
    masked = url.replace("s3cret", "***")
    assert len(errors) == 1
    assert f"rtdstream worker: cannot use the database RTD_DATABASE_URL={masked}: " in errors[0]
    assert "s3cret" not in output
    assert "Traceback" not in output


async def write_readings(engine: AsyncEngine, messages: list[bytes]) -> None:
    """Write rtd.validated messages through the sink, with the legacy writer on."""

    async def no_dead_letters(topic: str, rejected: list) -> None:
        raise AssertionError(f"nothing should be rejected: {rejected}")

    await SinkWriter(engine, send_dead_letters=no_dead_letters, legacy=True).write_until_done(
        SinkBatch(VALIDATED, [decode_readings(m, 0, i) for i, m in enumerate(messages)])
    )
