"""Producing from an agent so that its input is acknowledged only once the broker has the output.

Faust flushes its producer before it commits input offsets, but a flush
returns once every send has finished, failed ones included: an input offset
could be committed for output the broker never got. The agents whose output
must not be lost (the window agent, the sink's dead letters) take their
input in batches (``take_events``), deliver what a batch produces with the
helpers here, and let the batch be acknowledged only after that returns; a
batch interrupted on the way is withheld (:func:`withhold`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from faust import EventT
from faust.types import TopicT

from rtdstream.backoff import Backoff
from rtdstream.retry import exit_on_bug, is_transient

log = logging.getLogger(__name__)

#: A record to produce: topic, key, value.
Record = tuple[TopicT, bytes | None, bytes]


async def send_all(records: Sequence[Record]) -> None:
    """Send every record and wait until the broker has acknowledged each; raise the first failure.

    ``force=True``: sent now, never held back as an attachment of the event
    being processed (Faust's ``stream_publish_on_commit``), which would wait
    for an acknowledgement that this very wait holds up.
    """
    sent = [await topic.send(key=key, value=value, force=True) for topic, key, value in records]
    await acknowledged(sent)


async def acknowledged(deliveries: Sequence[asyncio.Future]) -> None:
    """Wait until every delivery is settled; raise the first failure.

    A stop while waiting leaves the delivery futures alone. ``gather`` or a
    plain ``await`` would cancel them with the waiting task, and Faust's
    producer, settling them later from its own callback, then logs an
    ``InvalidStateError`` traceback at every shutdown that caught a send in
    flight. Every failure is retrieved, not only the first, or asyncio logs
    the others as "never retrieved" when they are collected.
    """
    if not deliveries:
        return
    await asyncio.wait(deliveries)
    failures = [failure for delivery in deliveries if (failure := delivery.exception()) is not None]
    if failures:
        raise failures[0]


async def until_acknowledged(
    deliver: Callable[[], Awaitable[None]], *, what: str, input_events: Sequence[EventT]
) -> None:
    """Run ``deliver`` until it succeeds, with capped backoff while the broker is away.

    A producer error that is no outage (a refusal for good, a bug) ends the worker
    (:func:`rtdstream.retry.exit_on_bug`) with the input unacknowledged.

    Each retry delivers the whole set again rather than only what failed: it
    keeps this simple and costs nothing in correctness, as every consumer of
    rtdstream's topics recognises a record it has already seen. Cancelled (the
    worker is stopping) before it succeeded, the ``input_events`` that produced
    the output are withheld, so the next start processes them again.
    """
    backoff = Backoff(initial=0.5, cap=10.0)
    try:
        while True:
            try:
                await deliver()
                return
            except Exception as exc:  # noqa: BLE001  (never acknowledge lost output)
                if not is_transient(exc):
                    withhold(input_events)
                    exit_on_bug(f"delivering {what}", exc)
                delay = backoff.next()
                log.error("%s not acknowledged by the broker (%r); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
    except asyncio.CancelledError:
        withhold(input_events)
        raise


def withhold(events: Iterable[EventT]) -> None:
    """Keep input messages from being acknowledged in this process; the next start reads them again.

    For a batch interrupted before its output was delivered (the worker is
    stopping): ``take_events`` acknowledges a batch however its body ends, so
    each message gets a reference that is never released.
    """
    for event in events:
        event.message.incref()


class OrderedDeliveries:
    """Several batches' output in flight at once, each batch's input released in batch order.

    A batch's delivery has two steps: ``first`` (records that may reach the broker in any
    order, such as closed windows) starts at once; ``then`` (what must follow everything
    earlier, such as a changelog of state that includes the earlier batches) waits until the
    previous batch is fully delivered. Only then is the batch's input released, so Faust's
    committed offset never passes input whose output, or an earlier batch's, is not acknowledged.
    (Faust commits a partition up to its first unacknowledged offset, but releasing out of order
    would still let it pass a gap while it knows no committed offset, or one of 0.)

    ``submit`` returns once fewer than ``limit`` batches are in flight, so ``limit`` counts the
    batch the caller applies next. A message withheld by :func:`until_acknowledged` on the way
    gets a second reference; it is never released either way.

    A batch whose predecessor did not finish (cancelled by a stop) keeps its input unreleased:
    the next start processes both again.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._in_flight: list[asyncio.Task[None]] = []

    async def submit(
        self, events: Sequence[EventT], first: Callable[[], Awaitable[None]], then: Callable[[], Awaitable[None]]
    ) -> None:
        """Start delivering one batch; return once fewer than ``limit`` batches are in flight.

        Call before the agent's ``take_events`` loop moves on: the batch's messages get a
        reference of their own here, released when the delivery is done.
        """
        for event in events:
            event.message.incref()
        previous = self._in_flight[-1] if self._in_flight else None
        self._in_flight.append(asyncio.create_task(self._deliver(events, first, then, previous)))
        while len(self._in_flight) >= self.limit or (self._in_flight and self._in_flight[0].done()):
            await self._finish_oldest()

    async def settle(self) -> None:
        """Wait until every batch in flight is delivered (on a rebalance, before the partitions move)."""
        while self._in_flight:
            await self._finish_oldest()

    async def abandon(self) -> None:
        """Cancel the deliveries in flight (the worker is stopping); their input stays unreleased."""
        for task in self._in_flight:
            task.cancel()
        if self._in_flight:
            await asyncio.wait(self._in_flight)
        self._in_flight.clear()

    async def _finish_oldest(self) -> None:
        oldest = self._in_flight[0]
        try:
            await asyncio.shield(oldest)  # a cancelled agent leaves the task to abandon()
        finally:
            # Done (delivered or failed) is finished; the agent and a rebalance may both wait for it.
            if oldest.done() and self._in_flight and self._in_flight[0] is oldest:
                self._in_flight.pop(0)

    @staticmethod
    async def _deliver(
        events: Sequence[EventT], first: Callable[[], Awaitable[None]], then: Callable[[], Awaitable[None]],
        previous: asyncio.Task[None] | None,
    ) -> None:
        await first()
        if previous is not None:
            await asyncio.wait([previous])
            if previous.cancelled() or previous.exception() is not None:
                return
        await then()
        for event in events:
            event.ack()
