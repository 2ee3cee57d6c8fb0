"""Web views the worker serves on its Faust web port (``--web-port``, default 6066)."""

from __future__ import annotations

from faust import App
from faust.web import Request, Response, View

from rtdstream import metrics
from rtdstream.agents.windows import WindowStage


def register_worker_views(app: App, windows: WindowStage) -> None:
    """Serve this worker's counters and the open windows of ``windows`` on ``app``'s web port."""

    @app.page("/metrics")
    class Metrics(View):
        """Prometheus text of this worker's counters."""

        async def get(self, request: Request) -> Response:
            body, content_type = metrics.render()
            return self.bytes(body, content_type=content_type.split(";")[0])

    @app.page("/counters/")
    class Counters(View):
        """This worker's counters as JSON, for a quick look without Prometheus."""

        async def get(self, request: Request) -> Response:
            return self.json(metrics.snapshot())

    @app.page("/windows/open/")
    class OpenWindows(View):
        """Open windows, watermarks and late counts of the partitions this worker owns."""

        async def get(self, request: Request) -> Response:
            return self.json(windows.open_windows_report())

    @app.page("/windows/open/{source}/")
    class OpenWindowsOfSource(View):
        """One source's open windows and late count (404 when this worker holds none for it)."""

        async def get(self, request: Request, source: str) -> Response:
            report = windows.open_windows_report(source)
            if not report["sources"]:
                return self.error(404, f"no open windows or late readings of source {source!r} on this worker")
            return self.json(report)
