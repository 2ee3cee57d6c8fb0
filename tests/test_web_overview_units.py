"""Pure logic behind the fleet dashboard: the per-source summary, the dead-letter ring, the health
snapshot, and the parameters of /api/windows?step=."""

from __future__ import annotations

import base64

import pytest
from multidict import MultiDict

from rtdstream.web.api import MAX_BUCKETS, bucket_window, parse_bucket_query
from rtdstream.web.deadletters import DeadLetterRing, excerpt
from rtdstream.web.errors import BadParameter
from rtdstream.web.fleet import SPARK_POINTS, FleetSummary
from rtdstream.web.pulse import PipelineFigures, RateMeter, health_snapshot


class TestFleetSummary:
    def test_a_tick_carries_the_changed_sources_with_last_value_rate_and_sparkline_point(self) -> None:
        fleet = FleetSummary()
        fleet.add("b", [1000, 1100], [10, 20])
        fleet.add("a", [1000], [5])
        fleet.add("b", [1050], [30])  # out of order: not the last reading
        event = fleet.tick(now_ms=2000, elapsed=0.5)
        rows = {s: (t, v, r, p) for s, t, v, r, p in zip(*(event[k] for k in ("source", "time", "speed", "rate", "point")))}
        assert rows == {"b": (1100, 20, 6.0, 20.0), "a": (1000, 5, 2.0, 5.0)}
        assert fleet.readings_total == 4

    def test_a_source_that_went_quiet_is_sent_once_with_rate_zero_then_costs_nothing(self) -> None:
        fleet = FleetSummary()
        fleet.add("a", [1000], [5])
        fleet.tick(2000, 1.0)
        quiet = fleet.tick(3000, 1.0)
        assert quiet["source"] == ["a"] and quiet["rate"] == [0.0] and quiet["point"] == [None]
        assert fleet.tick(4000, 1.0)["source"] == []

    def test_the_snapshot_holds_the_last_minute_of_sparkline_and_seeded_stored_sources(self) -> None:
        fleet = FleetSummary()
        for second in range(SPARK_POINTS + 5):
            fleet.add("a", [second * 1000], [second])
            fleet.tick(second * 1000, 1.0)
        fleet.seed("z", 123, 7)
        fleet.seed("a", 1, 1)  # older than what the feed brought: ignored
        snapshot = fleet.snapshot(now_ms=99_000, idle_timeout=10.0)
        by_source = {entry["source"]: entry for entry in snapshot["sources"]}
        assert [entry["source"] for entry in snapshot["sources"]] == ["a", "z"]
        assert len(by_source["a"]["spark"]) == SPARK_POINTS and by_source["a"]["spark"][-1] == SPARK_POINTS + 4
        assert by_source["a"]["time"] == (SPARK_POINTS + 4) * 1000
        assert by_source["z"] == {"source": "z", "time": 123, "speed": 7, "rate": 0.0, "spark_time": [], "spark": []}
        assert snapshot["idle_timeout"] == 10.0

    def test_the_number_of_sources_is_bounded(self) -> None:
        fleet = FleetSummary(max_sources=3)
        for source in "abcde":
            fleet.add(source, [1], [1])
        assert len(fleet) == 3
        assert [e["source"] for e in fleet.snapshot(0, 1.0)["sources"]] == ["c", "d", "e"]


class TestDeadLetters:
    def test_the_ring_keeps_the_newest_and_counts_every_one_by_reason(self) -> None:
        ring = DeadLetterRing(size=3)
        for i in range(5):
            ring.add({"reason": "not_json" if i % 2 else "non_numeric", "raw": f"bad {i}", "raw_encoding": "utf-8"}, i)
        assert [entry["excerpt"] for entry in ring.latest()] == ["bad 4", "bad 3", "bad 2"]
        assert ring.counts == {"non_numeric": 3, "not_json": 2}

    def test_take_new_gives_each_entry_once(self) -> None:
        ring = DeadLetterRing(size=10)
        ring.add({"reason": "not_json", "raw": "a"}, 1)
        assert [e["excerpt"] for e in ring.take_new()] == ["a"]
        assert ring.take_new() == []
        ring.add({"reason": "not_json", "raw": "b"}, 2)
        assert [e["excerpt"] for e in ring.take_new()] == ["b"]

    def test_an_unknown_reason_counts_as_other_so_the_counts_stay_bounded(self) -> None:
        ring = DeadLetterRing()
        for i in range(100):
            ring.add({"reason": f"made-up-{i}", "raw": "x"}, i)
        assert ring.counts == {"other": 100}

    def test_entries_are_short_and_printable_whatever_the_record(self) -> None:
        ring = DeadLetterRing()
        entry = ring.add(
            {"reason": "not_json", "source": "s\u0000<b>", "detail": "d" * 5000, "stage": "validate",
             "raw": "<img src=x onerror=alert(1)>\n" + "y" * 10_000, "raw_encoding": "utf-8"},
            received_ms=42,
        )
        assert entry["excerpt"].startswith("<img src=x onerror=alert(1)>\\n") and entry["excerpt"].endswith("…")
        assert len(entry["excerpt"]) <= 121
        assert entry["source"] == "s\\x00<b>" and len(entry["detail"]) == 200
        assert entry["time"] == 42 and entry["size"] == 10_029
        assert ring.add({"reason": 7, "raw": None}, 1)["excerpt"] == ""


def test_an_excerpt_of_binary_bytes_escapes_them() -> None:
    raw = base64.b64encode(b"\xff\xfe\x00{abc").decode()
    assert excerpt(raw, "base64") == "\\xff\\xfe\\x00{abc"
    assert excerpt("a\tb\u202ec", "utf-8") == "a\\tb\\u202ec"


class TestHealth:
    def test_a_rate_needs_two_samples(self) -> None:
        meter = RateMeter()
        assert meter.update(100, now=1.0) is None
        assert meter.update(350, now=1.5) == 500.0
        assert meter.update(None, now=2.0) is None
        assert meter.update(350, now=2.5) == 0.0

    def test_the_snapshot_says_what_is_wrong_and_orders_rejects_by_count(self) -> None:
        figures = PipelineFigures(
            database={"ok": False, "error": "refused"},
            broker={"ok": True, "lag": {"group": "rtdstream", "total": 12, "topics": {"rtd.readings": 12}}},
            feed_ok=True, rate_in=5000.04, rate_stored=4990.0, rejected={"not_json": 2, "late": 9, "bad_source": 2},
            rejected_rate=0.5, clients=3, sources=200,
        )
        snapshot = health_snapshot(figures, now_ms=7)
        assert snapshot["status"] == "degraded"
        assert snapshot["database"] == {"ok": False, "error": "refused"}
        assert snapshot["broker"] == {"ok": True}
        assert snapshot["lag"] == 12 and snapshot["lag_topics"] == {"rtd.readings": 12}
        assert list(snapshot["rejected"]) == ["late", "bad_source", "not_json"] and snapshot["rejected_total"] == 13
        assert snapshot["rate_in"] == 5000.0 and snapshot["clients"] == 3 and snapshot["sources"] == 200

    def test_an_unknown_lag_is_null(self) -> None:
        figures = PipelineFigures({"ok": True}, {"ok": True, "lag": None, "lag_error": "no coordinator"}, True,
                                  None, None, {}, None, 0, 0)
        snapshot = health_snapshot(figures, now_ms=0)
        assert snapshot["status"] == "ok" and snapshot["lag"] is None
        assert snapshot["broker"] == {"ok": True, "lag_error": "no coordinator"}


class TestBucketQuery:
    def test_a_valid_query(self) -> None:
        q = parse_bucket_query(MultiDict(source="s-1", **{"from": "0", "to": "3600000"}, step="60000"))
        assert (q.source, q.start, q.end, q.step, q.window) == ("s-1", 0, 3_600_000, 60_000, None)

    @pytest.mark.parametrize(
        ("query", "parameter"),
        [
            ({"source": "s", "to": "10", "step": "1000"}, "from"),
            ({"source": "s", "from": "0", "step": "1000"}, "to"),
            ({"source": "s", "from": "0", "to": "10000", "step": "fast"}, "step"),
            ({"source": "s", "from": "0", "to": "10000", "step": "999"}, "step"),
            ({"source": "s", "from": "0", "to": str(1000 * (MAX_BUCKETS + 1)), "step": "1000"}, "step"),
            ({"source": "s", "from": "0", "to": "10000", "step": "1000", "limit": "5"}, "limit"),
            ({"source": "s", "from": "0", "to": "10000", "step": "1000", "cursor": "abc"}, "cursor"),
            ({"from": "0", "to": "10000", "step": "1000"}, "source"),
        ],
    )
    def test_bad_parameters_are_named(self, query: dict[str, str], parameter: str) -> None:
        with pytest.raises(BadParameter) as raised:
            parse_bucket_query(MultiDict(query))
        assert raised.value.parameter == parameter

    @pytest.mark.parametrize(
        ("step", "sizes", "window"),
        [(60_000, [1, 10, 60], "60s"), (30_000, [1, 10, 60], "10s"), (500, [1, 10], "1s"), (5000, [0.5, 5], "5s")],
    )
    def test_the_bucket_window_is_the_largest_tumbling_window_within_the_step(
        self, step: int, sizes: list[float], window: str
    ) -> None:
        assert bucket_window(step, sizes) == window
