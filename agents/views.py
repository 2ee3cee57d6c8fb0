"""Web views the worker serves on its Faust web port (``--web-port``, default 6066)."""

from __future__ import annotations

from faust.web import Request, Response, View

from rtdstream import metrics
from rtdstream.agents.windows import open_windows_report
from rtdstream.app import app


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
        return self.json(open_windows_report())


@app.page("/windows/open/{source}/")
class OpenWindowsOfSource(View):
    """One source's open windows and late count (404 when this worker holds none for it)."""

    async def get(self, request: Request, source: str) -> Response:
        report = open_windows_report(source)
        if not report["sources"]:
            return self.error(404, f"no open windows or late readings of source {source!r} on this worker")
        return self.json(report)
