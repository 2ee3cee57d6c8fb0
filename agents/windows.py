"""The window agent: ``rtd.validated`` -> ``rtd.windows`` (final), ``rtd.partials`` (live), ``rtd.dlq`` (late).

Exactness across ``kill -9`` comes from ordering, not from Faust's table
machinery: a batch of input messages is applied to the partitions' states;
the closed windows and late readings are produced and acknowledged by the
broker; then the new states (changelog); and only then is the input
released so its offsets can be committed. A crash before the changelog
is durable replays the input onto the old state, which closes the same
windows with the same values again; a crash after it skips the replay by
``input_offset``, and the results are already out. A consumer of
``rtd.windows`` sees at most identical duplicates.

While a batch is applied, up to WINDOW_BATCHES_IN_FLIGHT - 1 earlier ones are
being delivered (:class:`~rtdstream.delivery.OrderedDeliveries`). A batch's changelog waits for
every earlier batch's delivery, as its state includes them, and input is
released in batch order. On a rebalance the batches in flight are delivered
before the partitions move, and a batch handed out after the rebalance began
is not applied (:meth:`WindowStage.process`), so a new owner recovers a changelog that
nothing of ours will overwrite.

Live partials and idle ticks are best-effort side channels: a lost partial is
replaced by the next one, and a lost tick is sent again after the next quiet
period.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from faust import App, EventT, StreamT
from faust.types import TP, TopicT

from rtdstream import metrics
from rtdstream.config import Settings
from rtdstream.delivery import OrderedDeliveries, Record, acknowledged, send_all, until_acknowledged, withhold
from rtdstream.models import IdleTick, dead_letter, decode_validated, encode_tick
from rtdstream.retry import exit_on_bug
from rtdstream.tables.specs import window_specs
from rtdstream.tables.state import PartitionState
from rtdstream.tables.table import WindowStateTable
from rtdstream.tables.windowing import Changes, LateReading, Windowing
from rtdstream.topics import VALIDATED
from rtdstream.validation import Reason
from rtdstream.worker_app import StageTopics

log = logging.getLogger(__name__)

STAGE = "windows"

#: Batches at once: the one being applied and up to 3 whose output the broker has yet to
#: acknowledge. In an instrumented run at 50,000 readings/s the agent spent as long waiting for
#: acknowledgements as applying and waiting for input together.
WINDOW_BATCHES_IN_FLIGHT = 4


class WindowStage:
    """The window agent with the state it keeps, for one app: a worker's, or a test's.

    ``windowing``, ``window_state``, ``deliveries``, ``idle_watch`` and ``partial_feed`` belong
    to the stage, not the module, so two apps never share a window or a batch in flight.
    """

    def __init__(self, app: App, settings: Settings, topics: StageTopics) -> None:
        self.app = app
        self.settings = settings
        self.topics = topics
        self.windowing = Windowing(window_specs(settings), grace_ms=round(settings.grace * 1000))
        self.window_state = WindowStateTable(app, partitions=settings.partitions)
        self.deliveries = OrderedDeliveries(WINDOW_BATCHES_IN_FLIGHT)
        self.idle_watch = IdleWatch(settings.idle_timeout)
        self.partial_feed = PartialFeed(settings.partial_interval, self.window_state, topics.partials)

    def register(self) -> None:
        """Subscribe the agent to rtd.validated and start the idle and partials timers with the app."""
        self.app.agent(self.topics.validated)(self.aggregate_windows)
        self.app.on_partitions_revoked.connect(self.deliver_before_partitions_move)
        self.app.timer(min(1.0, self.settings.idle_timeout / 2))(self.close_idle_partitions)
        self.app.timer(self.settings.partial_interval)(self.flush_partials)

    async def aggregate_windows(self, stream: StreamT) -> None:
        """Apply batches of validated readings to the window state and publish what closed."""
        try:
            async for events in stream.take_events(self.settings.window_batch, within=self.settings.window_within):
                await self.process(events)
        except asyncio.CancelledError:
            await self.deliveries.abandon()  # stopping: what was not delivered is processed again after restart
            raise
        except Exception as exc:  # noqa: BLE001  (a bug: Faust would restart the agent with its input acked)
            exit_on_bug("window agent", exc)

    async def deliver_before_partitions_move(self, sender: object, revoked: object, **_: object) -> None:
        """Finish the batches in flight: their changelog must not land after a new owner's."""
        await self.deliveries.settle()

    async def process(self, events: Sequence[EventT]) -> None:
        """Apply, then start delivering everything the batch produced; its input is released after.

        A batch ``take_events`` hands out during or after a rebalance that took its partitions (its
        buffer is not among the queues Faust clears) is left alone: applied, it would change state
        this worker no longer owns and send a changelog that could land after the new owner's. Its
        input stays unacknowledged, and whoever owns the partitions now reads it again.
        """
        if self.app.rebalancing or not self._still_ours(events):
            withhold(events)
            log.info("left a batch of %d message(s) from before a rebalance to the partitions' owner", len(events))
            return
        outbox = Outbox(self.topics, self.window_state)
        touched: dict[int, PartitionState] = {}
        offsets_before: dict[int, int] = {}
        replayed = 0
        try:
            for event in events:
                partition, offset = event.message.partition, event.message.offset
                state = touched.get(partition)
                if state is None:
                    state = touched[partition] = self.window_state.get(partition)
                    offsets_before[partition] = state.input_offset
                self.idle_watch.saw(partition)
                replayed += not self.apply_event(state, partition, offset, event.message.value, outbox)
        except BaseException:
            self.window_state.forget(touched)
            raise
        for partition, state in touched.items():
            if state.input_offset != offsets_before[partition]:  # else all of it was replay
                outbox.changelog.append((partition, self.window_state.save(partition, state)))
        if replayed:
            log.debug("skipped %d of %d messages already applied (input replayed after a restart)",
                      replayed, len(events))
        outbox.count(replayed)
        await self.deliveries.submit(
            events,
            first=lambda: until_acknowledged(outbox.send_results, what="window results", input_events=events),
            then=lambda: until_acknowledged(outbox.send_changelog, what="window state", input_events=events),
        )
        self.partial_feed.flush()

    def _still_ours(self, events: Sequence[EventT]) -> bool:
        generation, owned = self.app.consumer_generation_id, self.owned_partitions()
        return all(
            event.message.generation_id in (None, generation) and event.message.partition in owned for event in events
        )

    def apply_event(
        self, state: PartitionState, partition: int, offset: int, raw: bytes | None, outbox: Outbox
    ) -> bool:
        """Apply one input message, False if it was a replay.

        One that cannot be decoded goes to rtd.dlq instead of crashing the agent.
        """
        try:
            message = decode_validated(raw or b"")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
            if offset <= state.input_offset:
                return False
            self.windowing.skip(state, offset)
            outbox.reject(None, undecodable_record(raw or b"", exc, partition, offset))
            return True
        changes = Changes()
        applied = self.windowing.apply(state, offset, message, changes)
        outbox.add(changes, partition, offset)
        self.partial_feed.mark(partition, changes.touched)
        return applied

    async def unread_input(self, partitions: list[int]) -> dict[int, bool]:
        """Per partition, whether rtd.validated holds messages past the last one this agent applied.

        Asks the broker for the partitions' end offsets: the consumer's own idea of them stops
        moving while fetching is paused. A broker that does not answer now leaves the answer
        unknown (absent), and the caller treats the partition as not idle until the next check.
        """
        if not partitions:
            return {}
        try:
            ends = await self.app.consumer.highwaters(*(TP(VALIDATED, partition) for partition in partitions))
        except Exception as exc:  # noqa: BLE001  (best effort: unknown means not idle, the next run asks again)
            log.warning("could not read the end offsets of %s (%r); checking for idle partitions later", VALIDATED, exc)
            return {}
        return {
            tp.partition: end > self.window_state.get(tp.partition).input_offset + 1
            for tp, end in ends.items()
        }

    def owned_partitions(self) -> set[int]:
        """The rtd.validated partitions this worker processes now."""
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == VALIDATED}

    async def close_idle_partitions(self) -> None:
        """Put a tick into each idle partition that still has open windows."""
        if self.app.rebalancing:  # consumption is paused until recovery ends: quiet, not idle
            self.idle_watch.restart_clocks()
            return
        due = [p for p in self.idle_watch.due(self.owned_partitions()) if self.window_state.get(p).windows]
        unread = await self.unread_input(due)
        if self.app.rebalancing:  # it began while the broker answered: the partitions may have moved
            return
        for partition in due:
            state = self.window_state.get(partition)
            if state.max_time is None:
                continue
            if unread.get(partition, True):
                # Input is waiting that this agent has not applied: the partition is held up, not idle.
                # (The sink shares it: while the database is away, Faust stops fetching it for both.)
                # A tick now would close windows that the waiting readings still belong to.
                self.idle_watch.saw(partition)
                continue
            tick = IdleTick(partition, state.max_time)
            try:
                sent = await self.topics.validated.send(value=encode_tick(tick), partition=partition, force=True)
                await acknowledged([sent])
            except Exception as exc:  # noqa: BLE001  (best effort: the next timer run tries again)
                log.warning("could not send idle tick to %s[%d]: %r", VALIDATED, partition, exc)
                continue
            self.idle_watch.ticked(partition)
            log.info("partition %d idle for %gs: closing windows up to %d",
                     partition, self.idle_watch.timeout, tick.max_time)

    async def flush_partials(self) -> None:
        """Send the open windows' values that changed since the last interval (best effort)."""
        self.partial_feed.flush()

    def open_windows_report(self, source: str | None = None) -> dict[str, Any]:
        """The open windows and late counts of the partitions this worker owns (all sources, or one)."""
        partitions: dict[str, Any] = {}
        sources: dict[str, Any] = {}
        for partition in sorted(self.owned_partitions()):
            state = self.window_state.get(partition)
            partitions[str(partition)] = {
                "watermark": self.windowing.watermark(state),
                "max_time": state.max_time,
                "input_offset": state.input_offset,
            }
            names = [source] if source is not None else sorted(state.windows.keys() | state.late.keys())
            for name in names:
                if name in state.windows or name in state.late:
                    sources[name] = {
                        "partition": partition,
                        "late": state.late.get(name, 0),
                        "windows": state.open_windows(name),
                    }
        return {"partitions": partitions, "sources": sources}


@dataclass
class Outbox:
    """The records one batch produces, delivered and acknowledged together."""

    topics: StageTopics
    window_state: WindowStateTable
    changelog: list[tuple[int, bytes]] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    emitted: dict[str, int] = field(default_factory=dict)
    late: int = 0

    def add(self, changes: Changes, partition: int, offset: int) -> None:
        for closed in changes.closed:
            self.records.append((self.topics.windows, closed.source.encode(), orjson.dumps(closed.record())))
            label = closed.spec.label
            self.emitted[label] = self.emitted.get(label, 0) + 1
        for late in changes.late:
            self.reject(late.source, late_record(late, partition, offset))
        self.late += len(changes.late)

    def reject(self, source: str | None, record: bytes) -> None:
        self.records.append((self.topics.dlq, source.encode() if source else None, record))

    # Results first, state second: a state that says "applied" must never outlive its results.
    # Were the changelog durable and a closed window not, the restart would skip the replayed
    # input (its offset is in the state) and the window would be lost. In this order a crash
    # between the two replays the input onto the old state, which emits the same windows again.
    # Every record is safe to send twice (a changelog value replaces itself, a closed window is
    # identical), so a failure is repaired by sending the whole step again.

    async def send_results(self) -> None:
        """Closed windows and dead letters, acknowledged by the broker."""
        await send_all(self.records)

    async def send_changelog(self) -> None:
        """The partitions' new states, acknowledged by the broker."""
        await acknowledged([self.window_state.send_changelog(p, value) for p, value in self.changelog])

    def count(self, replayed: int) -> None:
        metrics.WINDOW_REPLAYS_SKIPPED.inc(replayed)
        for label, emitted in self.emitted.items():
            metrics.WINDOWS_EMITTED.labels(label).inc(emitted)
        metrics.LATE_READINGS.inc(self.late)


def late_record(late: LateReading, partition: int, offset: int) -> bytes:
    raw = orjson.dumps({"source": late.source, "time": late.time, "speed": late.speed})
    return dead_letter(
        Reason.LATE, raw, stage=STAGE,
        detail=f"{late.lateness_ms} ms behind the watermark; missed windows {', '.join(late.windows)}",
        source=late.source, topic=VALIDATED, partition=partition, offset=offset,
        time=late.time, lateness_ms=late.lateness_ms, windows=list(late.windows),
    )


def undecodable_record(raw: bytes, exc: Exception, partition: int, offset: int) -> bytes:
    reason = Reason.NOT_JSON if isinstance(exc, orjson.JSONDecodeError) else Reason.WRONG_TYPE
    return dead_letter(
        reason, raw, stage=STAGE, detail=f"not a rtd.validated message: {exc!r}",
        topic=VALIDATED, partition=partition, offset=offset,
    )


class IdleWatch:
    """Notices owned partitions that went quiet, so their open windows can be closed.

    One tick per quiet period: a partition that got its tick is not ticked again
    until it sees input (the tick itself counts, so a tick that closed only part
    of the windows is followed by another after the next timeout).
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._last_seen: dict[int, float] = {}
        self._ticked: set[int] = set()

    def saw(self, partition: int) -> None:
        self._last_seen[partition] = time.monotonic()
        self._ticked.discard(partition)

    def due(self, partitions: Iterable[int]) -> list[int]:
        now = time.monotonic()
        return [
            partition
            for partition in sorted(partitions)
            if partition not in self._ticked and now - self._last_seen.setdefault(partition, now) >= self.timeout
        ]

    def ticked(self, partition: int) -> None:
        self._ticked.add(partition)

    def restart_clocks(self) -> None:
        """Count quiet time from now: the agent could not consume until now (rebalance, recovery)."""
        now = time.monotonic()
        for partition in self._last_seen:
            self._last_seen[partition] = now


class PartialFeed:
    """Open-window values per source on rtd.partials, at most one update per interval per source.

    A source changed while throttled stays pending and goes out with the next
    flush (after a batch or from the timer), so the last value is never stuck.
    """

    def __init__(self, interval: float, window_state: WindowStateTable, topic: TopicT) -> None:
        self.interval = interval
        self.window_state = window_state
        self.topic = topic
        self._pending: dict[str, int] = {}
        self._sent_at: dict[str, float] = {}

    def mark(self, partition: int, sources: Iterable[str]) -> None:
        for source in sources:
            self._pending[source] = partition

    def flush(self) -> None:
        now = time.monotonic()
        due = [s for s in self._pending if now - self._sent_at.get(s, -self.interval) >= self.interval]
        for source in due:
            state = self.window_state.get(self._pending.pop(source))
            self._sent_at[source] = now
            value = orjson.dumps({"source": source, "windows": state.open_windows(source)})
            self.topic.send_soon(key=source.encode(), value=value)
