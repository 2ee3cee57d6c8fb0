"""A websocket that speaks Engine.IO v4 / Socket.IO v5 by hand, to send what no client library would."""

from __future__ import annotations

import asyncio
from typing import Self

import aiohttp

#: Engine.IO "message" + Socket.IO "connect" to the namespace "/".
CONNECT = "40"


class RawSocket:
    """One websocket connection to ``/socket.io/``; frames are sent and read as they are."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.received: list[str] = []

    @classmethod
    async def open(
        cls, http: aiohttp.ClientSession, base_url: str, *, connect: str | None = CONNECT,
        headers: dict[str, str] | None = None,
    ) -> Self:
        """Open the websocket (Engine.IO handshake); then send ``connect`` and wait for its answer."""
        ws = await http.ws_connect(f"{base_url}/socket.io/?EIO=4&transport=websocket", headers=headers)
        raw = cls(ws)
        opened = await ws.receive_str(timeout=10)
        assert opened.startswith("0{"), opened
        if connect is not None:
            await raw.send(connect)
            await raw.wait_for(lambda frame: frame.startswith(("40", "44")))
        return raw

    async def send(self, frame: str | bytes) -> None:
        if isinstance(frame, bytes):
            await self.ws.send_bytes(frame)
        else:
            await self.ws.send_str(frame)

    async def wait_for(self, matches, timeout: float = 10.0) -> str:  # type: ignore[no-untyped-def]
        """The first frame (already received or arriving within ``timeout``) for which ``matches`` holds."""
        for frame in self.received:
            if matches(frame):
                return frame
        async with asyncio.timeout(timeout):
            while True:
                frame = await self._next()
                if frame is None:
                    raise AssertionError(f"connection closed; frames: {self.received[-5:]}")
                if matches(frame):
                    return frame

    async def collect(self, seconds: float) -> bool:
        """Read for ``seconds`` (answering pings); True if the server closed the connection meanwhile."""
        try:
            async with asyncio.timeout(seconds):
                while await self._next() is not None:
                    pass
                return True
        except TimeoutError:
            return False

    async def _next(self) -> str | None:
        message = await self.ws.receive()
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
            return None
        frame = message.data if isinstance(message.data, str) else repr(message.data)
        if frame == "2":
            await self.ws.send_str("3")  # Engine.IO ping -> pong
        self.received.append(frame)
        return frame

    def events(self) -> list[str]:
        """Socket.IO event frames received (``42...``), acks excluded."""
        return [frame for frame in self.received if frame.startswith("42")]

    async def close(self) -> None:
        await self.ws.close()
