"""The worker's Faust app and the topics its stages share, built from the settings they are given.

Nothing here reads the environment or registers anything on import, so a test
can build an app from settings of its own (and as many as it likes).
:mod:`rtdstream.app` builds the one ``faust -A rtdstream.app worker`` runs.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import TransportT

from rtdstream import topics
from rtdstream.collector import collect_young_generation_less_often, freeze_startup_heap
from rtdstream.config import Settings
from rtdstream.errors import UserError
from rtdstream.kafka_security import faust_credentials
from rtdstream.log_throttle import throttle_kafka_client_logs
from rtdstream.producer import compression_type
from rtdstream.recovery_watchdog import RecoveryWatchdog
from rtdstream.runtime import worker_logging_config
from rtdstream.transport import Transport

log = logging.getLogger(__name__)

#: How long a worker's stop may take, in seconds, before the worker exits anyway. A stop with
#: the broker reachable takes a few seconds (the worker leaves its group, commits and flushes).
#: With the broker away, Faust's flush of its producer and its consumer's last commit wait for
#: the broker without bound (measured: still running 150 s after SIGTERM).
STOP_SECONDS = 20.0


class RtdApp(faust.App):
    """The Faust app, plus start-up work that must finish before any agent runs.

    ``on_first_start`` runs before the producer, consumer and agents start. It
    creates the topics with the configured partition count (a topic the
    workers only produce to would otherwise be auto-created by the broker
    with its own count) and then runs every callable in :attr:`preparations`
    (database migrations, for example). A :class:`UserError` there ends the
    worker with one line on stderr instead of a crash report.
    """

    preparations: list[Callable[[], Awaitable[None]]]
    #: What the app was created from; the stages registered on it are built from the same.
    settings: Settings

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.preparations = []
        self.fetch_max_wait = settings.fetch_max_wait

    def _new_transport(self) -> TransportT:
        # Faust's own aiokafka transport, but with a fetch wait we choose (see rtdstream.transport).
        return Transport(self.conf.broker_consumer, self)

    async def on_first_start(self) -> None:
        await super().on_first_start()
        try:
            await topics.ensure_topics(self.settings)
            for prepare in self.preparations:
                await prepare()
        except UserError as exc:
            print(f"rtdstream worker: {exc}", file=sys.stderr, flush=True)
            os._exit(exc.exit_code)  # nothing has started yet, there is nothing to clean up
        freeze_startup_heap()  # the app, its stages and their modules are built by now (rtdstream.collector)
        collect_young_generation_less_often()


class Worker(faust.Worker):
    """Faust's worker without its start-up spinner, and with a bounded stop.

    To spin on every log record, the spinner sets the root logger to DEBUG when
    the level is WARN or above (Faust's default): every debug call of aiokafka
    and Faust then builds a record that no handler prints. With one-reading
    messages that was 7% of the worker's CPU. The Kafka client's repeated
    warnings are held back as in every process (:mod:`rtdstream.log_throttle`).

    A stop on SIGTERM or Ctrl-C that has not ended after :data:`STOP_SECONDS`
    ends the process with one warning and exit status 0. Faust ignores a second
    signal while it stops, so without the bound a worker whose broker went away
    could only be killed. Exiting then is as safe as ``kill -9``, which every
    stage is built to survive: nothing the worker held was committed past what
    MySQL stored, so the next owner of its partitions takes it again.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)
        throttle_kafka_client_logs(logger.handlers)

    def _schedule_shutdown(self, received: signal.Signals) -> None:
        if not self._signal_stop_time:  # the first signal: Faust ignores the others
            # A thread, not the event loop: the loop may be what is stuck.
            deadline = threading.Timer(STOP_SECONDS, _exit_overdue, args=(received.name,))
            deadline.daemon = True
            deadline.start()
        super()._schedule_shutdown(received)


def _exit_overdue(signal_name: str) -> None:
    log.warning(
        "rtdstream worker: still stopping %.0fs after %s (is the broker reachable?); exiting without "
        "the rest of the stop. Nothing is lost: what was not committed is processed again by the "
        "partitions' next owner.", STOP_SECONDS, signal_name,
    )
    logging.shutdown()  # flush every handler: os._exit skips it
    os._exit(0)


def create_app(settings: Settings) -> RtdApp:
    """The Faust app, configured for the embedded broker and Apache Kafka alike (README, Components)."""
    app = RtdApp(
        settings.app_id,
        settings=settings,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings),
        store="memory://",
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,  # the table changelog Faust creates
        topic_allow_declare=True,
        # A new group must start from the beginning: every reading that reached
        # rtd.readings is owed to the database.
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout,
        broker_heartbeat_interval=max(settings.session_timeout / 5, 0.5),
        broker_rebalance_timeout=max(settings.session_timeout * 2, 20.0),
        producer_acks=-1,
        # Faust's default (0) sends a request per message: a third of the worker's time went to
        # socket writes in a profile at 20,000 readings/s. 5 ms cut its CPU by ~8%, the broker's by ~20%.
        producer_linger=settings.producer_linger,
        producer_compression_type=compression_type(settings),
        # An agent's send() waits while its partition's batch is full: 16 KiB, Faust's default,
        # is one batch of a few hundred readings.
        producer_max_batch_size=1_048_576,
        # Do not wait for in-flight events on rebalance and stop: Faust drops the
        # events queued for one agent without releasing them, so with two agents
        # on rtd.validated the wait never ends (a worker hung on SIGTERM and on
        # every rebalance). Unacknowledged input is not committed either way, and
        # every stage is idempotent on replay.
        stream_wait_empty=False,
        # Messages buffered per partition before its fetching pauses. Faust's 4096
        # envelopes of a few hundred readings each is hundreds of MB per partition:
        # in a 10-minute soak at 20,000/s the worker's RSS grew 13.5% while it
        # buffered a backlog. 512 still holds more than two batches of every agent.
        stream_buffer_maxsize=512,
        logging_config=worker_logging_config(settings.log_format),
        Worker=Worker,
    )
    RecoveryWatchdog(app).register()
    return app


@dataclass(frozen=True)
class StageTopics:
    """The topics the Faust stages read and write, declared on one app."""

    validated: faust.TopicT
    dlq: faust.TopicT
    windows: faust.TopicT
    partials: faust.TopicT

    @classmethod
    def declare(cls, app: RtdApp) -> StageTopics:
        """Declare the four topics on ``app``: each app's agents subscribe to its own topic objects."""
        return cls(
            validated=_declare(app, topics.VALIDATED),
            dlq=_declare(app, topics.DLQ),
            windows=_declare(app, topics.WINDOWS),
            partials=_declare(app, topics.PARTIALS),
        )


def _declare(app: RtdApp, name: str) -> faust.TopicT:
    # internal=True makes the worker create the topic with our partition count
    # before subscribing, instead of letting the broker auto-create it.
    return app.topic(
        name,
        partitions=app.settings.partitions,
        internal=True,
        key_serializer="raw",
        value_serializer="raw",
    )
