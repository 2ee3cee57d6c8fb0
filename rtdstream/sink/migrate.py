"""Bring the database to the schema this rtdstream needs, before anything writes to it.

The worker runs :func:`prepare` before it joins Kafka, and ``rtdstream db
upgrade`` runs it on demand. Revisions only ever add; an existing legacy
``Data`` table is used as it is, whoever created it.
"""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError
from sqlalchemy import exc
from sqlalchemy.ext.asyncio import AsyncEngine

from rtdstream.backoff import Backoff
from rtdstream.config import DatabaseSettings
from rtdstream.errors import UserError
from rtdstream.sink.database import DatabaseUnavailable, create_engine, is_unreachable, masked, reason
from rtdstream.sink.schema import VERSION_TABLE, legacy_data

log = logging.getLogger(__name__)
# Alembic narrates every step at INFO; one line per upgrade (below) says what matters.
logging.getLogger("alembic").setLevel(logging.WARNING)

MIGRATIONS = "rtdstream.sink:migrations"
#: Serialises the migrations of workers that start together against one MySQL server.
MYSQL_LOCK = "rtdstream.migrations"
MYSQL_LOCK_SECONDS = 60
LEGACY_COLUMNS = ("time", "speed", "createdAt", "updatedAt")


class LegacyTableMismatch(UserError):
    """An existing ``Data`` table lacks columns of the original layout."""


async def prepare(settings: DatabaseSettings) -> str:
    """Migrate RTD_DATABASE_URL to the newest revision (and the legacy table if on); the revision.

    An unreachable server is waited for up to RTD_DATABASE_WAIT (it may still
    be starting); anything else, such as bad credentials or an unknown
    database, fails at once with :class:`DatabaseUnavailable`.
    """
    engine = create_engine(settings.database_url, writer=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.database_wait
    backoff = Backoff(initial=0.5, cap=5.0)
    try:
        while True:
            try:
                return await upgrade(engine, legacy=settings.legacy_table)
            except (exc.DBAPIError, OSError) as error:
                delay = backoff.next()
                if not is_unreachable(error) or loop.time() + delay > deadline:
                    raise DatabaseUnavailable(settings.database_url, error) from None
                log.warning(
                    "database %s unreachable (%s); retrying in %.1fs",
                    masked(settings.database_url), reason(error), delay,
                )
                await asyncio.sleep(delay)
            except CommandError as error:
                raise DatabaseUnavailable(settings.database_url, error) from None
    finally:
        await engine.dispose()


async def upgrade(engine: AsyncEngine, *, legacy: bool = False, revision: str = "head") -> str:
    """Run the migrations up to ``revision`` in one transaction (where the database allows); the revision."""
    async with engine.begin() as connection:
        mysql = connection.dialect.name == "mysql"
        if mysql:
            await _lock(connection)
        try:
            return await connection.run_sync(_upgrade, revision, legacy)
        finally:
            if mysql:
                await connection.execute(sa.text("DO RELEASE_LOCK(:name)"), {"name": MYSQL_LOCK})


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema revision of the database, None when it has none yet."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current)


async def _lock(connection: sa.ext.asyncio.AsyncConnection) -> None:
    got = await connection.scalar(
        sa.text("SELECT GET_LOCK(:name, :seconds)"), {"name": MYSQL_LOCK, "seconds": MYSQL_LOCK_SECONDS}
    )
    if got != 1:
        raise UserError(f"another process held the migration lock {MYSQL_LOCK!r} for {MYSQL_LOCK_SECONDS}s")


def _upgrade(connection: sa.Connection, revision: str, legacy: bool) -> str:
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    config.attributes["connection"] = connection
    before = _current(connection)
    command.upgrade(config, revision)
    after = _current(connection) or "base"
    if after != before:
        log.info("database schema upgraded from %s to %s", before or "empty", after)
    if legacy:
        _ensure_legacy_table(connection)
    return after


def _current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _ensure_legacy_table(connection: sa.Connection) -> None:
    connection.execute(sa.schema.CreateTable(legacy_data, if_not_exists=True))
    present = {column["name"] for column in sa.inspect(connection).get_columns(legacy_data.name)}
    missing = [name for name in LEGACY_COLUMNS if name not in present]
    if missing:
        raise LegacyTableMismatch(
            f"table Data exists without the column(s) {', '.join(missing)} of the original layout; "
            "rename it or switch RTD_LEGACY_TABLE off"
        )
