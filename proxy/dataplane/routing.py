"""Route matching and the sticky weighted choice between baseline and candidate.

Pure: no I/O. The weight is carried in basis points (percent x 100, so 0.01% resolution) and a sticky
key maps to one of 10,000 buckets by a keyed hash of (rollout id, key). A request goes to the
candidate when ``bucket < weight_bp``, so raising the weight only ever moves users from the baseline to
the candidate, and a new rollout id draws a new set of users.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from proxy._types import Role
from proxy.config.model import RouteConfig, StickyKey
from proxy.content.contracts import MISSING, scalar_at
from proxy.rollout.state import BUCKETS


def bucket(rollout_id: str, key: str) -> int:
    """A stable bucket in [0, 10000) for ``key`` within one rollout."""
    digest = hashlib.blake2b(
        key.encode("utf-8", "surrogatepass"), digest_size=8, key=rollout_id.encode()[:64]
    ).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def choose(weight_bp: int, rollout_id: str, key: str | None, rand: Callable[[], float]) -> Role:
    """Baseline or candidate for one request; ``rand`` is used only when there is no sticky key."""
    if weight_bp <= 0:
        return "baseline"
    if weight_bp >= BUCKETS:
        return "candidate"
    b = int(rand() * BUCKETS) if key is None else bucket(rollout_id, key)
    return "candidate" if b < weight_bp else "baseline"


class RouteTable:
    """Exact paths by dict lookup, then prefixes longest first; a route also needs its method."""

    def __init__(self, routes: Sequence[RouteConfig]) -> None:
        self._exact: dict[str, list[RouteConfig]] = {}
        self._prefix: list[tuple[str, RouteConfig]] = []
        for route in routes:
            if route.path.endswith("*"):
                self._prefix.append((route.path[:-1], route))
            else:
                self._exact.setdefault(route.path, []).append(route)
        self._prefix.sort(key=lambda item: len(item[0]), reverse=True)
        self.routes = tuple(routes)

    def match(self, method: str, path: str) -> RouteConfig | None:
        for route in self._exact.get(path, ()):
            if method in route.methods:
                return route
        for prefix, route in self._prefix:
            if path.startswith(prefix) and method in route.methods:
                return route
        return None


def sticky_value(key: StickyKey, headers: Iterable[tuple[bytes, bytes]], body: Any = MISSING) -> str | None:
    """The request's sticky key value, or None when it is absent (then the choice is random).

    ``headers`` are ASGI raw headers (lower-case names); ``body`` is the parsed JSON body for
    ``json:`` keys. Only strings, numbers and booleans make keys: an object or list is no identity.
    """
    if key.source == "json":
        return scalar_at(body, key.name)
    wanted = key.name.encode("latin-1") if key.source == "header" else b"cookie"
    found: list[str] = [v.decode("latin-1") for k, v in headers if k == wanted]
    if not found:
        return None
    if key.source == "header":
        return found[0] or None
    for raw in found:
        value = cookie_value(raw, key.name)
        if value:
            return value
    return None


def cookie_value(header: str, name: str) -> str | None:
    """One cookie's value from a ``Cookie`` header, tolerant of malformed neighbours.

    ``http.cookies.SimpleCookie`` gives up on the whole header when any pair is malformed, which would
    silently un-stick every user who carries one odd cookie.
    """
    for pair in header.split(";"):
        k, sep, v = pair.partition("=")
        if sep and k.strip() == name:
            v = v.strip()
            return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v
    return None
