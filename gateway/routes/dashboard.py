"""The dashboard: one self-contained page at ``/dashboard`` (``gateway/dashboard/``:
HTML, script and style, nothing fetched from elsewhere), and the request history
its charts draw, ``GET /metrics/history``.

The page is static and holds no data: it reads everything through the REST API
from the browser, with the API key the user gives it. So, as Qdrant serves its
web UI (src/actix/web_ui.rs), its files need no key, and are sent with
``X-Frame-Options: DENY``; a Content-Security-Policy lets the page run only its
own script, as a second guard after the page's rule of never reading API data as
HTML. The history lies outside ``/dashboard`` on purpose: Qdrant's key check
leaves every path under ``/dashboard`` open, and request figures are the
operator's, like ``/metrics``.
"""

from __future__ import annotations

from importlib.resources import files

from aiohttp import web

from gateway.scrape import HISTORY
from gateway.state import CONTROL_DIR
from gateway.workers import Forward

routes = web.RouteTableDef()

_TYPES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}
# Read once: a fixed set of names, so no request text ever becomes a path.
_FILES = {name: (files("gateway") / "dashboard" / name).read_bytes() for name in _TYPES}
HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
}
PATHS = frozenset({"/dashboard", "/dashboard/", *(f"/dashboard/{name}" for name in _FILES)})  # served without a key


def _file(name: str) -> web.Response:
    return web.Response(body=_FILES[name], content_type=_TYPES[name], charset="utf-8", headers=HEADERS)


@routes.get("/dashboard")
@routes.get("/dashboard/")
async def page(request: web.Request):
    return _file("index.html")


@routes.get("/dashboard/{name}")
async def asset(request: web.Request):
    name = request.match_info["name"]
    if name not in _FILES:
        raise web.HTTPNotFound()
    return _file(name)


@routes.get("/metrics/history")
async def history(request: web.Request):
    """Request rate and latency per ``HISTORY_PERIOD`` over the last minutes,
    every HTTP process's requests summed (``gateway.metrics.RequestHistory``)."""
    if CONTROL_DIR in request.app:
        raise Forward()  # the control process keeps the history
    kept = request.app[HISTORY]
    return {"period_s": kept.period, "points": kept.points()}
