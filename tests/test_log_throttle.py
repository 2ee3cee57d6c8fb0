"""The Kafka client's repeated warnings are held back: pure logic, on a fake clock."""

from __future__ import annotations

import logging

from rtdstream.log_throttle import RepeatFilter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


UNABLE = "Unable connect to node with id %s: %s"


def test_a_repeat_within_the_interval_is_held_back_and_the_next_one_through_counts_them() -> None:
    clock = Clock()
    repeats = RepeatFilter(interval=10.0, clock=clock)
    assert repeats.filter(record("aiokafka", UNABLE, 1, "refused"))
    for step in range(1, 10):
        clock.now += 1.0
        assert not repeats.filter(record("aiokafka", UNABLE, 1, "refused"))
    clock.now += 1.0
    through = record("aiokafka", UNABLE, 2, "refused")
    assert repeats.filter(through)
    assert through.getMessage() == "Unable connect to node with id 2: refused (9 more like it held back since 10s ago)"
    assert through.args == ()  # Faust's formatter turns None into one argument and fails on it
    clock.now += 10.0
    quiet_since = record("aiokafka", UNABLE, 1, "refused")
    assert repeats.filter(quiet_since) and quiet_since.getMessage() == "Unable connect to node with id 1: refused"


def test_other_messages_loggers_and_levels_pass_untouched() -> None:
    repeats = RepeatFilter(interval=10.0, clock=Clock())
    assert repeats.filter(record("aiokafka", UNABLE, 1, "refused"))
    assert repeats.filter(record("aiokafka", "Unable to update metadata from %s", 1))
    assert repeats.filter(record("aiokafka.producer.sender", UNABLE, 1, "refused"))  # a logger of its own
    for _ in range(3):
        assert repeats.filter(record("rtdstream.bridge.service", UNABLE, 1, "refused"))
        assert repeats.filter(record("aiokafkaesque", UNABLE, 1, "refused"))
        assert repeats.filter(record("aiokafka", "Joined group %s", "g", level=logging.INFO))
