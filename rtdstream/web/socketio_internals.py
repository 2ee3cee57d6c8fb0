"""Every use of python-socketio's and python-engineio's private internals, in one module.

rtdstream needs a few things those libraries have no public API for: a look
at every client message before the library handles it (:mod:`rtdstream.web.guard`),
the length of a client's Engine.IO queue and a way to put packets on it
directly (:mod:`rtdstream.web.backpressure`), and a forced close of a client
that floods or stopped reading. Each need is one function (or hook) here, and
its docstring names the private attribute it touches and why, so an upgrade of
either library means checking this file alone. Written against
python-socketio 5.18 and python-engineio 4.15 (pyproject.toml pins the major
versions); tests/test_web_backpressure.py and tests/test_security_web.py
exercise every function.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import socketio
from aiohttp import web
from engineio import json as engineio_json
from engineio import packet as eio_packet
from engineio.async_socket import AsyncSocket
from socketio import packet


class HookedServer(socketio.AsyncServer):
    """python-socketio's server with a hook on every client message and on every client gone.

    Overrides the private ``_handle_eio_message`` and ``_handle_eio_disconnect``,
    which Engine.IO calls for each message and each closed session: the one
    place every client message passes, for which python-socketio has no public hook.
    """

    async def accept_message(self, eio_sid: str, data: Any) -> bool:
        """Whether python-socketio should handle ``data`` from ``eio_sid``; subclasses decide."""
        return True

    def client_gone(self, eio_sid: str) -> None:
        """Called when the Engine.IO session ``eio_sid`` ends, before python-socketio forgets it."""

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        if await self.accept_message(eio_sid, data):
            await super()._handle_eio_message(eio_sid, data)

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        self.client_gone(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)


def session_socket(server: socketio.AsyncServer, eio_sid: str) -> AsyncSocket | None:
    """The Engine.IO socket of a session, closed or not, or None.

    Reads ``server.eio.sockets`` (Engine.IO's dict of sessions): a client's
    queue and its close live on that object only.
    """
    return server.eio.sockets.get(eio_sid)


def open_socket(server: socketio.AsyncServer, eio_sid: str) -> AsyncSocket | None:
    """The Engine.IO socket of a client still connected (its ``closed`` flag unset), or None."""
    socket = session_socket(server, eio_sid)
    return None if socket is None or socket.closed else socket


def session_count(server: socketio.AsyncServer) -> int:
    """Engine.IO sessions open (a gauge): the size of ``server.eio.sockets``."""
    return len(server.eio.sockets)


def queued_packets(socket: AsyncSocket) -> int:
    """Packets waiting in a client's Engine.IO queue (``socket.queue``, an unbounded asyncio.Queue)."""
    return socket.queue.qsize()


class _OrjsonText:
    """The ``json`` of :class:`JsonPacket`: orjson's encoding as text, python-socketio's own beyond it."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        try:
            return orjson.dumps(obj).decode()
        except orjson.JSONEncodeError:  # an integer beyond 64 bits, say, from a foreign record
            return engineio_json.dumps(obj, separators=(",", ":"))

    loads = staticmethod(engineio_json.loads)


class JsonPacket(packet.Packet):
    """A Socket.IO packet of JSON data only: encoded with orjson, never searched for binary parts.

    python-socketio's packet walks every value of an event's data looking for
    bytes (binary attachments, when ``uses_binary_events``) and encodes with the
    standard library's ``json`` (its ``json`` class attribute). A ``readings``
    batch holds thousands of numbers: at 50,000 readings/s the walk took 14%
    of the web view's CPU and the encoding 5%. rtdstream's events carry numbers,
    strings, arrays and objects only, so neither is needed.
    """

    uses_binary_events = False
    json = _OrjsonText


def encode_event(event: str, data: Any, namespace: str) -> list[eio_packet.Packet]:
    """The Engine.IO packets of one Socket.IO event, encoded once for every client.

    Does what python-socketio's manager does inside ``emit`` for each client:
    the Socket.IO packet (a :class:`JsonPacket`, as the event's data is JSON)
    wrapped in an Engine.IO MESSAGE packet.
    """
    args = list(data) if isinstance(data, tuple) else ([] if data is None else [data])
    encoded = JsonPacket(packet.EVENT, namespace=namespace, data=[event, *args]).encode()
    return [eio_packet.Packet(eio_packet.MESSAGE, encoded)]


async def send_packets(socket: AsyncSocket, packets: list[eio_packet.Packet]) -> None:
    """Put ``packets`` on a client's queue directly (``AsyncSocket.send``), without a task per client."""
    for pkt in packets:
        await socket.send(pkt)


def discard_queue(socket: AsyncSocket) -> None:
    """Empty a client's Engine.IO queue (``socket.queue``), giving its packets' memory back."""
    queue: asyncio.Queue[Any] = socket.queue
    while True:
        try:
            queue.get_nowait()
        except asyncio.QueueEmpty:
            return
        queue.task_done()


async def force_close(socket: AsyncSocket, *, abort: bool = True) -> None:
    """Close a client's session now, without waiting for its queue to drain.

    ``AsyncSocket.close(wait=False, abort=...)`` marks the session closed, but
    the websocket writer task keeps waiting on ``socket.queue``: a ``None`` put
    there is Engine.IO's own signal that ends the writer, which closes the
    connection. A client that floods or stopped reading would never drain it.
    """
    await socket.close(wait=False, abort=abort)
    socket.queue.put_nowait(None)


def forget_session(server: socketio.AsyncServer, eio_sid: str) -> None:
    """Drop a closed session from ``server.eio.sockets`` now, not at Engine.IO's next sweep."""
    server.eio.sockets.pop(eio_sid, None)


def all_sockets(server: socketio.AsyncServer) -> list[AsyncSocket]:
    """Every Engine.IO session (``server.eio.sockets``), to close them all at shutdown."""
    return list(server.eio.sockets.values())


def request_of(environ: dict[str, Any]) -> web.Request | None:
    """The aiohttp request a session was opened with: Engine.IO's aiohttp adapter keeps it in the
    WSGI-style environ under ``"aiohttp.request"``."""
    return environ.get("aiohttp.request")


def session_of_request(server: socketio.AsyncServer, request: web.Request) -> str | None:
    """The Engine.IO session id of ``request``: its ``sid`` query parameter, or the session opened by it.

    A session's first request carries no ``sid``; it is found in ``server.environ``
    (python-socketio's eio sid -> environ dict) through :func:`request_of`.
    """
    return request.query.get("sid") or next(
        (sid for sid, environ in server.environ.items() if request_of(environ) is request), None
    )


def has_namespace(manager: socketio.AsyncManager, namespace: str) -> bool:
    """Whether anyone ever joined a room of ``namespace``: a key of the manager's ``rooms`` dict."""
    return namespace in manager.rooms


def has_participants(manager: socketio.AsyncManager, room: str, namespace: str) -> bool:
    """Whether anyone is in ``room``, without listing them: reads the manager's ``rooms`` dict."""
    return bool(manager.rooms.get(namespace, {}).get(room))


def room_count(manager: socketio.AsyncManager) -> int:
    """Rooms in use, over every namespace (a gauge): the sizes of the manager's ``rooms`` dict."""
    return sum(len(rooms) for rooms in manager.rooms.values())
