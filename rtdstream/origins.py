"""Which validated readings a stage has applied already, by their place in ``rtd.readings``.

The validation stage may send the same readings again: after its own crash it
validates the unacknowledged input once more, and gathers it into batches of
other boundaries than the first time. Every stage after it therefore
remembers, per input partition and source, the newest part it applied
(:data:`~rtdstream.models.Mark`), and takes of each batch only the parts after
it (:meth:`~rtdstream.models.ReadingBatch.since`).

Why per source: one ``rtd.validated`` partition receives the batches of many
sources from one input partition, and their parts interleave (source a gets
offsets 1, 3, 5; source b offsets 2, 4, 6). A single mark per input partition
would take a's offset 5 as proof that b's offset 2 was applied too, and a crash
between the two sends would lose b's readings. Per source, parts arrive in
input order, because the validation stage sends each source's batches in order
and the broker keeps a partition's order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rtdstream.models import Mark, ReadingBatch

NOTHING: Mark = (-1, -1)


@dataclass(slots=True)
class OriginMarks:
    #: (rtd.readings partition, source) -> newest part applied
    marks: dict[tuple[int, str], Mark] = field(default_factory=dict)
    #: rtd.readings partition -> newest part applied for every source, as remembered before marks
    #: were kept per source (state written by an older version): nothing at or below it is new.
    floors: dict[int, Mark] = field(default_factory=dict)

    def take(self, batch: ReadingBatch) -> ReadingBatch | None:
        """The readings of ``batch`` not applied yet (None: none), remembered as applied from now on.

        Batches without an origin (written to ``rtd.validated`` by another
        producer) are always new.
        """
        partition = batch.origin[0]
        if partition < 0:
            return batch
        key = (partition, batch.source)
        fresh = batch.since(max(self.marks.get(key, NOTHING), self.floors.get(partition, NOTHING)))
        if fresh is not None:
            self.marks[key] = fresh.mark
        return fresh

    def to_json(self) -> dict[str, object]:
        return {
            "origins": {str(partition): list(mark) for partition, mark in self.floors.items()},
            "source_origins": [[partition, source, *mark] for (partition, source), mark in self.marks.items()],
        }

    @classmethod
    def from_json(cls, obj: dict[str, object]) -> OriginMarks:
        floors = obj.get("origins") or {}
        marks = obj.get("source_origins") or []
        assert isinstance(floors, dict) and isinstance(marks, list)
        return cls(
            marks={(partition, source): (offset, index) for partition, source, offset, index in marks},
            floors={int(partition): (mark[0], mark[1]) for partition, mark in floors.items()},
        )
