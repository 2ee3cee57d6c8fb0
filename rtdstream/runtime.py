"""Run one long-lived coroutine as a process: logging, signals, exit codes.

``rtdstream sim | bridge | web | dev | bench`` run through :func:`run_main`.
SIGTERM and Ctrl-C cancel the main task once, so its ``finally`` blocks run to
the end (flush envelopes, commit, close connections); a second signal aborts
that cleanup. A :class:`UserError` ends the process with one line on stderr.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from rtdstream.errors import UserError

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
_LEVELS = {"warn": "WARNING", "critical": "CRITICAL"}


def configure_logging(level: str) -> None:
    """One event per line, in the shape of the Faust worker's log lines."""
    logging.basicConfig(level=_LEVELS.get(level.lower(), level.upper()), format=LOG_FORMAT, stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))


def run_main(main: Coroutine[Any, Any, None], *, name: str) -> int:
    """Run ``main`` until it returns or a signal stops it; the process exit code."""
    return asyncio.run(_supervise(main, name))


async def _supervise(main: Coroutine[Any, Any, None], name: str) -> int:
    log = logging.getLogger("rtdstream")
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            log.info("%s: %s received, stopping", name, signal.Signals(signum).name)
        else:
            log.warning("%s: second signal, abandoning cleanup", name)
        task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await task
    except asyncio.CancelledError:
        if not signals_seen:
            raise
    except UserError as exc:
        print(f"rtdstream {name}: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 130 if signals_seen > 1 else 0
