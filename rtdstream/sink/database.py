"""Engines for RTD_DATABASE_URL, and what the sink makes of database errors.

Both back ends need a little setup the URL cannot carry:

* SQLite: write-ahead logging, so the web process reads while the worker
  writes; and SQLAlchemy, not the sqlite3 module, emits BEGIN, because the
  module's legacy mode leaves SELECTs and SAVEPOINTs outside the transaction
  (the sink reads its stored offsets and isolates rejected rows in one).
  Writers begin with ``BEGIN IMMEDIATE``: SQLite's stand-in for the
  ``SELECT ... FOR UPDATE`` that serialises writers on MySQL.
* MySQL/MariaDB: strict mode for the session, so an out-of-range value is an
  error that reaches ``rtd.dlq`` rather than a silently clamped row; and UTC,
  the time zone of every DATETIME rtdstream stores.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from rtdstream.errors import UserError

#: How long a SQLite writer waits for another writer's lock before it counts as an outage.
SQLITE_BUSY_SECONDS = 10.0
MYSQL_SESSION = (
    "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES'), "
    "time_zone = '+00:00'"
)
#: pymysql error codes that mean "no server at that address", the one failure worth waiting out at start.
MYSQL_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}


def create_engine(url: str, *, writer: bool = False) -> AsyncEngine:
    """An async engine for ``url``; ``writer`` engines take SQLite's write lock at BEGIN."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(parsed, connect_args={"timeout": SQLITE_BUSY_SECONDS})
        _own_sqlite_transactions(engine, begin="BEGIN IMMEDIATE" if writer else "BEGIN")
        return engine
    parsed, tls = mysql_tls(parsed)
    engine = create_async_engine(
        parsed,
        connect_args={"init_command": MYSQL_SESSION, "connect_timeout": 5, **tls},
        pool_pre_ping=True,
        pool_recycle=3600,
    )
    engine.sync_engine.pool.logger.addFilter(_ONE_LINE_RESET_FAILURES)
    return engine


#: TLS parameters a MySQL URL may carry, as pymysql and SQLAlchemy's MySQL dialects name them.
MYSQL_TLS_PARAMETERS = ("ssl_ca", "ssl_cert", "ssl_key", "ssl_check_hostname")


def mysql_tls(url: sa.URL) -> tuple[sa.URL, dict[str, ssl.SSLContext]]:
    """``url`` without its ``ssl_*`` parameters, and the connect argument they stand for.

    ``?ssl_ca=/ca.pem&ssl_cert=/client.pem&ssl_key=/client.key&ssl_check_hostname=false`` is how
    SQLAlchemy documents TLS for MySQL, but it hands them to the driver as a dict, and aiomysql
    takes only an :class:`ssl.SSLContext`: this builds it. With any of them the connection
    requires TLS and verifies the server (against ``ssl_ca``, else the system's authorities).
    """
    query = {key: value for key, value in url.query.items() if key not in MYSQL_TLS_PARAMETERS}
    given = {key: url.query[key] for key in MYSQL_TLS_PARAMETERS if key in url.query}
    if not given:
        return url, {}
    context = ssl.create_default_context(cafile=_one(given.get("ssl_ca")))
    if "ssl_cert" in given:
        context.load_cert_chain(_one(given["ssl_cert"]), _one(given.get("ssl_key")))
    if str(_one(given.get("ssl_check_hostname")) or "true").lower() in ("false", "0", "no"):
        context.check_hostname = False
    return url.set(query=query), {"ssl": context}


def _one(value: str | tuple[str, ...] | None) -> str | None:
    return value[-1] if isinstance(value, tuple) else value


class _OneLineResetFailures(logging.Filter):
    """A connection lost as it goes back to the pool: one warning line, not an error with a traceback.

    The pool rolls back every connection handed back to it; when the server
    went away in between (any outage can catch one there), SQLAlchemy logs
    the failed rollback as an ERROR with a traceback, then discards the
    connection and carries on. Nothing is lost and the sink reports the
    outage itself, so an operator gets one line saying what happened.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.msg == "Exception during reset or similar":
            record.msg = "a database connection was lost as it went back to the pool (%s); discarded"
            record.args = (reason(record.exc_info[1]),)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_ONE_LINE_RESET_FAILURES = _OneLineResetFailures()


def _own_sqlite_transactions(engine: AsyncEngine, *, begin: str) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the sqlite3 module stops issuing BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql(begin)


def masked(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except exc.ArgumentError:
        return "<unparseable URL>"


def is_row_error(error: BaseException) -> bool:
    """True when the database refused the data itself: retrying the same rows cannot help.

    Everything else (lost connections, lock waits, deadlocks, a missing table)
    may pass, so the sink keeps the batch and retries instead of losing it.
    """
    return isinstance(error, (exc.DataError, exc.IntegrityError, OverflowError))


def reason(error: BaseException) -> str:
    """The database's own message, without SQLAlchemy's statement dump and links."""
    original = getattr(error, "orig", None) or error
    args = getattr(original, "args", ())
    if len(args) == 2 and isinstance(args[0], int):  # pymysql: (code, message)
        return f"{args[1]} (MySQL error {args[0]})"
    return str(original).splitlines()[0] if str(original) else type(original).__name__


def is_unreachable(error: BaseException) -> bool:
    """True when nothing answered at the database's address (as opposed to a refusal)."""
    original = getattr(error, "orig", None) or error
    args = getattr(original, "args", ())
    return bool(args) and args[0] in MYSQL_UNREACHABLE


class DatabaseUnavailable(UserError):
    """The database of RTD_DATABASE_URL cannot be used: the message says why, without the password."""

    def __init__(self, url: str, cause: BaseException) -> None:
        super().__init__(f"cannot use the database RTD_DATABASE_URL={masked(url)}: {reason(cause)}")
