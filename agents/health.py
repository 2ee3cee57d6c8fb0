"""``/healthz`` on the worker's Faust web port: liveness for container healthchecks, and ownership.

A worker is healthy while its app is running: a rebalance in progress is
normal and reported, not judged. Starting, stopping and crashed workers answer
503, so an orchestrator neither counts a worker that has not joined nor keeps
one that is going away. The body names the partitions this worker owns (of
``rtd.readings`` through the validation stage's own group, of the others
through Faust's), which is what ``rtdstream status`` shows per worker.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from faust import App
from faust.web import Request, Response, View

from rtdstream.agents.validate import Validation


def worker_health(app: App, validation: Validation) -> tuple[bool, dict[str, Any]]:
    """(healthy, report) of this worker process."""
    state = app.state
    owned: dict[str, list[int]] = defaultdict(list)
    for tp in sorted(app.assignor.assigned_actives() | validation.assignment()):
        owned[tp.topic].append(tp.partition)
    report = {
        "status": "ok" if state == "running" else "unavailable",
        "state": state,
        "rebalancing": bool(app.rebalancing),
        "url": str(app.conf.canonical_url),
        "assignment": dict(owned),
    }
    return state == "running", report


def register_health_view(app: App, validation: Validation) -> None:
    """Serve ``/healthz`` of ``app``, whose validation stage is ``validation``."""

    @app.page("/healthz")
    class Health(View):
        """200 while this worker runs (even mid-rebalance), 503 while it starts, stops or has crashed."""

        async def get(self, request: Request) -> Response:
            healthy, report = worker_health(app, validation)
            return self.json(report, status=200 if healthy else 503)
