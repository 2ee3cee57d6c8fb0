"""A small Faust worker on rtdstream's transport, for ``tests/test_transport_rebalance.py``.

It has the two things that made Faust lose messages at a rebalance: a table
with state to recover (so table recovery starts the fetcher, as after any
restart of rtdstream's worker) and an agent slower than its backlog (so
fetched messages are still queued when a rebalance clears the queues). The
agent appends ``partition offset`` to a file for every message it processes.
Commits are rare, so a rebalance always comes before the first one.

Run as ``python -m tests.support.rebalance_worker worker -l info --web-port N``, with:

- ``RTD_BROKER``: the broker URL;
- ``REBALANCE_OUT``: the file the agent appends to;
- ``REBALANCE_SEEK_DELAY``: seconds the consumer waits before each seek to the
  committed offsets. It widens the window in which Faust has resumed the stream
  partitions but not yet sought them, which the race needs.
- ``REBALANCE_DROP_CHANGELOG``: ``first`` or ``always``: the consumer fetches the
  changelog's records and drops them before they reach the table recovery, the
  first time or every time, as Faust's ``getmany`` does with a batch it is
  handing out when a rebalance stops the flow (see rtdstream.recovery_watchdog);
- ``REBALANCE_STALL_AFTER``: the recovery watchdog's stall time, in seconds.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import TextIO

import faust
from faust.transport.consumer import RecordMap
from faust.types import TP, StreamT, TransportT

from rtdstream.recovery_watchdog import RecoveryWatchdog, StallTracker
from rtdstream.transport import Transport

APP_ID = "rebalance-test"
TOPIC = "rebalance.in"
PARTITIONS = 4
TABLE = "state"
#: The table's changelog, where Faust recovers the table from.
CHANGELOG = f"{APP_ID}-{TABLE}-changelog"
#: Processing time per message: the agent stays behind the backlog for a few seconds.
PER_MESSAGE = 0.02


class _SlowSeekConsumer(Transport.Consumer):  # type: ignore[name-defined,misc]
    dropped_once = False

    async def perform_seek(self) -> None:
        await asyncio.sleep(float(os.environ.get("REBALANCE_SEEK_DELAY", "0")))
        await super().perform_seek()

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> RecordMap:
        records = await super()._getmany(active_partitions, timeout)
        drop = os.environ.get("REBALANCE_DROP_CHANGELOG")
        if drop == "always" or (drop == "first" and not self.dropped_once):
            changelog = {tp for tp in records if tp.topic == CHANGELOG}
            if changelog:
                self.dropped_once = True
                return {tp: batch for tp, batch in records.items() if tp not in changelog}
        return records


class _SlowSeekTransport(Transport):
    Consumer = _SlowSeekConsumer


class _App(faust.App):
    fetch_max_wait = 0.02  # read by rtdstream's transport

    def _new_transport(self) -> TransportT:
        return _SlowSeekTransport(self.conf.broker_consumer, self)


def create_app(out: TextIO) -> faust.App:
    """The app, with an agent that writes to ``out``."""
    app = _App(
        APP_ID,
        broker=os.environ["RTD_BROKER"],
        store="memory://",
        topic_partitions=PARTITIONS,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.2,
        broker_commit_interval=3600.0,
        stream_wait_empty=False,  # as rtdstream's app
    )
    app.Table(TABLE, default=int, partitions=PARTITIONS)
    stall_after = float(os.environ.get("REBALANCE_STALL_AFTER", "15"))
    RecoveryWatchdog(app, StallTracker(stall_after=stall_after)).register()

    @app.agent(app.topic(TOPIC, partitions=PARTITIONS, value_serializer="raw"))
    async def record(stream: StreamT) -> None:
        async for event in stream.events():
            await asyncio.sleep(PER_MESSAGE)
            out.write(f"{event.message.partition} {event.message.offset}\n")

    return app


if __name__ == "__main__":
    # Line-buffered: the test reads the file while the worker runs.
    with Path(os.environ["REBALANCE_OUT"]).open("a", buffering=1) as processed:
        create_app(processed).main()
