"""What the validation stage makes of a batch of ``rtd.readings`` messages (pure logic).

Every input message may hold readings of several sources (an envelope, or one
reading); each source's readings of the whole input batch and one input
partition become one ``rtd.validated`` message listing its parts, so the
stages after validation pay their per-message cost per source and batch, not
per reading. Rejected readings become dead letters with a reason.

Each source's batches are returned in input order, which is what lets later
stages recognise a replay by its parts (:mod:`rtdstream.origins`).
"""

from __future__ import annotations

from collections import Counter
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

    #: Batches that reached MAX_BATCH_READINGS, in the order they did.
    full: list[ReadingBatch] = field(default_factory=list)
    open: dict[tuple[str, int], ReadingBatch] = field(default_factory=dict)
    dead_letters: list[Keyed] = field(default_factory=list)
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, result: Validated, partition: int, offset: int) -> None:
        """The readings and rejections of the input message at ``partition``/``offset``."""
        for index, batch in enumerate(result.batches.values()):
            self._append(batch, partition, offset, index)
        for rejection in result.rejections:
            record = dead_letter(
                rejection.reason, rejection.raw, stage=STAGE, detail=rejection.detail, source=rejection.source,
                topic=READINGS, partition=partition, offset=offset,
            )
            self.dead_letters.append((rejection.source.encode() if rejection.source else None, record))
            self.rejected[rejection.reason] += 1
        self.accepted += result.accepted

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
