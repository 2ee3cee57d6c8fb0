"""What the validation stage makes of a batch of ``rtd.readings`` messages (pure logic).

Every input message may hold readings of several sources (an envelope, or one
reading); each source's readings of the whole input batch and one input
partition become one ``rtd.validated`` message listing its parts, so the
stages after validation pay their per-message cost per source and batch, not
per reading. Rejected readings become dead letters with a reason.

Each source's batches are returned in input order, which is what lets later
stages recognise a replay by its parts (:mod:`rtdstream.origins`).

Gathering reorders readings across sources: all of source a's readings of a
batch reach the window stage before any of source b's. The window stage closes
windows by a watermark per ``rtd.validated`` partition (newest time minus the
grace period), so reordering the sources of one such partition by more than
the grace period would make b's readings late that arrived in time. So for
each output partition the readings are gathered in segments whose times span
at most ``max_span_ms`` (the grace period): a reading r then finds a watermark
no higher than r's own time, or than the one it would have found in input
order, so gathering never makes a reading late. Partitions are independent:
each has a watermark of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rtdstream.models import ReadingBatch, dead_letter, encode_batch
from rtdstream.topics import READINGS
from rtdstream.validation import Validated

STAGE = "validate"
#: Most readings in one rtd.validated message: about 40 bytes each with its part, so well below
#: the 1 MB a topic takes by default (one part is never split, and is at most one input message).
MAX_BATCH_READINGS = 10_000

#: A record for a topic: key, value.
Keyed = tuple[bytes | None, bytes]


@dataclass
class Gathered:
    """The output of one input batch: readings per (source, input partition), dead letters, counts."""

    #: Longest span of reading times gathered together per output partition: the grace period.
    max_span_ms: int
    #: The rtd.validated partition of a source (its key's, by the producer's partitioner).
    partition_of: Callable[[str], int]
    #: Batches closed (full, or at the end of a segment), in the order they were.
    full: list[ReadingBatch] = field(default_factory=list)
    open: dict[tuple[str, int], ReadingBatch] = field(default_factory=dict)
    #: Per output partition, the earliest and latest reading time of its open segment.
    spans: dict[int, tuple[int, int]] = field(default_factory=dict)
    dead_letters: list[Keyed] = field(default_factory=list)
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, result: Validated, partition: int, offset: int) -> None:
        """The readings and rejections of the input message at ``partition``/``offset``."""
        for index, batch in enumerate(result.batches.values()):
            self._keep_span(batch)
            self._append(batch, partition, offset, index)
        for rejection in result.rejections:
            record = dead_letter(
                rejection.reason, rejection.raw, stage=STAGE, detail=rejection.detail, source=rejection.source,
                topic=READINGS, partition=partition, offset=offset,
            )
            self.dead_letters.append((rejection.source.encode() if rejection.source else None, record))
            self.rejected[rejection.reason] += 1
        self.accepted += result.accepted

    def _keep_span(self, batch: ReadingBatch) -> None:
        """Close the open segment of the batch's output partition when the batch would widen it too far."""
        output = self.partition_of(batch.source)
        first, last = min(batch.times), max(batch.times)
        span = self.spans.get(output)
        if span is not None:
            if max(last, span[1]) - min(first, span[0]) > self.max_span_ms:
                self._close_segment(output)
            else:
                first, last = min(first, span[0]), max(last, span[1])
        self.spans[output] = (first, last)

    def _close_segment(self, output: int) -> None:
        for key in [key for key in self.open if self.partition_of(key[0]) == output]:
            self.full.append(self.open.pop(key))

    def _append(self, batch: ReadingBatch, partition: int, offset: int, index: int) -> None:
        key = (batch.source, partition)
        gathered = self.open.get(key)
        if gathered is not None and len(gathered) + len(batch) > MAX_BATCH_READINGS:
            self.full.append(self.open.pop(key))
            gathered = None
        if gathered is None:
            gathered = self.open[key] = ReadingBatch(batch.source, parts=[])
        gathered.times.extend(batch.times)
        gathered.speeds.extend(batch.speeds)
        assert gathered.parts is not None
        gathered.parts.append((offset, index, len(batch)))
        gathered.origin = (partition, offset, index)

    def batches(self) -> list[ReadingBatch]:
        """Every batch of readings, each source's in input order."""
        return [*self.full, *self.open.values()]

    def validated(self) -> list[Keyed]:
        """The ``rtd.validated`` records, keyed by source."""
        return [(batch.source.encode(), encode_batch(batch)) for batch in self.batches()]
