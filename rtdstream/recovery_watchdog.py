"""A table recovery that stops receiving its changelog reads it again, and ends the worker if that fails.

The hazard. Faust 0.15.3 recovers a table by reading its changelog partitions
through the same fetcher that feeds the streams, and seeks them only when a
recovery starts. Records fetched after that can still be lost on the way:
``Consumer.getmany`` drops the rest of a fetched batch when the flow stops, the
consumer generation changes or the partition is paused while the batch is
handed out, and the position stays after them. Nothing reads them again, so the
recovery waits for ever, and the worker keeps its partitions without processing
them. CI saw this once on Apache Kafka: a rebalance came 1.2 s into a recovery,
and the next recovery of two changelog partitions received no record for three
minutes (Faust only warns, every 5 s: "No event received for active tp").
faust-streaming/faust#74 and robinhood/faust#218 and #542 report hangs of the
same kind.

What the watchdog does. Every :data:`CHECK_EVERY` seconds during a recovery it
looks at each changelog partition still short of its highwater. One whose
recovered offset has not moved for :data:`STALL_AFTER` seconds is sought back
to the record after that offset, and resumed: recovery ignores offsets it has
already applied, so reading again can only add what was missing. A partition
that still does not move after :data:`MAX_REWINDS` rewinds is not a lost batch
but a bug or a broker gone for minutes; the worker then exits with
:data:`~rtdstream.retry.EXIT_BUG`, so that its supervisor restarts it and the
group hands its partitions on, instead of hanging.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field

import faust
from faust.types import TP
from mode import Service

from rtdstream.retry import exit_on_bug

log = logging.getLogger(__name__)

#: How often the watchdog looks at the recovery, in seconds.
CHECK_EVERY = 1.0
#: How long a partition's recovery may stay at one offset before it is read again, in seconds.
#: Changelog reading moves every few milliseconds when records arrive; Faust itself warns
#: after 5 s without any.
STALL_AFTER = 15.0
#: Rewinds of one partition, in one stall, before the worker gives up.
MAX_REWINDS = 3


class Verdict(enum.Enum):
    """What to do about one changelog partition of a recovery."""

    WAIT = "wait"
    REWIND = "rewind"
    GIVE_UP = "give up"


@dataclass
class _Watch:
    offset: int
    since: float
    rewinds: int = 0


@dataclass
class StallTracker:
    """Pure logic: tells a stalled changelog partition from one that moves, from what recovery reports."""

    stall_after: float = STALL_AFTER
    max_rewinds: int = MAX_REWINDS
    _watches: dict[TP, _Watch] = field(default_factory=dict, init=False, repr=False)

    def observe(self, tp: TP, offset: int, highwater: int, now: float) -> Verdict:
        """The verdict on ``tp``, recovered up to ``offset`` of ``highwater``, at ``now`` (seconds)."""
        watch = self._watches.get(tp)
        if offset >= highwater:
            self._watches.pop(tp, None)
            return Verdict.WAIT
        if watch is None or watch.offset != offset:
            self._watches[tp] = _Watch(offset, now)
            return Verdict.WAIT
        if now - watch.since < self.stall_after:
            return Verdict.WAIT
        if watch.rewinds >= self.max_rewinds:
            return Verdict.GIVE_UP
        watch.rewinds += 1
        watch.since = now
        return Verdict.REWIND

    def rewinds(self, tp: TP) -> int:
        """How often ``tp`` was rewound in its current stall."""
        watch = self._watches.get(tp)
        return watch.rewinds if watch else 0

    def forget(self) -> None:
        """No recovery in progress: the next one starts with a clean slate."""
        self._watches.clear()


class RecoveryWatchdog(Service):
    """Applies :class:`StallTracker`'s verdicts to ``app``'s table recovery."""

    def __init__(self, app: faust.App, tracker: StallTracker | None = None) -> None:
        self.app = app
        self.tracker = tracker or StallTracker()
        super().__init__(beacon=app.beacon)

    def register(self) -> None:
        """Start and stop with the app, before its first recovery.

        Not ``app.service``: Faust starts those only once the first recovery is complete.
        """
        self.app.add_dependency(self)

    @Service.timer(CHECK_EVERY)
    async def _check(self) -> None:
        recovery = self.app.tables.recovery
        if not recovery.in_recovery:
            self.tracker.forget()
            return
        now = time.monotonic()
        for tp in list(recovery.active_tps):
            offset, highwater = recovery.active_offsets[tp], recovery.active_highwaters[tp]
            if offset is None or highwater is None:
                continue
            verdict = self.tracker.observe(tp, offset, highwater, now)
            if verdict is Verdict.REWIND:
                await self._rewind(tp, offset, highwater)
            elif verdict is Verdict.GIVE_UP:
                exit_on_bug("table recovery", RecoveryStalled(tp, offset, highwater, self.tracker.rewinds(tp)))

    async def _rewind(self, tp: TP, offset: int, highwater: int) -> None:
        consumer = self.app.consumer
        if tp not in consumer.assignment():
            return  # revoked by a rebalance; the next recovery seeks it itself
        position = await consumer.position(tp)
        if tp not in consumer.assignment():
            return
        log.warning(
            "recovery of %s[%d] stalled at offset %d of %d for %.0fs (the consumer is at %s); reading it again",
            tp.topic, tp.partition, offset, highwater, self.tracker.stall_after, position,
        )
        consumer.resume_partitions([tp])
        # Faust's seek also resets the offset below which the consumer drops records as already read.
        await consumer.seek(tp, offset + 1)


class RecoveryStalled(Exception):
    """A changelog partition that rewinding did not bring back: the worker cannot finish recovery."""

    def __init__(self, tp: TP, offset: int, highwater: int, rewinds: int) -> None:
        super().__init__(
            f"recovery of {tp.topic}[{tp.partition}] stayed at offset {offset} of {highwater} "
            f"through {rewinds} rewinds"
        )
