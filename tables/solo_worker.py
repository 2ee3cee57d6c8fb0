"""``python -m rtdstream.tables.solo_worker worker ...``: a worker that runs only the window agent.

The benchmark measures the window stage by itself; in a full worker the sink
consumes the same topic and the two would share the CPU. Agents removed from
``app.agents`` before the worker starts are neither started nor subscribed.
"""

from __future__ import annotations

from rtdstream.agents.windows import aggregate_windows
from rtdstream.app import app
from rtdstream.cli import main


def keep_only_the_window_agent() -> None:
    for name, agent in list(app.agents.items()):
        if agent is not aggregate_windows:
            del app.agents[name]


if __name__ == "__main__":
    keep_only_the_window_agent()
    main()
