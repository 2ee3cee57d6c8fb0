"""Read one stream URL forever: connect, frame, hand records on, reconnect.

The original backend never reconnected after a clean end of stream. Here every
way a stream can stop (refused connection, HTTP error, HTML instead of a
stream, redirect loop, stall, clean end) leads to the same path: a log line
saying what happened, then a reconnect after a capped, jittered backoff. The
backoff resets only once a record has arrived, so a server that accepts and
hangs up at once is not hammered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from rtdstream.backoff import Backoff
from rtdstream.bridge.framing import Frame, LineFramer

log = logging.getLogger(__name__)

#: Takes the frames of one chunk, in stream order: one call per chunk, so no coroutine per reading.
FramesHandler = Callable[[list[Frame]], Awaitable[None]]
UrlProvider = Callable[[], str]


class StreamRejected(Exception):
    """The server answered, but not with a stream of readings."""


class StreamReader:
    """One URL's reading loop; :meth:`run` returns only when cancelled."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        on_frames: FramesHandler,
        *,
        max_line_bytes: int,
        read_timeout: float,
        connect_url: UrlProvider | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.url = url
        self._connect_url = connect_url or (lambda: url)
        self._session = session
        self._on_frames = on_frames
        self._max_line_bytes = max_line_bytes
        self._timeout = aiohttp.ClientTimeout(total=None, connect=10.0, sock_read=read_timeout)
        self._backoff = backoff or Backoff(initial=0.5, cap=30.0)
        self._handover: asyncio.Future[None] | None = None
        self.connections = 0

    async def run(self) -> None:
        while True:
            try:
                ended = await self._read_once()
                log.info("stream %s ended cleanly after %d records", self.url, ended)
            except asyncio.TimeoutError:
                log.warning("stream %s stalled: no data for %.0fs", self.url, self._timeout.sock_read)
            except aiohttp.TooManyRedirects:
                log.warning("stream %s redirects too many times", self.url)
            except StreamRejected as exc:
                log.warning("stream %s: %s", self.url, exc)
            except (aiohttp.ClientError, OSError) as exc:
                log.warning("stream %s failed: %s", self.url, exc or type(exc).__name__)
            delay = self._backoff.next()
            log.info("reconnecting to %s in %.1fs", self.url, delay)
            await asyncio.sleep(delay)

    async def _read_once(self) -> int:
        """Read one connection to its end; the number of records it delivered."""
        framer = LineFramer(self._max_line_bytes)
        records = 0
        async with self._session.get(self._connect_url(), timeout=self._timeout, max_redirects=5) as response:
            _check_response(response)
            self.connections += 1
            log.info("connected to %s", self.url)
            try:
                async for chunk in response.content.iter_any():
                    records += await self._deliver(framer.feed(chunk))
            finally:
                # A last line without its newline is still a record, or a dead letter.
                records += await self._deliver(framer.close())
        return records

    async def _deliver(self, frames: list[Frame]) -> int:
        """Hand frames on; shielded, because what was read must not be lost to a shutdown."""
        if not frames:
            return 0
        self._backoff.reset()
        self._handover = asyncio.ensure_future(self._hand_over(self._handover, frames))
        await asyncio.shield(self._handover)
        return len(frames)

    async def _hand_over(self, previous: asyncio.Future[None] | None, frames: list[Frame]) -> None:
        if previous is not None:
            await previous  # a handover interrupted by a shutdown finishes first: order is kept
        await self._on_frames(frames)

    async def finish_handover(self) -> None:
        """After cancelling :meth:`run`, wait until the frames it had read are handed on."""
        if self._handover is not None:
            await self._handover


def _check_response(response: aiohttp.ClientResponse) -> None:
    if response.status != 200:
        raise StreamRejected(f"HTTP {response.status} {response.reason}")
    content_type = response.headers.get("Content-Type", "")
    if "html" in content_type.lower():
        raise StreamRejected(f"got {content_type}, not a stream of JSON lines (wrong URL?)")
