"""The dashboard page at ``/`` and the browser libraries it loads.

The page's own HTML, JS and CSS live in ``dashboard/``. The Socket.IO client
and the chart library are vendored in ``dashboard/vendor/``, with their
licences: the minified builds of the versions ``dashboard/package-lock.json``
pins, copied there by ``scripts/update-dashboard-vendor``. They ship inside
the package, so an installed rtdstream serves a working page without npm and
without internet access. An installation that lost them (a broken package)
gets a page saying so instead of a chart that never draws.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
#: The libraries' files in ``dashboard/vendor/``, served at ``/vendor/<name>``.
VENDOR_FILES = ("socket.io.min.js", "uPlot.iife.min.js", "uPlot.min.css")
PAGE_FILES = ("dashboard.js", "dom.js", "overview.js", "pipeline.js", "detail.js", "dashboard.css")


def missing_vendor_files(directory: Path = DASHBOARD_DIR) -> list[str]:
    return [name for name in VENDOR_FILES if not (directory / "vendor" / name).is_file()]


def add_routes(app: web.Application, directory: Path = DASHBOARD_DIR) -> None:
    """Serve the page, its files and the vendored libraries; log once when the libraries are missing."""
    missing = missing_vendor_files(directory)
    if missing:
        log.error("dashboard libraries missing from %s (%s): this installation of rtdstream is incomplete",
                  directory / "vendor", ", ".join(missing))

    async def page(request: web.Request) -> web.StreamResponse:
        if missing_vendor_files(directory):
            return web.Response(status=503, text=_missing_libraries_page(directory), content_type="text/html")
        return web.FileResponse(directory / "index.html", headers={"Cache-Control": "no-cache"})

    async def page_file(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(directory / request.match_info["name"], headers={"Cache-Control": "no-cache"})

    async def vendor_file(request: web.Request) -> web.StreamResponse:
        path = directory / "vendor" / request.match_info["name"]
        if not path.is_file():
            raise web.HTTPNotFound(text="missing from this installation of rtdstream")
        return web.FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    app.router.add_get("/", page)
    app.router.add_get("/static/{name:" + "|".join(map(_escape, PAGE_FILES)) + "}", page_file)
    app.router.add_get("/vendor/{name:" + "|".join(map(_escape, VENDOR_FILES)) + "}", vendor_file)


def _escape(name: str) -> str:
    return name.replace(".", r"\.")


def _missing_libraries_page(directory: Path) -> str:
    return (
        "<!doctype html><meta charset=utf-8><title>rtdstream dashboard</title>"
        "<h1>Dashboard libraries are missing</h1>"
        "<p>This installation of rtdstream lacks the dashboard's Socket.IO client and chart library, which "
        f"ship in the package (<code>{html.escape(str(directory / 'vendor'))}</code>). Reinstall rtdstream; "
        "in a source checkout, <code>scripts/update-dashboard-vendor</code> puts them back. "
        "The API and Socket.IO work without them.</p>"
    )
