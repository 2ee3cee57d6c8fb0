"""The worker's app and stages built in-process from settings a test gives: no broker, no import side effect.

``rtdstream.app`` builds the worker's app from the environment when imported;
these tests never import it. They build apps with
:func:`rtdstream.worker_app.create_app` and
:func:`rtdstream.agents.register_stages` and look at what got registered, so a
stage that reached for a module global or shared state with another app's
stage would show here.
"""

from __future__ import annotations

from typing import Any

from rtdstream.agents import WorkerStages, register_stages
from rtdstream.agents.windows import Outbox
from rtdstream.config import load_settings
from rtdstream.models import ReadingBatch, encode_batch
from rtdstream.topics import DLQ, PARTIALS, VALIDATED, WINDOWS
from rtdstream.worker_app import RtdApp, create_app

#: 2030-01-01T00:00:00Z, on a minute boundary.
T0 = 1_893_456_000_000


def build(**settings: Any) -> tuple[RtdApp, WorkerStages]:
    app = create_app(load_settings(**settings))
    return app, register_stages(app, app.settings)


def test_the_agents_subscribe_to_the_topics_of_the_settings_they_are_built_from() -> None:
    app, stages = build(app_id="wiring-test", partitions=3)

    assert {name: agent.channel.get_topic_name() for name, agent in app.agents.items()} == {
        "rtdstream.agents.sink.store_readings": VALIDATED,
        "rtdstream.agents.sink.store_windows": WINDOWS,
        "rtdstream.agents.windows.aggregate_windows": VALIDATED,
    }
    topics = stages.topics
    assert [topics.validated.get_topic_name(), topics.dlq.get_topic_name(), topics.windows.get_topic_name(),
            topics.partials.get_topic_name()] == [VALIDATED, DLQ, WINDOWS, PARTIALS]
    assert {topic.partitions for topic in (topics.validated, topics.dlq, topics.windows, topics.partials)} == {3}
    assert app.conf.id == "wiring-test"
    assert app.conf.topic_partitions == 3
    assert stages.windows.window_state.table.partitions == 3
    assert app._extra_services == [stages.validation]  # started with the worker, like the agents
    assert len(app.preparations) == 1  # the sink's migrations
    assert sorted(view.view_path for view in app.web.views.values()) == [
        "/counters/", "/healthz", "/metrics", "/windows/open/", "/windows/open/{source}/",
    ]


def test_two_apps_built_from_different_settings_share_no_state() -> None:
    app_a, a = build(app_id="wiring-a", partitions=2, windows="1s", grace="1s", idle_timeout="4s")
    app_b, b = build(app_id="wiring-b", partitions=5, windows="10s", grace="3s", idle_timeout="8s")

    assert (app_a.conf.id, app_b.conf.id) == ("wiring-a", "wiring-b")
    assert (a.windows.window_state.table.partitions, b.windows.window_state.table.partitions) == (2, 5)
    for state in ("windowing", "window_state", "deliveries", "idle_watch", "partial_feed"):
        assert getattr(a.windows, state) is not getattr(b.windows, state), state
    assert (a.windows.windowing.grace, b.windows.windowing.grace) == (1000, 3000)
    assert (a.windows.idle_watch.timeout, b.windows.idle_watch.timeout) == (4.0, 8.0)
    assert (a.validation.settings.app_id, b.validation.settings.app_id) == ("wiring-a", "wiring-b")
    assert a.topics.windows is not b.topics.windows

    # A batch that closes a 1 s window on app A: its record goes to A's topic, and B's state stays empty.
    times = [T0 + 100, T0 + 2500]
    raw = encode_batch(ReadingBatch("s1", times, [1.0, 2.0], (0, 0, 0)))
    state = a.windows.window_state.get(0)
    outbox = Outbox(a.topics, a.windows.window_state)
    assert a.windows.apply_event(state, 0, 0, raw, outbox)
    assert [topic for topic, _, _ in outbox.records] == [a.topics.windows]
    assert state.input_offset == 0 and state.windows
    assert b.windows.window_state.get(0).input_offset == -1 and not b.windows.window_state.get(0).windows
