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

    async def max_reading_id(self) -> int | None:
        """The highest stored reading id (the health panel's stored rate), or None when unavailable."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self.repository.max_reading_id()
        except DATABASE_ERRORS:
            return None

    async def latest(self) -> list[dict[str, Any]] | None:
        """The newest stored reading of every source, or None when unavailable."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self.repository.latest()
        except DATABASE_ERRORS as exc:
            log.warning("last values unavailable from the database: %s", exc)
            return None
