"""How the validation stage forms an input batch (``agents.validate.take_batch``), on a scripted fetch and clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple

from aiokafka import TopicPartition

from agents.validate import POLL_MS, take_batch

A, B = TopicPartition("rtd.readings", 0), TopicPartition("rtd.readings", 1)


class Record(NamedTuple):
    offset: int


def at(*offsets: int) -> list[Record]:
    return [Record(offset) for offset in offsets]


@dataclass
class ScriptedFetch:
    """A ``getmany`` on a fake clock: each answer arrives at its time, and a fetch returns at once with
    the next answer already there, at its arrival within the timeout, or with nothing at the timeout."""

    answers: list[tuple[float, dict]]
    now: float = 0.0
    calls: list[tuple[int, int]] = field(default_factory=list)

    async def __call__(self, timeout_ms: int, max_records: int) -> dict:
        self.calls.append((timeout_ms, max_records))
        if self.answers and self.answers[0][0] <= self.now + timeout_ms / 1000:
            arrival, answer = self.answers.pop(0)
            self.now = max(self.now, arrival)
            return answer
        self.now += timeout_ms / 1000
        return {}

    def clock(self) -> float:
        return self.now


def take(fetch: ScriptedFetch, *, max_records: int = 100, within: float = 0.05) -> dict:
    return asyncio.run(take_batch(fetch, max_records=max_records, within=within, clock=fetch.clock))


def test_idle_input_returns_with_nothing_after_one_poll() -> None:
    fetch = ScriptedFetch([])
    assert take(fetch) == {}
    assert fetch.calls == [(POLL_MS, 100)]


def test_waits_for_more_until_within_of_the_first_message() -> None:
    fetch = ScriptedFetch([(0.03, {A: at(1, 2)}), (0.04, {B: at(7)}), (0.055, {A: at(3)}), (0.07, {A: at(4)}),
                           (0.085, {B: at(8)})])
    assert take(fetch) == {A: at(1, 2, 3, 4), B: at(7)}
    # the wait runs from the first message (at 30 ms) and each fetch waits only for what is left of it
    assert [timeout for timeout, _ in fetch.calls] == [POLL_MS, 50, 40, 25, 10]
    assert fetch.now == 0.08
    assert fetch.answers == [(0.085, {B: at(8)})]


def test_offsets_fetched_again_after_a_rebalance_are_not_held_twice() -> None:
    # the partition came back to this worker at its committed offset 1 while 1-3 were held
    fetch = ScriptedFetch([(0.0, {A: at(1, 2, 3)}), (0.01, {A: at(1, 2, 3, 4, 5), B: at(7)})])
    assert take(fetch) == {A: at(1, 2, 3, 4, 5), B: at(7)}


def test_a_lone_message_is_taken_at_once() -> None:
    fetch = ScriptedFetch([(0.0, {A: at(1)}), (0.01, {A: at(2)})])
    assert take(fetch) == {A: at(1)}
    assert len(fetch.calls) == 1


def test_a_full_batch_stops_the_wait_and_asks_only_for_what_fits() -> None:
    fetch = ScriptedFetch([(0.0, {A: at(1, 2, 3)}), (0.001, {B: at(4, 5)}), (0.002, {A: at(6)})])
    assert take(fetch, max_records=5) == {A: at(1, 2, 3), B: at(4, 5)}
    assert [wanted for _, wanted in fetch.calls] == [5, 2]


def test_no_wait_takes_what_one_fetch_brings() -> None:
    fetch = ScriptedFetch([(0.0, {A: at(1)}), (0.0, {A: at(2)})])
    assert take(fetch, within=0) == {A: at(1)}
    assert len(fetch.calls) == 1
