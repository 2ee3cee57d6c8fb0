"""Per-client limits of the Socket.IO server: message size, message rate, and packets that make sense.

python-socketio starts a task for every event a client sends, logs a traceback
for every packet it cannot decode and keeps that client, and collects binary
attachments for as long as a client announces more. So one client could keep
the web view busy (each ``subscribe`` of an unknown source is a database
query), fill its log, or its memory. :class:`GuardedServer` looks at every
message before the library does: over the client's allowance it is dropped and
counted, and a client that keeps flooding, or sends anything rtdstream's
clients never send, is counted and disconnected, with one log line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiolimiter import AsyncLimiter
from socketio import packet

from rtdstream import metrics
from rtdstream.web.socketio_internals import (
    HookedServer,
    force_close,
    forget_session,
    open_socket,
    session_of_request,
)

log = logging.getLogger(__name__)

#: Largest message a client may send (python-socketio's default is 1 MB). Clients send
#: ``subscribe``/``unsubscribe`` with a source id: a few dozen bytes. A bigger message
#: closes the connection (websocket) or gets 400 (polling).
MAX_CLIENT_MESSAGE_BYTES = 64 * 1024
#: Packet types a client sends: connect, disconnect, event, and acks (of nothing: harmless).
_CLIENT_PACKETS = frozenset({packet.CONNECT, packet.DISCONNECT, packet.EVENT, packet.ACK})


class MessageAllowance:
    """One client's budget: ``burst`` messages at once, refilled at ``rate`` a second."""

    def __init__(self, rate: float, burst: int) -> None:
        self._limiter = AsyncLimiter(burst, burst / rate)
        #: Messages dropped since the last one allowed.
        self.refused = 0

    async def allow(self) -> bool:
        if self._limiter.has_capacity():
            await self._limiter.acquire()  # returns at once: there is capacity
            self.refused = 0
            return True
        self.refused += 1
        return False


def packet_problem(packet_class: type[packet.Packet], data: Any) -> str | None:
    """Why ``data`` is not a packet an rtdstream client sends; None when it is one."""
    if not isinstance(data, str):
        return "binary data"
    try:
        pkt = packet_class(encoded_packet=data)
    except (ValueError, TypeError) as exc:
        return f"undecodable packet ({exc})"
    if pkt.packet_type not in _CLIENT_PACKETS:
        return f"packet type {pkt.packet_type}"
    if pkt.packet_type == packet.EVENT and not (
        isinstance(pkt.data, list) and pkt.data and isinstance(pkt.data[0], str)
    ):
        return "event without a name"
    return None


class GuardedServer(HookedServer):
    """python-socketio's server with a message size bound, a per-client rate and packet checks.

    It looks at each client message through :class:`~rtdstream.web.socketio_internals.HookedServer`:
    the one place every client message passes, which python-socketio has no public hook for.
    """

    def __init__(self, *, message_rate: float, message_burst: int, **kwargs: Any) -> None:
        super().__init__(max_http_buffer_size=MAX_CLIENT_MESSAGE_BYTES, **kwargs)
        self.message_rate = message_rate
        self.message_burst = message_burst
        self._allowances: dict[str, MessageAllowance] = {}

    async def accept_message(self, eio_sid: str, data: Any) -> bool:
        """Whether ``data`` is within the client's allowance and a packet rtdstream's clients send."""
        allowance = self._allowances.get(eio_sid)
        if allowance is None:
            allowance = self._allowances[eio_sid] = MessageAllowance(self.message_rate, self.message_burst)
        if not await allowance.allow():
            metrics.WEB_REFUSED_MESSAGES.labels("rate_limited").inc()
            if allowance.refused == self.message_burst:
                await self._cut_off(eio_sid, "flood", f"sent {self.message_burst} messages over its allowance")
            return False
        problem = packet_problem(self.packet_class, data)
        if problem is not None:
            metrics.WEB_REFUSED_MESSAGES.labels("invalid_packet").inc()
            await self._cut_off(eio_sid, "invalid_packet", f"sent {problem}")
            return False
        return True

    def client_gone(self, eio_sid: str) -> None:
        self._allowances.pop(eio_sid, None)

    async def refuse_request(self, request: web.Request, what: str) -> None:
        """End the session of the client that made ``request``, which broke the protocol (``what``)."""
        metrics.WEB_REFUSED_MESSAGES.labels("invalid_packet").inc()
        eio_sid = session_of_request(self, request)
        if eio_sid is None:
            log.warning("client %s %s: refusing it", request.remote, what)
        else:
            await self._cut_off(eio_sid, "invalid_packet", what)

    async def _cut_off(self, eio_sid: str, reason: str, what: str) -> None:
        socket = open_socket(self, eio_sid)
        if socket is None:
            return
        log.warning("client %s %s: disconnecting it", eio_sid, what)
        metrics.WEB_ABUSE_DISCONNECTS.labels(reason).inc()
        await force_close(socket)  # a client that floods may not read either
        forget_session(self, eio_sid)


def refuse_bad_transport_requests(server: GuardedServer, path: str = "/socket.io/") -> Any:
    """aiohttp middleware for what Engine.IO mishandles before :class:`GuardedServer` sees it.

    A polling POST over the size bound made Engine.IO close the session and
    wait for its queue to drain, which nobody polls: the request hung forever,
    holding its connection. A websocket frame Engine.IO cannot decode made it
    raise out of its handler, leaving a traceback in the log and the session
    open until its ping timed out (45 s). Both now end the client's session at
    once, with one log line.
    """

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(path):
            return await handler(request)
        if request.method == "POST" and (request.content_length or 0) > MAX_CLIENT_MESSAGE_BYTES:
            await server.refuse_request(request, f"sent a {request.content_length}-byte message")
            return web.Response(status=413, text=f"messages are limited to {MAX_CLIENT_MESSAGE_BYTES} bytes")
        if request.query.get("transport") != "websocket":
            return await handler(request)
        try:
            return await handler(request)
        except ValueError as exc:
            await server.refuse_request(request, f"sent an undecodable frame ({exc})")
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=400)  # the connection is closed already: nothing is sent

    return middleware
