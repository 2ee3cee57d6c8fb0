"""The worker's Faust app: ``faust -A rtdstream.app worker`` and ``rtdstream worker`` run this.

Faust's ``-A`` takes a module attribute, so importing this module builds the
app: it validates the settings (a bad one exits with a message naming it),
creates the app (:func:`rtdstream.worker_app.create_app`) and registers the
stages (:func:`rtdstream.agents.register_stages`). Code that wants an app of
its own calls those two instead of importing this module.
"""

from __future__ import annotations

import sys

from rtdstream.agents import register_stages
from rtdstream.config import SettingsError, get_settings
from rtdstream.worker_app import RtdApp, create_app


def build_worker_app() -> RtdApp:
    """The app with every stage, from the environment's settings; a bad setting ends the process."""
    try:
        settings = get_settings()
    except SettingsError as exc:
        print(f"rtdstream: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    app = create_app(settings)
    register_stages(app, settings)
    return app


app = build_worker_app()
