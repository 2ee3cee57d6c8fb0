"""The worker's Faust app: ``faust -A rtdstream.app worker`` and ``rtdstream worker`` run this.

Faust's ``-A`` takes a module attribute, so importing this module builds the
app: it validates the settings (a bad one exits with a message naming it),
creates the app (:func:`rtdstream.worker_app.create_app`) and registers the
stages (:func:`rtdstream.agents.register_stages`). Code that wants an app of
its own calls those two instead of importing this module.
"""

from __future__ import annotations

from rtdstream.agents import register_stages
from rtdstream.config import Settings, settings_or_exit
from rtdstream.worker_app import RtdApp, create_app


def build_worker_app() -> RtdApp:
    """The app with every stage, from the environment's settings; a bad setting ends the process."""
    settings = settings_or_exit(Settings)
    app = create_app(settings)
    register_stages(app, settings)
    return app


app = build_worker_app()
