"""A TCP proxy a test can cut and restore, to simulate a database outage without touching the server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Self

from rtdstream.broker import free_port


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target`` from a thread of its own (usable from sync and async tests).

    :meth:`cut` drops every open connection and refuses new ones, the way a
    crashed server or a pulled cable looks to a client; :meth:`restore`
    accepts connections again. :meth:`lose_next_reply` drops a connection
    just after the server answered a request, so the client never learns the
    answer of a request the server carried out.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lose_next_reply = False

    def __enter__(self) -> Self:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def cut(self) -> None:
        self._call(self._close())

    def restore(self) -> None:
        self._call(self._listen())

    def lose_next_reply(self) -> None:
        """The next bytes a server sends are dropped with their connection (new connections are accepted)."""
        self._call(self._arm_reply_loss())

    async def _arm_reply_loss(self) -> None:
        self._lose_next_reply = True

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)  # type: ignore[arg-type]

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _shutdown(self) -> None:
        await self._close()
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers.update((client_writer, server_writer))
        with contextlib.suppress(asyncio.CancelledError):  # the proxy shutting down
            await asyncio.gather(
                self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer, server_writer)
            )
        self._writers.difference_update((client_writer, server_writer))

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, replier: asyncio.StreamWriter | None = None
    ) -> None:
        """Copy ``reader`` to ``writer``; ``replier`` names the server's end when these are its replies."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                if replier is not None and self._lose_next_reply:
                    self._lose_next_reply = False
                    replier.transport.abort()
                    break
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
