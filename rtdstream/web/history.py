"""The database behind the live view: last values after a restart and the history in subscribe acks.

Every call waits at most ``timeout`` seconds and answers None when the
database is slow or down, so a database outage costs the live view its
history, never its live data.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from rtdstream.sink.repository import HistoryRepository

log = logging.getLogger(__name__)

#: Window aggregates read per source for a subscribe ack (the newest of each window name is kept).
RECENT_WINDOWS = 50
DATABASE_ERRORS = (SQLAlchemyError, OSError, TimeoutError)


class StoredHistory:
    def __init__(self, repository: HistoryRepository, *, timeout: float = 3.0) -> None:
        self.repository = repository
        self.timeout = timeout
        #: The highest readings id counted in :attr:`_stored` (None: not read yet).
        self._counted_to: int | None = None
        self._stored = 0

    async def recent(self, source: str, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        """(newest readings, newest window aggregates) of ``source``, or None when unavailable."""
        try:
            async with asyncio.timeout(self.timeout):
                readings = (await self.repository.readings(source, limit=limit, order="desc")).rows if limit else []
                windows = (await self.repository.windows(source, limit=RECENT_WINDOWS, order="desc")).rows
        except DATABASE_ERRORS as exc:
            log.warning("history of %s unavailable: %s", source, exc)
            return None
        return readings, windows

    async def stored_total(self) -> int | None:
        """Readings stored since the first call, for the health panel's stored rate; None when unavailable.

        Each call counts the rows past the highest id the one before saw (by
        primary key: as many rows as were stored since). The growth of the
        highest id is no count: the sink's ``INSERT ... SELECT`` leaves gaps in
        the ids on MariaDB (the highest id passed 200,000 with 153,861 readings
        stored, in a benchmark). A transaction that commits after a later one of another
        worker has ids below the mark and is missed, so with several workers
        the rate can read a little low.
        """
        try:
            async with asyncio.timeout(self.timeout):
                if self._counted_to is None:
                    self._counted_to = await self.repository.max_reading_id()
                    return None if self._counted_to is None else self._stored
                counted = await self.repository.readings_after(self._counted_to)
        except DATABASE_ERRORS:
            return None
        if counted is None:  # the table is gone
            self._counted_to = None
            return None
        newer, top = counted
        if top >= self._counted_to:
            self._stored += newer
        self._counted_to = top  # below the mark: the table was emptied, and counting starts again from there
        return self._stored

    async def latest(self) -> list[dict[str, Any]] | None:
        """The newest stored reading of every source, or None when unavailable."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self.repository.latest()
        except DATABASE_ERRORS as exc:
            log.warning("last values unavailable from the database: %s", exc)
            return None
