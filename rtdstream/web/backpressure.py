"""Per-client bounded queues for Socket.IO: a slow client loses live pushes, never slows the others.

python-socketio hands every packet to the client's Engine.IO queue, which has
no bound: a client that stops reading would make the server keep every packet
for it. :class:`BackpressureManager` looks at that queue before each packet.
Over ``max_queue`` the packet is skipped for that client and counted (for the
live events this is coalescing: the next one carries the newest value), and a
client that stays over the bound for ``slow_timeout`` seconds is disconnected,
its queue emptied and its connection closed, so its memory is given back.

Encoding happens once per emit, as in python-socketio's own manager, and the
packet goes to each client's queue directly instead of through one task per
client: at thousands of emits a second that is most of the cost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from socket import SO_SNDBUF, SOL_SOCKET
from typing import Any

import socketio
from aiohttp import web
from engineio import packet as eio_packet

from rtdstream import metrics
from rtdstream.web.socketio_internals import (
    all_sockets,
    discard_queue,
    encode_event,
    force_close,
    has_namespace,
    has_participants,
    open_socket,
    queued_packets,
    send_packets,
    session_socket,
)

log = logging.getLogger(__name__)

NAMESPACE = "/"
#: Kernel send buffer of a Socket.IO websocket (Linux doubles it): ~2.5 MB/s at 100 ms round trip.
WEBSOCKET_SEND_BUFFER = 128 * 1024


class BackpressureManager(socketio.AsyncManager):
    """A client manager that drops packets for clients whose queue is full."""

    def __init__(self, *, max_queue: int, slow_timeout: float) -> None:
        super().__init__()
        self.max_queue = max_queue
        self.slow_timeout = slow_timeout
        #: eio sid -> monotonic time since which the client's queue has been full.
        self._behind_since: dict[str, float] = {}
        #: eio sid -> the task disconnecting that client.
        self._dropping: dict[str, asyncio.Task[None]] = {}
        #: eio sid -> the websocket request of the client, to close a stalled connection.
        self._websockets: dict[str, web.Request] = {}

    def has_participants(self, room: str, namespace: str = NAMESPACE) -> bool:
        return has_participants(self, room, namespace)

    def track_websocket(self, eio_sid: str, request: web.Request) -> None:
        """Remember the connection a websocket client uses (see :func:`track_websockets`)."""
        self._websockets[eio_sid] = request

    def forget_websocket(self, eio_sid: str, request: web.Request) -> None:
        if self._websockets.get(eio_sid) is request:
            del self._websockets[eio_sid]

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        if callback is not None:
            # Per-client acknowledgement ids need per-client packets; rtdstream
            # never broadcasts with a callback, so the library's path is fine.
            await super().emit(event, data, namespace, room, skip_sid, callback, to, **kwargs)
            return
        if not has_namespace(self, namespace):
            return
        room = to or room
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        packets: list[eio_packet.Packet] | None = None
        now = time.monotonic()
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid in skip:
                continue
            socket = open_socket(self.server, eio_sid)
            if socket is None:
                continue
            if queued_packets(socket) >= self.max_queue:
                metrics.WEB_DROPPED.labels(event, "slow_client").inc()
                self._fell_behind(sid, eio_sid, now)
                continue
            self._behind_since.pop(eio_sid, None)
            if packets is None:
                packets = encode_event(event, data, namespace)
            await send_packets(socket, packets)

    def _fell_behind(self, sid: str, eio_sid: str, now: float) -> None:
        since = self._behind_since.setdefault(eio_sid, now)
        if now - since >= self.slow_timeout and eio_sid not in self._dropping:
            self._dropping[eio_sid] = asyncio.get_running_loop().create_task(self._drop(sid, eio_sid, now - since))

    async def _drop(self, sid: str, eio_sid: str, behind_for: float) -> None:
        """Disconnect a client that stayed behind, and free what it holds."""
        try:
            socket = session_socket(self.server, eio_sid)
            discarded = queued_packets(socket) if socket is not None else 0
            log.warning(
                "client %s stayed behind for %.1fs (%d packets waiting): disconnecting it", sid, behind_for, discarded
            )
            metrics.WEB_SLOW_DISCONNECTS.inc()
            metrics.WEB_DROPPED.labels("queued", "too_slow").inc(discarded)
            await self.server.disconnect(sid, namespace=NAMESPACE)
            if socket is not None:
                discard_queue(socket)
                await force_close(socket)  # its writer ends once the connection is aborted below
            request = self._websockets.pop(eio_sid, None)
            if request is not None and request.transport is not None:
                # The writer is stuck sending to a peer that does not read: only
                # closing the connection gives its buffers back.
                request.transport.abort()
        finally:
            self._dropping.pop(eio_sid, None)
            self._behind_since.pop(eio_sid, None)

    async def close_all(self) -> None:
        """Tell every client to go (they reconnect, to another web process if there is one).

        Open websockets and pending long-polls would otherwise hold a shutdown
        until aiohttp's timeout.
        """
        for socket in all_sockets(self.server):
            await force_close(socket, abort=False)

    async def disconnect(self, sid: str, namespace: str, **kwargs: Any) -> None:
        eio_sid = self.eio_sid_from_sid(sid, namespace)
        await super().disconnect(sid, namespace, **kwargs)
        if eio_sid is not None and eio_sid not in self._dropping:
            self._behind_since.pop(eio_sid, None)
            self._websockets.pop(eio_sid, None)


def track_websockets(manager: BackpressureManager, path: str = "/socket.io/") -> Any:
    """aiohttp middleware for Socket.IO websockets: a bounded send buffer, and a handle to close them.

    The kernel grows a loopback or LAN socket's send buffer to megabytes, all
    of it memory a client that stopped reading pins down, and time before its
    queue shows it is behind: :data:`WEBSOCKET_SEND_BUFFER` bounds both.
    Engine.IO keeps no handle on the connection; the manager needs one to close
    a stalled client's connection. A websocket opened without a prior polling
    session has no ``sid`` yet and is remembered at connect instead.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.query.get("transport") != "websocket" or not request.path.startswith(path):
            return await handler(request)
        sock = request.transport.get_extra_info("socket") if request.transport is not None else None
        if sock is not None:
            sock.setsockopt(SOL_SOCKET, SO_SNDBUF, WEBSOCKET_SEND_BUFFER)
        eio_sid = request.query.get("sid")
        if eio_sid is None:
            return await handler(request)
        manager.track_websocket(eio_sid, request)
        try:
            return await handler(request)
        finally:
            manager.forget_websocket(eio_sid, request)

    return middleware
