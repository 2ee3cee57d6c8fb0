"""``python -m rtdstream.tables.solo_worker worker ...``: a worker that runs only the window agent.

The benchmark measures the window stage by itself; in a full worker the sink
consumes the same topic and the two would share the CPU. So this worker's app
has the window stage and the web views the benchmark reads its progress from,
and no other stage.
"""

from __future__ import annotations

from rtdstream.agents.views import register_worker_views
from rtdstream.agents.windows import WindowStage
from rtdstream.config import Settings, settings_or_exit
from rtdstream.worker_app import RtdApp, StageTopics, create_app


def window_only_app(settings: Settings) -> RtdApp:
    app = create_app(settings)
    windows = WindowStage(app, settings, StageTopics.declare(app))
    windows.register()
    register_worker_views(app, windows)
    return app


if __name__ == "__main__":
    window_only_app(settings_or_exit(Settings)).main()
