"""The operator's force header: ``x-rollguard-force: baseline|candidate`` with ``x-rollguard-token``.

It pins one request to a version (a smoke test of the candidate before any weight, say). It counts only
with a valid operator token; without one the request is routed as usual. Because the answer shows which
version served it, a wrong token would otherwise be an oracle for guessing the operator's token at line
rate: each wrong one is counted (``rollguard_auth_failures_total{reason="force_token"}``), and a peer
address with too many gets 429 for its further wrong ones (the admin API's throttle, shared across
reloads). A valid token is always honoured.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterable

from proxy._types import Role
from proxy.edge.throttle import FailureThrottle
from proxy.errors import RateLimited
from proxy.observe.exchange import Exchange

log = logging.getLogger("rollguard.force")

OnWrongToken = Callable[[str, str], None]  # (route, reason): the auth-failure counter


class ForcedRole:
    """``forced(headers, ex)`` -> the role the operator asked for, or None."""

    def __init__(
        self,
        operator_tokens: Iterable[str],
        *,
        throttle: FailureThrottle | None = None,
        on_wrong_token: OnWrongToken | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = [t.encode() for t in operator_tokens]
        self.throttle = throttle or FailureThrottle()
        self._on_wrong_token = on_wrong_token
        self._clock = clock

    def __call__(self, headers: list[tuple[bytes, bytes]], ex: Exchange) -> Role | None:
        """Only a wrong token reads the exchange (its peer and route): the common request pays one scan."""
        force = token = None
        for k, v in headers:
            if k == b"x-rollguard-force":
                force = v
            elif k == b"x-rollguard-token":
                token = v
        if force not in (b"baseline", b"candidate") or token is None:
            return None
        valid = False
        for known in self._tokens:
            valid |= hmac.compare_digest(known, token)  # no early exit: constant time over the set
        if valid:
            return "candidate" if force == b"candidate" else "baseline"
        now = self._clock()
        peer, route = ex.peer or "", ex.route_name
        wait = self.throttle.blocked_for(peer, now)
        if wait:
            raise RateLimited(
                "too many wrong x-rollguard-token values from this address; try again later", retry_after=wait
            )
        self.throttle.failed(peer, now)
        if self._on_wrong_token is not None:
            self._on_wrong_token(route, "force_token")
        if self.throttle.blocked_for(peer, now):
            log.warning(
                "%d wrong x-rollguard-token values from %s within %.0fs: its next wrong ones get 429",
                self.throttle.max_failures,
                peer,
                self.throttle.window,
            )
        return None
