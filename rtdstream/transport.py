"""Faust's aiokafka transport, with two changes for rtdstream's worker.

**Fetch wait.** Faust builds the worker's consumer with ``fetch_max_wait_ms=1500``
and offers no setting for it. Apache Kafka answers a fetch as soon as one byte
is there, so the wait only matters when a partition is idle; but a broker that
holds every fetch until the wait is over (the embedded tansu does) adds up to
that wait to every hop: measured on tansu, one hop took 367 ms at the median
and 731 ms at p99 with 1500 ms, 6 ms and 12 ms with 20 ms. The worker makes two
hops (rtd.readings, then rtd.validated), so this was most of its latency.
``RTD_FETCH_MAX_WAIT`` sets it.

**No message lost to a rebalance.** Faust 0.15.3 (faust-streaming) can skip a
range of a partition for good when a worker joins the group, which is what
every start after a ``kill -9`` does. See :class:`_Consumer`.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.consumer import RecordMap
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

#: While stream partitions are held back, the longest one fetch waits for changelog records,
#: so stream partitions are fetched again within this long after the rebalance ends.
_HELD_BACK_POLL = 0.1


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher; there is no public setter.
        consumer._fetch_max_wait_ms = round(self.app.fetch_max_wait * 1000)
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, made to hand out no record that a rebalance then throws away.

    What went wrong (traced in a worker started again after ``kill -9``;
    ``tests/test_transport_rebalance.py`` replays it):

    1. Table recovery resumes the consumer's flow so that the changelogs can
       be read, and the fetcher keeps running from then on.
    2. When recovery is done, ``Recovery.on_recovery_completed`` resumes the
       stream partitions *before* it seeks them to their committed offsets,
       and only then resumes flow control, which empties every agent's queue.
    3. In that window the running fetcher hands out stream records from the
       consumer's position (``rtd.validated[0]`` offsets 0-49 in the trace).
       The agents take a few; the queue clearing drops the rest.
    4. The seek moves nothing where no offset is committed yet (the killed
       worker died before its first commit): aiokafka's ``seek_to_committed``
       skips partitions whose committed offset is None or 0. The next fetch
       continues after the dropped records, and Faust's ``_new_offset``, which
       looks for an unacknowledged head only when the committed offset is
       truthy, commits past them: skipped for good, by every later worker too.

    Where an offset is committed the seek rewinds, but records still being
    handed out after it can raise ``_read_offset`` again, and the re-read
    records below it are then dropped as already read ("DROPPED MESSAGE").
    faust-streaming reports the race as issues #596 and #216:
    https://github.com/faust-streaming/faust/issues/596 (recovery clears
    records it already consumed), https://github.com/faust-streaming/faust/issues/216
    (recovery resumes the streams before seeking them).

    The fix: while the app is rebalancing, only changelog partitions are
    fetched (:meth:`_getmany`). Stream records are fetched once the rebalance
    has ended, which is after the seek and after the queues were emptied, so
    every record handed out reaches an agent and the read offsets never jump.
    A record handed out before a rebalance and dropped by it is read again:
    each rebalance gives aiokafka a new assignment, whose positions start at
    the committed offsets (the beginning where there are none, with
    ``earliest``). A fetch already waiting when the rebalance began is
    covered too (:meth:`_held_back`), as is one that returns while the app is
    rebalancing: Apache Kafka answers it with the new assignment's records
    before the queues are cleared, tansu did not.
    """

    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        """Fetch, holding stream partitions back until the rebalance (seek, queue clearing) is over."""
        if self.app.rebalancing and active_partitions is not None:
            active_partitions = {tp for tp in active_partitions if self._is_changelog_tp(tp)}
            if not active_partitions:
                # aiokafka reads an empty set as "every partition": ask for none at all.
                await self.sleep(_HELD_BACK_POLL)
                return {}
            timeout = min(timeout, _HELD_BACK_POLL)
        generation = self.app.consumer_generation_id
        records = await super()._getmany(active_partitions, timeout)
        # Rebalancing now, or a rebalance came and went during the fetch: aiokafka changes the
        # assignment before Faust sets the new generation, so the flag covers the gap between.
        if self.app.rebalancing or self.app.consumer_generation_id != generation:
            return self._held_back(records)
        return records

    def _held_back(self, records: RecordMap) -> RecordMap:
        """A fetch that began before a rebalance and returned inside it: keep its stream records back.

        Apache Kafka answers a waiting fetch as soon as the new assignment's partitions have data
        (tansu holds it for its full wait), so such a fetch returned stream records of the new
        assignment, read from its start, before the queue clearing: they were dropped there and
        the partitions went on after them (147 of 400 messages lost in
        ``tests/test_transport_rebalance.py`` on Kafka). aiokafka discards results of an old
        assignment once the assignment changed, which it did before the generation did, so these
        records start at the new assignment's position: each partition is sought back to its first
        record and fetched again once the rebalance is over.
        """
        assigned = self.assignment()
        kept: RecordMap = {}
        for tp, tp_records in records.items():
            if self._is_changelog_tp(tp):
                kept[tp] = tp_records
            elif tp_records and tp in assigned:
                self._thread.seek(tp, tp_records[0].offset)
        return kept


class Transport(faust_aiokafka.Transport):
    """``kafka://`` for rtdstream's worker (the app must have a ``fetch_max_wait`` in seconds)."""

    Consumer = _Consumer
