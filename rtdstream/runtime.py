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

from pythonjsonlogger.json import JsonFormatter

from rtdstream.collector import freeze_startup_heap
from rtdstream.errors import UserError
from rtdstream.log_throttle import throttle_kafka_client_logs

LOG_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
#: RTD_LOG_FORMAT=json: these fields, renamed, plus ``time`` and every ``extra`` of the event.
JSON_FIELDS = "%(levelname)s %(name)s %(process)d %(message)s"
_JSON_NAMES = {"levelname": "level", "name": "logger", "process": "pid"}
_LEVELS = {"warn": "WARNING", "warning": "WARNING", "crit": "CRITICAL", "critical": "CRITICAL"}


def json_formatter() -> logging.Formatter:
    """One JSON object per event, tracebacks included, so a log collector never splits one."""
    return JsonFormatter(JSON_FIELDS, rename_fields=_JSON_NAMES, timestamp="time")


def configure_logging(level: str, log_format: str = "text") -> None:
    """One event per line: in the shape of the Faust worker's log lines, or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter() if log_format == "json" else logging.Formatter(LOG_FORMAT))
    throttle_kafka_client_logs([handler])
    logging.basicConfig(level=_LEVELS.get(level.lower(), level.upper()), handlers=[handler])
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))


def worker_logging_config(log_format: str) -> dict[str, Any] | None:
    """The Faust worker's logging config: None keeps Faust's lines; json swaps in the JSON formatter."""
    if log_format != "json":
        return None
    return {
        "merge": True,  # into Faust's own config, replacing its "default" (colour) handler
        "formatters": {"json": {"()": json_formatter}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    }


def run_main(main: Coroutine[Any, Any, None], *, name: str) -> int:
    """Run ``main`` until it returns or a signal stops it; the process exit code."""
    freeze_startup_heap()  # everything is imported by now (rtdstream.collector)
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
