"""Window test data and oracles shared by the pure-logic, worker and fault tests.

``SCRIPT`` is a scripted sequence of ``rtd.validated`` messages with every window
it must produce (``SCRIPT_WINDOWS``) and its late readings (``SCRIPT_LATE``);
:func:`offline` groups readings into windows the obvious way, independently of
``rtdstream.tables``; :func:`assert_windows_exact` checks what a worker wrote to
``rtd.windows`` against such an oracle.
"""

from __future__ import annotations

from collections import defaultdict
from time import time_ns

import orjson

from rtdstream import topics
from rtdstream.models import IdleTick, ReadingBatch
from rtdstream.tables.specs import WindowSpec
from tests.support.kafka import read_to_end, read_topic

T0 = 1_800_000_000_000  # a multiple of 60 s: window starts below read as offsets from it
#: An hour ago on a minute boundary: readings through rtd.readings must pass validation's clock checks.
HOUR_AGO = (time_ns() // 1_000_000 - 3_600_000) // 60_000 * 60_000

Key = tuple[str, str, int]  # (source, window label, start relative to T0)
Stats = tuple[int, float, float, float, int, int, float]  # count, min, max, sum, first, last, last_speed


def batch(source: str, *pairs: tuple[int, float], origin: tuple[int, int, int]) -> ReadingBatch:
    return ReadingBatch(source, [T0 + t for t, _ in pairs], [s for _, s in pairs], origin)


#: (partition, message) in the order they reach rtd.validated; offsets count per partition.
SCRIPT: list[tuple[int, ReadingBatch | IdleTick]] = [
    (0, batch("a", (100, 10), (900, 20), origin=(0, 0, 0))),
    (0, batch("b", (1500, 5), origin=(0, 1, 0))),
    (0, batch("a", (2500, 30), (1200, 40), origin=(0, 2, 0))),  # 1200 out of order, within grace
    (0, batch("a", (5100, 7), origin=(0, 3, 0))),  # watermark 3100: closes what ends by then
    (0, batch("a", (900, 50), origin=(0, 4, 0))),  # late for 1s [0,1000) and 4s/2s [-2000,2000)
    (0, batch("b", (3000, 8), origin=(0, 5, 0))),
    (0, batch("b", (1500, 5), origin=(0, 1, 0))),  # the validation stage sent it again
    # Partition 1 goes idle after one reading: the tick closes every open window,
    # a straggler for them is late, and a later reading opens new windows.
    (1, batch("c", (100, 1), origin=(1, 0, 0))),
    (1, IdleTick(1, T0 + 100)),
    (1, batch("c", (5000, 2), origin=(1, 1, 0))),
    (1, batch("c", (12000, 3), origin=(1, 2, 0))),
]

#: Every window of SCRIPT once all are closed: (source, window, start - T0) -> statistics.
SCRIPT_WINDOWS: dict[Key, Stats] = {
    ("a", "1s", 0): (2, 10, 20, 30, 100, 900, 20),
    ("a", "1s", 1000): (1, 40, 40, 40, 1200, 1200, 40),
    ("a", "1s", 2000): (1, 30, 30, 30, 2500, 2500, 30),
    ("a", "1s", 5000): (1, 7, 7, 7, 5100, 5100, 7),
    ("a", "10s", 0): (6, 7, 50, 157, 100, 5100, 7),
    ("a", "4s/2s", -2000): (3, 10, 40, 70, 100, 1200, 40),
    ("a", "4s/2s", 0): (5, 10, 50, 150, 100, 2500, 30),
    ("a", "4s/2s", 2000): (2, 7, 30, 37, 2500, 5100, 7),
    ("a", "4s/2s", 4000): (1, 7, 7, 7, 5100, 5100, 7),
    ("b", "1s", 1000): (1, 5, 5, 5, 1500, 1500, 5),
    ("b", "1s", 3000): (1, 8, 8, 8, 3000, 3000, 8),
    ("b", "10s", 0): (2, 5, 8, 13, 1500, 3000, 8),
    ("b", "4s/2s", -2000): (1, 5, 5, 5, 1500, 1500, 5),
    ("b", "4s/2s", 0): (2, 5, 8, 13, 1500, 3000, 8),
    ("b", "4s/2s", 2000): (1, 8, 8, 8, 3000, 3000, 8),
    ("c", "1s", 0): (1, 1, 1, 1, 100, 100, 1),
    ("c", "10s", 0): (1, 1, 1, 1, 100, 100, 1),
    ("c", "4s/2s", -2000): (1, 1, 1, 1, 100, 100, 1),
    ("c", "4s/2s", 0): (1, 1, 1, 1, 100, 100, 1),
    ("c", "1s", 12000): (1, 3, 3, 3, 12000, 12000, 3),
    ("c", "10s", 10000): (1, 3, 3, 3, 12000, 12000, 3),
    ("c", "4s/2s", 10000): (1, 3, 3, 3, 12000, 12000, 3),
    ("c", "4s/2s", 12000): (1, 3, 3, 3, 12000, 12000, 3),
}
#: The late readings of SCRIPT: (source, time - T0, lateness_ms, missed windows).
SCRIPT_LATE = [("a", 900, 2200, ("1s", "4s/2s")), ("c", 5000, 5000, ("1s", "10s", "4s/2s"))]



#: The windows of the property tests (and :func:`offline`'s default).
PROPERTY_SPECS = [WindowSpec.tumbling(1), WindowSpec.tumbling(10), WindowSpec.hopping(6, 2)]


def offline(
    messages: list[list[tuple[str, int, int]]], grace: int, specs: list[WindowSpec] = PROPERTY_SPECS
) -> tuple[dict, dict]:
    """Group readings into windows the obvious way; a reading is left out of a window that
    ended at or before (newest time of the earlier messages - grace) when it arrived.

    Returns {(source, label, start): [count, min, max, sum, first, last, last_speed]} and late counts.
    """
    members: dict[tuple[str, str, int], list[tuple[int, int]]] = defaultdict(list)
    late: dict[str, int] = defaultdict(int)
    newest = None
    for message in messages:
        watermark = None if newest is None else newest - grace
        for source, time, speed in message:
            missed = False
            for spec in specs:
                start = time - time % spec.step - spec.size + spec.step
                while start <= time:
                    if watermark is not None and start + spec.size <= watermark:
                        missed = True
                    else:
                        members[(source, spec.label, start)].append((time, speed))
                    start += spec.step
            late[source] += missed
        newest = max([newest or 0] + [t for _, t, _ in message])
    expected = {}
    for key, readings in members.items():
        times = [t for t, _ in readings]
        speeds = [s for _, s in readings]
        last = max(times)
        last_speed = [s for t, s in readings if t == last][-1]
        expected[key] = [len(readings), min(speeds), max(speeds), sum(speeds), min(times), last, last_speed]
    return expected, {source: n for source, n in late.items() if n}


async def assert_windows_exact(bootstrap: str, expected: dict, *, readings: int) -> None:
    """rtd.windows ends up with every expected window, each key with one value (duplicates identical)."""
    def keys(records: list) -> set:
        return {(r.key, orjson.loads(r.value)["window"], orjson.loads(r.value)["start"]) for r in records}

    records = await read_topic(bootstrap, topics.WINDOWS, until=lambda rs: len(keys(rs)) >= len(expected), timeout=120)
    values: dict[tuple[str, str, int], set[bytes]] = defaultdict(set)
    for record in records:
        window = orjson.loads(record.value)
        values[(window["source"], window["window"], window["start"])].add(record.value)
    duplicated = {key: vs for key, vs in values.items() if len(vs) > 1}
    assert duplicated == {}, f"{len(duplicated)} windows emitted with different values"
    final = {key: orjson.loads(next(iter(vs))) for key, vs in values.items()}
    assert {
        key: [w["count"], w["min"], w["max"], w["sum"], w["first_time"], w["last_time"], w["last_speed"]]
        for key, w in final.items()
    } == expected
    assert sum(w["count"] for key, w in final.items() if key[1] == "1s") == readings

    # Up to rtd.dlq's end offsets now, after the windows: a late reading is sent there with the
    # windows its message closed, so it would be among these (a positive end, not a timed read).
    dlq = await read_to_end(bootstrap, topics.DLQ)
    assert [orjson.loads(r.value)["reason"] for r in dlq] == []  # replays were never taken for late data
