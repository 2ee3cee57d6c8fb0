"""Errors a user can fix; commands print them as one line instead of a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A bad setting, a port in use, an unreachable service: something to fix, not a bug."""

    exit_code = 1
