"""Faust agents of the rtdstream worker (installed as ``rtdstream.agents``).

Importing this package registers every agent on :data:`rtdstream.app.app`.
"""

from rtdstream.agents import health, sink, validate, views, windows

__all__ = ["health", "sink", "validate", "views", "windows"]
