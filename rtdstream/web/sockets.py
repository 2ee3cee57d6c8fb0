"""What a Socket.IO client can do: connect (with the token), subscribe and unsubscribe to sources.

On connect a client joins the ``newData`` room (unless its auth payload says
``newData: false``) and gets a ``sources`` event with every known source's last
value. ``subscribe`` acknowledges with the last value, a short recent history
and the newest window aggregates, so a dashboard is never blank; an unknown
source gets an error acknowledgement, not silence. ``overview`` joins the
overview room (``fleet``, ``health``, ``deadletters`` about once a second, see
:mod:`rtdstream.web.pulse`) and acknowledges with everything to start from;
``leave_overview`` leaves it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import socketio

from rtdstream import metrics
from rtdstream.config import is_valid_source_id
from rtdstream.web.auth import socket_token, token_matches
from rtdstream.web.backpressure import NAMESPACE, BackpressureManager
from rtdstream.web.history import StoredHistory
from rtdstream.web.live import NEWDATA_ROOM, source_room
from rtdstream.web.pulse import OVERVIEW_ROOM
from rtdstream.web.socketio_internals import request_of
from rtdstream.web.sources import SourceTable

log = logging.getLogger(__name__)


class LiveNamespace(socketio.AsyncNamespace):
    def __init__(
        self,
        sources: SourceTable,
        history: StoredHistory,
        *,
        history_size: int,
        token: str | None,
        overview: Callable[[int], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(NAMESPACE)
        self.sources = sources
        #: Builds the ``overview`` acknowledgement (fleet snapshot, health, dead letters) at a given time.
        self.overview = overview
        self.history = history
        self.history_size = history_size
        self.token = token
        self._greetings: set[asyncio.Task[None]] = set()

    @property
    def _manager(self) -> BackpressureManager:
        return self.server.manager

    async def on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        if self.token is not None and not token_matches(self.token, socket_token(auth, environ)):
            raise socketio.exceptions.ConnectionRefusedError("unauthorized: missing or wrong token")
        if not (isinstance(auth, dict) and auth.get("newData") is False):
            await self.enter_room(sid, NEWDATA_ROOM)
        self._track_direct_websocket(sid, environ)
        metrics.WEB_CLIENTS.inc()
        # Sent once the connect handler has returned, so after the CONNECT packet.
        task = asyncio.get_running_loop().create_task(self.emit("sources", self.sources.latest(), to=sid))
        self._greetings.add(task)
        task.add_done_callback(self._greetings.discard)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        metrics.WEB_CLIENTS.dec()

    async def on_subscribe(self, sid: str, data: Any) -> dict[str, Any]:
        source = _source_of(data)
        if source is None:
            return _error("subscribe needs {source: <id>} or a source id string")
        state = self.sources.get(source)
        if state is None or not state.restored:
            stored = await self.history.recent(source, self.history_size)
            if stored is not None and (state is not None or stored[0] or stored[1]):
                state = self.sources.restore(source, *stored)
        if state is None:
            return _error(f"unknown source {source!r}: not seen on the feed nor in the database")
        await self.enter_room(sid, source_room(source))
        return {
            "ok": True,
            "source": source,
            "last": state.last_reading(),
            "history": state.recent(),
            "windows": list(state.windows.values()),
        }

    async def on_unsubscribe(self, sid: str, data: Any) -> dict[str, Any]:
        source = _source_of(data)
        if source is None:
            return _error("unsubscribe needs {source: <id>} or a source id string")
        await self.leave_room(sid, source_room(source))
        return {"ok": True, "source": source}

    async def on_overview(self, sid: str, data: Any = None) -> dict[str, Any]:
        """Watch every source at once: join the overview room; the ack is the state to start from."""
        if self.overview is None:
            return _error("this server has no overview")
        await self.enter_room(sid, OVERVIEW_ROOM)
        return {"ok": True, **self.overview(int(time.time() * 1000))}

    async def on_leave_overview(self, sid: str, data: Any = None) -> dict[str, Any]:
        await self.leave_room(sid, OVERVIEW_ROOM)
        return {"ok": True}

    def _track_direct_websocket(self, sid: str, environ: dict[str, Any]) -> None:
        # A client that opened a websocket without polling first connects on
        # that very request; upgraded clients are tracked by the middleware.
        request = request_of(environ)
        if request is not None and request.query.get("transport") == "websocket":
            eio_sid = self._manager.eio_sid_from_sid(sid, NAMESPACE)
            if eio_sid is not None:
                self._manager.track_websocket(eio_sid, request)


def _source_of(data: Any) -> str | None:
    source = data.get("source") if isinstance(data, dict) else data
    return source if isinstance(source, str) and is_valid_source_id(source) else None


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}
