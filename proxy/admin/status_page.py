"""The status page at ``/ui`` on the admin listener.

Plain HTML, CSS and JavaScript shipped inside the package (``proxy/admin/ui/``): no build step and
nothing loaded from anywhere but the admin origin. The shell and its assets carry no data, so they are
served without a token; the page itself calls ``/status``, ``/history`` and
``/reports/shadow_eval.json`` with the viewer token the operator types in (kept in ``sessionStorage``,
sent only as ``Authorization: Bearer``, never in a URL).

Every response here carries a strict Content-Security-Policy (``default-src 'self'``, no inline script
or style), ``nosniff``, no framing and no referrer. Assets are revalidated on every load (``no-cache``
with a strong ``ETag``): they are a few kilobytes on a loopback listener, and an upgraded proxy must never
run yesterday's script against today's API.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import ApiError

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Asset name -> media type. Only these names are served: the route never touches the file system
# with a path taken from the request.
MEDIA_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "format.js": "text/javascript; charset=utf-8",
    "charts.js": "text/javascript; charset=utf-8",
    # uPlot (MIT, its licence in ui/uPlot.LICENSE), as released: the charts draw on canvas and set
    # styles through the CSSOM only, which the policy below allows without 'unsafe-inline'.
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every UI file, read once from the installed package (a missing file fails start-up, not a page)."""
    folder = resources.files("proxy.admin") / "ui"
    out: dict[str, Asset] = {}
    for name, media in MEDIA_TYPES.items():
        body = (folder / name).read_bytes()
        out[name] = Asset(body=body, media_type=media, etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    return out


class StatusPage:
    """Handlers for the page shell, its assets and the page's bootstrap document."""

    def __init__(self, *, tokens_configured: bool, poll_interval_ms: int = 2000) -> None:
        self.assets = load_assets()
        self.tokens_configured = tokens_configured
        self.poll_interval_ms = poll_interval_ms

    async def index(self, request: Request) -> Response:
        return self._serve(request, self.assets["index.html"])

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        found = self.assets.get(name)
        if found is None or name == "index.html":
            raise ApiError(404, f"no status page asset {name!r}")
        return self._serve(request, found)

    async def bootstrap(self, request: Request) -> Response:
        """What the page needs before its first data call: whether to ask for a token at all.

        Without configured tokens every data endpoint answers 401, so the page explains that instead
        of prompting for a token nobody can have. Nothing here is secret or rollout data.
        """
        body = b'{"auth":"%s","poll_interval_ms":%d}' % (
            b"bearer" if self.tokens_configured else b"unconfigured",
            self.poll_interval_ms,
        )
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        return Response(body, media_type="application/json", headers=headers)

    def _serve(self, request: Request, asset: Asset) -> Response:
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": asset.etag}
        tags = request.headers.get("if-none-match", "")
        if asset.etag in (t.strip() for t in tags.split(",")):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)
