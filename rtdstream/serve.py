"""Run an aiohttp application until the command is stopped (SIGTERM, Ctrl-C)."""

from __future__ import annotations

import asyncio
import errno
import logging

from aiohttp import web

from rtdstream.errors import UserError

log = logging.getLogger(__name__)


async def serve_until_stopped(app: web.Application, *, host: str, port: int, name: str) -> None:
    """Listen on host:port and serve until cancelled, then shut down gracefully."""
    runner = web.AppRunner(app, shutdown_timeout=5.0, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} is already in use (set PORT or --port)") from None
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        log.info("%s listening on http://%s:%d", name, host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        log.info("%s stopped", name)
