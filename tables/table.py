"""The Faust table that keeps window state across crashes, one key per partition.

Writes bypass ``table[key] = value``: that path queues the changelog record
with no handle to wait on, and Faust's commit gives up waiting for queued
records after 0.1 s, so offsets can be committed for state that never reached
the broker (how a plain table loses updates after ``kill -9``). Here the
caller gets the changelog future and waits for the broker's acknowledgement
before it lets the input be committed.

Values are the encoded bytes of a :class:`PartitionState`. Decoding on every
batch would cost more than the batch, so the decoded state is cached for as
long as the table still holds the very bytes object it was encoded to; table
recovery or standby replication put new objects there, which drops the cache.
"""

from __future__ import annotations

from collections.abc import Iterable

import faust
from faust.types import FutureMessage

from rtdstream.tables.state import PartitionState

TABLE_NAME = "window-state"


class WindowStateTable:
    def __init__(self, app: faust.App, *, partitions: int) -> None:
        self.table = app.Table(
            TABLE_NAME,
            partitions=partitions,
            key_type=int,
            value_type=bytes,
            help="Window state per rtd.validated partition (open windows, watermark, input position).",
        )
        self._cache: dict[int, tuple[bytes | None, PartitionState]] = {}

    def get(self, partition: int) -> PartitionState:
        """The partition's state; mutate it only between :meth:`get` and :meth:`save`."""
        stored = self.table.data.get(partition)
        cached = self._cache.get(partition)
        if cached is not None and cached[0] is stored:
            return cached[1]
        state = PartitionState() if stored is None else PartitionState.decode(stored)
        self._cache[partition] = (stored, state)
        return state

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop cached states that were changed but will not be saved (the batch failed)."""
        for partition in partitions:
            self._cache.pop(partition, None)

    def save(self, partition: int, state: PartitionState) -> bytes:
        """Put the state into the local table; the caller sends it with :meth:`send_changelog`."""
        value = state.encode()
        self.table.data[partition] = value
        self._cache[partition] = (value, state)
        return value

    def send_changelog(self, partition: int, value: bytes) -> FutureMessage:
        """Produce the partition's value to its changelog; resolves when the broker has it."""
        return self.table.send_changelog(partition, partition, value)
