"""The dashboard page at ``/`` and the browser libraries it loads.

The page's own HTML, JS and CSS live in ``dashboard/``; the Socket.IO client
and the chart library come from npm (``dashboard/package.json``, installed
with ``npm ci --prefix rtdstream/web/dashboard``) and are served from its
``node_modules``, so the page works without internet access and no
third-party bundle is committed. Without them, ``/`` says how to install them.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

from aiohttp import web

log = logging.getLogger(__name__)

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboard"
#: URL name -> file under node_modules (the minified builds the packages publish).
VENDOR_FILES = {
    "socket.io.min.js": "socket.io-client/dist/socket.io.min.js",
    "uPlot.iife.min.js": "uplot/dist/uPlot.iife.min.js",
    "uPlot.min.css": "uplot/dist/uPlot.min.css",
}
PAGE_FILES = ("dashboard.js", "dom.js", "overview.js", "pipeline.js", "detail.js", "dashboard.css")
INSTALL_COMMAND = f"npm ci --prefix {DASHBOARD_DIR}"


def missing_vendor_files(directory: Path = DASHBOARD_DIR) -> list[str]:
    return [path for path in VENDOR_FILES.values() if not (directory / "node_modules" / path).is_file()]


def add_routes(app: web.Application, directory: Path = DASHBOARD_DIR) -> None:
    """Serve the page, its files and the vendor libraries; warn once when the libraries are missing."""
    missing = missing_vendor_files(directory)
    if missing:
        log.warning("dashboard libraries missing (%s): run `%s`", ", ".join(missing), INSTALL_COMMAND)

    async def page(request: web.Request) -> web.StreamResponse:
        if missing_vendor_files(directory):
            return web.Response(status=503, text=_install_page(), content_type="text/html")
        return web.FileResponse(directory / "index.html", headers={"Cache-Control": "no-cache"})

    async def page_file(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(directory / request.match_info["name"], headers={"Cache-Control": "no-cache"})

    async def vendor_file(request: web.Request) -> web.StreamResponse:
        path = directory / "node_modules" / VENDOR_FILES[request.match_info["name"]]
        if not path.is_file():
            raise web.HTTPNotFound(text=f"not installed: run {INSTALL_COMMAND}")
        return web.FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})

    app.router.add_get("/", page)
    app.router.add_get("/static/{name:" + "|".join(map(_escape, PAGE_FILES)) + "}", page_file)
    app.router.add_get("/vendor/{name:" + "|".join(map(_escape, VENDOR_FILES)) + "}", vendor_file)


def _escape(name: str) -> str:
    return name.replace(".", r"\.")


def _install_page() -> str:
    return (
        "<!doctype html><meta charset=utf-8><title>rtdstream dashboard</title>"
        "<h1>Dashboard libraries are not installed</h1>"
        "<p>The dashboard loads the Socket.IO client and the chart library from npm. Install them with</p>"
        f"<pre>{html.escape(INSTALL_COMMAND)}</pre><p>and reload this page. The API and Socket.IO work without them.</p>"
    )
