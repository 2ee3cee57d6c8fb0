"""The stages of the rtdstream worker (installed as ``rtdstream.agents``), and what puts them on an app.

Importing a module here registers nothing: :func:`register_stages` builds every
stage for the app it is given, from the settings it is given, so a test can run
a stage on an app of its own, and :mod:`rtdstream.tables.solo_worker` can run
one stage alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from rtdstream.agents.health import register_health_view
from rtdstream.agents.sink import SinkStage
from rtdstream.agents.validate import Validation
from rtdstream.agents.views import register_worker_views
from rtdstream.agents.windows import WindowStage
from rtdstream.config import Settings
from rtdstream.worker_app import RtdApp, StageTopics

__all__ = ["WorkerStages", "register_stages"]


@dataclass(frozen=True)
class WorkerStages:
    """The stages registered on one app, for code that looks at them afterwards (a test, say)."""

    topics: StageTopics
    validation: Validation
    sink: SinkStage
    windows: WindowStage


def register_stages(app: RtdApp, settings: Settings) -> WorkerStages:
    """Validation, sink and windows, with the worker's web views, on ``app``.

    In the order the modules once registered themselves on import: Faust keeps
    agents, timers and services in the order they are added.
    """
    topics = StageTopics.declare(app)
    validation = Validation(app, settings)
    validation.register()
    register_health_view(app, validation)
    sink = SinkStage(app, settings, topics)
    sink.register()
    windows = WindowStage(app, settings, topics)
    windows.register()
    register_worker_views(app, windows)
    return WorkerStages(topics, validation, sink, windows)
