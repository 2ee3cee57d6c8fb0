"""The Faust application: ``faust -A rtdstream.app worker`` and ``rtdstream worker`` run this.

Importing this module validates the settings (a bad one exits with a message
naming it) and registers the agents of ``rtdstream.agents``. The app itself is
built by :func:`rtdstream.worker_app.create_app` from the settings it is given.
"""

from __future__ import annotations

import sys

from rtdstream.config import SettingsError, get_settings
from rtdstream.worker_app import StageTopics, create_app

try:
    settings = get_settings()
except SettingsError as exc:
    print(f"rtdstream: {exc}", file=sys.stderr)
    raise SystemExit(exc.exit_code) from None

app = create_app(settings)

_topics = StageTopics.declare(app)
validated_topic = _topics.validated
dlq_topic = _topics.dlq
windows_topic = _topics.windows
partials_topic = _topics.partials

from rtdstream import agents  # noqa: E402,F401  (registers the agents on ``app``)
