"""The Kafka client's repeated warnings, once per interval instead of many times a second.

The hazard. While a broker is away, aiokafka logs every failed connection and
metadata refresh at ERROR, about every 100 ms per client: a worker wrote some
3,000 lines in the 20 s of one outage, and an outage of an hour would bury
everything else in the log. :class:`RepeatFilter` lets the first record of each
message of the ``aiokafka`` loggers through, holds back its repeats for
:data:`INTERVAL` seconds, and makes the next one it lets through say how many it
held back. Records of other loggers, and below WARNING, pass untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Seconds a repeated message is held back after one was let through.
INTERVAL = 10.0


@dataclass
class _Seen:
    let_through_at: float
    held: int = 0


class RepeatFilter(logging.Filter):
    """A handler filter: each WARNING+ message of the ``logger`` hierarchy at most once per ``interval``.

    A message is its logger and its unformatted text (``"Unable connect to node
    with id %s: %s"``), so the same failure of another node or with another
    error counts as a repeat: what an operator needs is that it goes on, and
    how often. Memory is bounded by the number of such texts in the client.
    """

    def __init__(
        self, logger: str = "aiokafka", *, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._seen: dict[tuple[str, object], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not _in_hierarchy(record.name, self.logger):
            return True
        key = (record.name, record.msg)
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen.let_through_at < self.interval:
            seen.held += 1
            return False
        if seen is not None and seen.held:
            record.msg = f"{record.getMessage()} ({seen.held} more like it held back since {now - seen.let_through_at:.0f}s ago)"
            record.args = ()  # not None: Faust's formatter makes None an argument, (None,)
        self._seen[key] = _Seen(now)
        return True


def _in_hierarchy(name: str, logger: str) -> bool:
    return name == logger or name.startswith(logger + ".")


def throttle_kafka_client_logs(handlers: list[logging.Handler]) -> None:
    """Give ``handlers`` one shared :class:`RepeatFilter` for aiokafka's records."""
    repeats = RepeatFilter()
    for handler in handlers:
        handler.addFilter(repeats)
