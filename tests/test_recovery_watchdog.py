"""The recovery watchdog's verdicts (rtdstream.recovery_watchdog.StallTracker), as pure logic.

The watchdog itself, on a worker whose changelog records are lost, is tested in
``tests/test_transport_rebalance.py``.
"""

from __future__ import annotations

from faust.types import TP

from rtdstream.recovery_watchdog import StallTracker, Verdict

TP0 = TP("app-table-changelog", 0)
TP1 = TP("app-table-changelog", 1)


def test_a_partition_that_moves_is_left_alone_however_long_its_recovery_takes() -> None:
    tracker = StallTracker(stall_after=10, max_rewinds=3)
    verdicts = {tracker.observe(TP0, offset, 1_000, now=float(offset)) for offset in range(-1, 1_000, 7)}
    assert verdicts == {Verdict.WAIT}


def test_a_partition_read_to_its_highwater_is_never_rewound() -> None:
    tracker = StallTracker(stall_after=10, max_rewinds=3)
    assert [tracker.observe(TP0, 53, 53, now) for now in (0.0, 11.0, 100.0)] == [Verdict.WAIT] * 3


def test_a_stalled_partition_is_rewound_once_per_stall_time_then_given_up() -> None:
    tracker = StallTracker(stall_after=10, max_rewinds=2)
    verdicts = [tracker.observe(TP0, -1, 107, now) for now in (0.0, 9.9, 10.0, 15.0, 20.0, 30.0, 35.0)]
    assert verdicts == [Verdict.WAIT, Verdict.WAIT, Verdict.REWIND, Verdict.WAIT, Verdict.REWIND,
                        Verdict.GIVE_UP, Verdict.GIVE_UP]
    assert tracker.rewinds(TP0) == 2


def test_progress_after_a_rewind_starts_a_new_stall_count() -> None:
    tracker = StallTracker(stall_after=10, max_rewinds=1)
    assert tracker.observe(TP0, -1, 107, 0.0) is Verdict.WAIT
    assert tracker.observe(TP0, -1, 107, 10.0) is Verdict.REWIND
    assert tracker.observe(TP0, 40, 107, 11.0) is Verdict.WAIT  # the rewind brought records
    assert tracker.rewinds(TP0) == 0
    assert tracker.observe(TP0, 40, 107, 21.0) is Verdict.REWIND


def test_partitions_are_judged_apart() -> None:
    tracker = StallTracker(stall_after=10, max_rewinds=3)
    tracker.observe(TP0, -1, 107, 0.0)
    tracker.observe(TP1, -1, 53, 0.0)
    assert tracker.observe(TP1, 20, 53, 10.0) is Verdict.WAIT
    assert tracker.observe(TP0, -1, 107, 10.0) is Verdict.REWIND


def test_a_new_recovery_starts_with_a_clean_slate() -> None:
    tracker = StallTracker(stall_after=10, max_rewinds=3)
    tracker.observe(TP0, -1, 107, 0.0)
    tracker.forget()
    assert tracker.observe(TP0, -1, 107, 10.0) is Verdict.WAIT
