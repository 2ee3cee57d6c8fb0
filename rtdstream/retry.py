"""One retry policy: what is worth retrying, and what ends the process.

Every stage waits out an outage: the broker or the database going away, a
timeout, a broker that has no leader for a partition yet, a lock wait or a
deadlock in the database. Those pass, and retrying (with :class:`Backoff`) is
the answer. Anything else is a bug or a refusal no retry can change (an
unknown column, a topic the user may not write to, a ``TypeError``):
retrying it forever would hide it behind a log line that repeats while input
piles up. :func:`is_transient` tells the two apart; :func:`exit_on_bug` logs
such an error once with its traceback and ends the process with
:data:`EXIT_BUG`, so a supervisor restarts it and the committed offsets replay
its input (every stage is idempotent on replay).

The process ends with ``os._exit``: in a Faust worker, an exception leaving an
agent would restart the agent in-process, and ``take_events`` would have
acknowledged the batch that failed.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from aiokafka.errors import KafkaError, KafkaTimeoutError

log = logging.getLogger(__name__)

#: Exit status of a process stopped by an error no retry can fix (EX_SOFTWARE).
EXIT_BUG = 70

#: MySQL/MariaDB server errors that pass: too many connections, shutdown in progress, network
#: read/write errors, lock wait timeout, deadlock, connection killed, idle client disconnected.
MYSQL_TRANSIENT = {1040, 1053, 1158, 1159, 1160, 1161, 1205, 1213, 1927, 4031}


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is an outage (retry) rather than a bug or a final refusal (exit)."""
    if isinstance(error, KafkaError):
        # A message that expired in the client's buffer was never sent: sending it again is safe.
        return bool(error.retriable) or isinstance(error, KafkaTimeoutError)
    if isinstance(error, (OSError, TimeoutError)):  # ConnectionError, asyncio.TimeoutError included
        return True
    return _is_transient_database_error(error)


def _is_transient_database_error(error: BaseException) -> bool:
    sqlalchemy = sys.modules.get("sqlalchemy")
    if sqlalchemy is None:
        return False  # not imported, so not one of its errors
    if isinstance(error, sqlalchemy.exc.TimeoutError):  # no connection free in the pool
        return True
    if not isinstance(error, sqlalchemy.exc.DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error, sqlalchemy.exc.InterfaceError):
        return True  # the connection broke (pymysql's InterfaceError: it was closed under us)
    original = error.orig
    args = getattr(original, "args", ())
    if len(args) >= 1 and isinstance(args[0], int):  # pymysql: (code, message)
        code = args[0]
        return 2000 <= code < 3000 or code in MYSQL_TRANSIENT  # 2xxx: the client lost the server
    text = str(original).lower()
    return "database is locked" in text or "database is busy" in text  # SQLite, another writer


def exit_on_bug(what: str, error: BaseException) -> NoReturn:
    """Log ``error`` once with its traceback and end the process with :data:`EXIT_BUG`."""
    log.critical(
        "%s failed with an error no retry can fix; exiting (status %d) so that a restart replays the input",
        what, EXIT_BUG, exc_info=error,
    )
    logging.shutdown()
    os._exit(EXIT_BUG)
