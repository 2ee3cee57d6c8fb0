"""The validation stage: ``rtd.readings`` -> ``rtd.validated`` and ``rtd.dlq``, in bulk.

Not a Faust agent: Faust's per-event path (a message object, a channel, a
stream event each) ran at 8,900 one-reading messages/s on a 2-core machine
doing nothing else, where a plain aiokafka ``getmany`` took 405,000/s. So this
Faust service has a consumer of its own, in a group of its own
(:func:`rtdstream.topics.validation_group`): the workers share the partitions
of ``rtd.readings`` through it as they share the others through Faust's group,
and ``faust -A rtdstream.app worker`` runs it like any agent.

An input batch is what arrives within ``RTD_VALIDATE_WITHIN`` of its first
message (:func:`take_batch`), taken one message of each partition in turn.
Its readings become one batch per source and input partition
(:mod:`rtdstream.gather`, in segments no wider in event time than the grace
period), keyed by source so the next stages see each source in order on one
partition. Its offsets are committed only once the broker has acknowledged
everything the batch produced, and in input order; meanwhile the next batches
are validated and sent (up to MAX_IN_FLIGHT), so waiting for the broker never
idles the stage. A crash replays what was not committed: every batch lists the input
parts it holds, and later stages take only parts they have not applied
(:mod:`rtdstream.origins`).

The hazard that remains: a send that fails for good (after aiokafka retried it
for its whole request timeout, two minutes) while a later send to the same
partition succeeds leaves a gap a replay cannot fill, because the later parts
mark the earlier ones as applied. The stage ends the worker at the first failed
send (:func:`rtdstream.retry.exit_on_bug`), before more is sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import zip_longest

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.partitioner import murmur2
from mode import Service

from rtdstream import metrics
from rtdstream.backoff import Backoff
from rtdstream.config import Settings
from rtdstream.gather import STAGE, Gathered
from rtdstream.kafka_security import client_options
from rtdstream.producer import start_idempotent_producer, stop_producer
from rtdstream.retry import exit_on_bug, is_transient
from rtdstream.topics import DLQ, READINGS, VALIDATED, validation_group
from rtdstream.validation import validate_message
from rtdstream.worker_app import RtdApp

log = logging.getLogger(__name__)

#: Input batches sent and not yet acknowledged: enough that the broker's round trip overlaps
#: the validation of the next batches, few enough that a rebalance waits for little.
MAX_IN_FLIGHT = 4
#: How long a ``getmany`` waits for input before the stage looks at its batches in flight.
POLL_MS = 100
#: An input batch: the messages of each partition, in offset order.
RecordMap = dict[TopicPartition, list[ConsumerRecord]]
#: How long a stopping worker waits for the broker to acknowledge what was sent.
STOP_SECONDS = 10.0


@dataclass
class InFlight:
    """An input batch whose output was sent: its deliveries, and what to commit and count after them."""

    deliveries: list[asyncio.Future]
    #: partition -> next offset to consume, committed once every delivery succeeded
    offsets: dict[TopicPartition, int]
    gathered: Gathered

    def done(self) -> bool:
        return all(delivery.done() for delivery in self.deliveries)

    def failed(self) -> bool:
        return any(delivery.cancelled() or delivery.exception() is not None for delivery in self.deliveries)


class Validation(Service):
    """Validates ``rtd.readings`` in bulk under a consumer group of its own."""

    consumer: AIOKafkaConsumer

    def __init__(self, app: RtdApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        #: True from the consumer's start to the stop, for the worker's /healthz.
        self.running = False
        super().__init__(beacon=app.beacon)

    def __post_init__(self) -> None:
        self.in_flight: deque[InFlight] = deque()
        # Held while a batch is taken, sent and settled, and by a rebalance that settles everything.
        self.lock = asyncio.Lock()

    def register(self) -> None:
        """Start and stop with the app's worker like an agent, and log the totals every 30 s."""
        self.app.service(self)  # an instance: Faust starts it as it would one it made of the class
        self.app.timer(30.0)(log_counters)

    async def on_start(self) -> None:
        settings = self.settings
        self.producer = await start_idempotent_producer(
            settings, linger_ms=round(settings.producer_linger * 1000)
        )
        self.partition_of = key_partitioner(len(await self.producer.partitions_for(VALIDATED)))
        timeout_ms = round(settings.session_timeout * 1000)
        self.consumer = AIOKafkaConsumer(
            **client_options(settings),
            group_id=validation_group(settings.app_id),
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # every reading that reached rtd.readings is owed to the database
            fetch_max_wait_ms=round(settings.fetch_max_wait * 1000),
            session_timeout_ms=timeout_ms,
            heartbeat_interval_ms=max(timeout_ms // 5, 500),
            rebalance_timeout_ms=max(timeout_ms * 2, 20_000),
        )
        self.consumer.subscribe([READINGS], listener=_SettleOnRevoke(self))
        await self.consumer.start()
        self.running = True

    def assignment(self) -> set[TopicPartition]:
        """The ``rtd.readings`` partitions this worker validates now."""
        return self.consumer.assignment() if self.running else set()

    async def on_stop(self) -> None:
        """Leave the group cleanly: settle what was sent (briefly), commit it, then let the partitions go."""
        self.running = False
        try:
            async with asyncio.timeout(STOP_SECONDS):
                async with self.lock:
                    await self.settle(all_of_them=True)
        except TimeoutError:
            log.warning("validation: the broker did not acknowledge %d batch(es) in %.0fs at stop; "
                        "they are validated again after restart", len(self.in_flight), STOP_SECONDS)
        await self.consumer.stop()
        await stop_producer(self.producer, within=STOP_SECONDS)  # what it drops is not committed

    @Service.task
    async def _validate_forever(self) -> None:
        while not self.should_stop:
            records = await take_batch(
                self._fetch, max_records=self.settings.validate_batch, within=self.settings.validate_within
            )
            async with self.lock:
                if records:
                    await self.send(records)
                await self.settle(all_of_them=False)

    async def _fetch(self, timeout_ms: int, max_records: int) -> RecordMap:
        return await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)

    async def send(self, records: dict[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        """Validate one input batch and send what it produces."""
        gathered = Gathered(max_span_ms=round(self.settings.grace * 1000), partition_of=self.partition_of)
        now_ms = int(time.time() * 1000)
        for tp, message in round_robin(records):
            result = validate_message(
                message.value, message.key, now_ms=now_ms, max_bytes=self.settings.max_message_bytes
            )
            gathered.add(result, tp.partition, message.offset)
        offsets = {tp: messages[-1].offset + 1 for tp, messages in records.items() if messages}
        deliveries = [await self._send(VALIDATED, key, value) for key, value in gathered.validated()]
        deliveries += [await self._send(DLQ, key, value) for key, value in gathered.dead_letters]
        self.in_flight.append(InFlight(deliveries, offsets, gathered))

    async def _send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future:
        delivery = await self.producer.send(topic, value, key=key)
        delivery.add_done_callback(self._exit_if_failed)
        return delivery

    def _exit_if_failed(self, delivery: asyncio.Future) -> None:
        """A send failed for good: end the worker before later sends could land after the gap it leaves."""
        if self.should_stop or delivery.cancelled():
            return  # stopping: what was not acknowledged is not committed, and is validated again
        if (error := delivery.exception()) is not None:
            exit_on_bug("validation: sending validated readings", error)

    async def settle(self, *, all_of_them: bool) -> None:
        """Commit the input of the acknowledged batches, oldest first; wait while too many are in flight."""
        while self.in_flight and (
            all_of_them or len(self.in_flight) > MAX_IN_FLIGHT or self.in_flight[0].done()
        ):
            batch = self.in_flight[0]
            if batch.deliveries:
                await asyncio.wait(batch.deliveries)
            if batch.failed():  # stopping (else the worker has exited): validated again after restart
                log.warning("validation: %d batch(es) not acknowledged at stop; validated again after restart",
                            len(self.in_flight))
                self.in_flight.clear()
                return
            await self._commit(batch.offsets)
            self.in_flight.popleft()
            metrics.READINGS_ACCEPTED.inc(batch.gathered.accepted)
            for reason, rejected in batch.gathered.rejected.items():
                metrics.READINGS_REJECTED.labels(STAGE, reason).inc(rejected)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit, retrying through a broker outage; a partition that moved meanwhile is its new owner's."""
        backoff = Backoff(initial=0.5, cap=10.0)
        while True:
            try:
                await self.consumer.commit(offsets)
                return
            except (CommitFailedError, IllegalStateError) as exc:
                log.info("validation: not committing a batch of partitions that moved (%s); "
                         "their new owner validates it again", exc)
                return
            except Exception as exc:  # noqa: BLE001  (outages are retried; anything else ends the worker)
                if not is_transient(exc):
                    exit_on_bug("validation: committing input offsets", exc)
                delay = backoff.next()
                log.warning("validation: committing input offsets failed (%r); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)


async def take_batch(
    fetch: Callable[[int, int], Awaitable[RecordMap]], *, max_records: int, within: float,
    clock: Callable[[], float] = time.monotonic,
) -> RecordMap:
    """One input batch: what ``fetch`` brings within ``within`` seconds of its first message, at most ``max_records``.

    Why wait: the stages after validation pay per message, and each source's
    readings of a batch leave as one message. Without the wait a batch is what
    one fetch brings, a few hundred one-reading messages at 20,000/s, spread
    over every source, so those stages got a message for every few readings and
    fell behind on a 2-core machine (README, Performance).

    Why not always: a fetch that brings one message says the input is quiet
    (a busy one piles up between two fetches), and a wait would only delay
    that message on its way to MySQL, so it is taken at once, as Nagle's
    algorithm sends a lone small packet. ``fetch`` is
    ``getmany(timeout_ms, max_records)``, which returns as soon as anything is
    there.
    """
    batch = {tp: list(records) for tp, records in (await fetch(POLL_MS, max_records)).items() if records}
    count = sum(map(len, batch.values()))
    deadline = clock() + within
    while 1 < count < max_records and (left := deadline - clock()) > 0:
        for tp, records in (await fetch(math.ceil(left * 1000), max_records - count)).items():
            held = batch.setdefault(tp, [])
            if held:
                # A rebalance during the wait that gave the partition back resets its position to the
                # committed offset, so the fetch brings again what is held: the same readings twice in
                # one batch, which the sink cannot tell apart (a CI run wrote 6 readings twice to Data).
                records = [record for record in records if record.offset > held[-1].offset]
            held.extend(records)
            count += len(records)
    return batch


def key_partitioner(partitions: int) -> Callable[[str], int]:
    """The partition the producer's default partitioner (Kafka's: murmur2 of the key) gives a source."""

    @lru_cache(maxsize=65_536)
    def partition_of(source: str) -> int:
        return (murmur2(source.encode()) & 0x7FFFFFFF) % partitions

    return partition_of


def round_robin(records: dict[TopicPartition, Sequence[ConsumerRecord]]) -> Iterator[tuple[TopicPartition, ConsumerRecord]]:
    """One message of each partition in turn, so partitions that are level in time stay level."""
    rows = zip_longest(*[[(tp, message) for message in messages] for tp, messages in records.items()])
    return (item for row in rows for item in row if item is not None)


class _SettleOnRevoke(ConsumerRebalanceListener):
    """Before partitions move to another worker, everything sent from them is acknowledged and committed."""

    def __init__(self, validation: Validation) -> None:
        self.validation = validation

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.validation.lock:
            await self.validation.settle(all_of_them=True)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


async def log_counters() -> None:
    """One line per interval with what validation accepted and rejected so far."""
    counts = metrics.snapshot("rtd_readings_")
    if counts:
        log.info("validation totals %s", " ".join(f"{k}={v:g}" for k, v in sorted(counts.items())))
