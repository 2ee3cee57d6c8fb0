"""The sink's retry policy: an outage is waited out (backpressure), anything else ends the worker.

As in Quix Streams' sinks, the writer only writes a batch, and whether to try
again is decided here: an outage of the database (:func:`rtdstream.retry.is_transient`)
is a signal to hold the batch and wait, not a failure, and not returning is
the backpressure (the agent takes no new input while its batch waits). An
error no retry can fix ends the worker (:func:`rtdstream.retry.exit_on_bug`):
the batch is not acknowledged, so a restart writes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from rtdstream import metrics
from rtdstream.backoff import Backoff
from rtdstream.retry import exit_on_bug, is_transient
from rtdstream.sink.database import reason
from rtdstream.sink.records import SinkBatch

log = logging.getLogger(__name__)

RETRY_INITIAL = 0.5
RETRY_CAP = 15.0
#: How long a stopping sink lets a transaction in flight finish before abandoning it.
FINISH_SECONDS = 10.0


async def write_until_done(write: Callable[[SinkBatch], Awaitable[None]], batch: SinkBatch) -> None:
    """Call ``write(batch)`` until it succeeds, with capped backoff for as long as the database is away.

    On cancellation (the worker stopping) a transaction in flight may finish
    first; ``batch.written`` tells whether it did.
    """
    backoff = Backoff(initial=RETRY_INITIAL, cap=RETRY_CAP)
    failures = 0
    loop = asyncio.get_running_loop()
    first_failure = loop.time()
    while True:
        attempt = asyncio.ensure_future(write(batch))
        try:
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            await _finish_or_abandon(attempt)
            raise
        except Exception as error:  # noqa: BLE001  (every failure keeps the batch; a bug ends the worker)
            if not is_transient(error):
                exit_on_bug(f"sink: writing {len(batch.items)} message(s) from {batch.topic}", error)
            if not failures:
                first_failure = loop.time()
            failures += 1
            delay = backoff.next()
            metrics.SINK_RETRIES.inc()
            _log_failure(batch, error, failures, delay)
            await asyncio.sleep(delay)
        else:
            if failures:
                log.info(
                    "sink: database back; batch from %s written after %d failed attempt(s) over %.1fs",
                    batch.topic, failures, loop.time() - first_failure,
                )
            return


def _log_failure(batch: SinkBatch, error: Exception, failures: int, delay: float) -> None:
    log.warning(
        "sink: writing %d message(s) from %s failed (attempt %d): %s; batch kept, retrying in %.1fs",
        len(batch.items), batch.topic, failures, reason(error), delay,
    )


async def _finish_or_abandon(attempt: asyncio.Future[None]) -> None:
    """Give a transaction in flight a moment to commit (a clean stop), then cancel it."""
    await asyncio.wait([attempt], timeout=FINISH_SECONDS)
    attempt.cancel()
    if attempt.done() and not attempt.cancelled() and (error := attempt.exception()):
        log.warning("sink: the batch in flight at stop failed (%s); it is written after restart", reason(error))
