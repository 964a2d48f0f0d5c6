"""Failed authentications per peer address, so a secret cannot be guessed at line rate.

A peer with ``max_failures`` failures within ``window`` seconds is *blocked* until the window has passed:
its further failed attempts are answered 429. Only failures are counted and only failures are refused,
by the callers (the admin API's bearer tokens, the data plane's ``x-rollguard-token``): a valid secret is
always accepted, from any address, so a flood of bad ones from a shared address (a NAT, a CI runner) can
never lock an operator out of a rollback.
"""

from __future__ import annotations

from collections import deque


class FailureThrottle:
    """Failed authentications per peer address in a sliding window; memory bounded by ``max_peers``."""

    def __init__(self, *, max_failures: int = 10, window: float = 60.0, max_peers: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window = window
        self.max_peers = max_peers
        self._failures: dict[str, deque[float]] = {}

    def failed(self, peer: str, now: float) -> None:
        if peer not in self._failures and len(self._failures) >= self.max_peers:
            self._failures.clear()  # a flood from many addresses forgets, it never grows without bound
        times = self._failures.setdefault(peer, deque(maxlen=self.max_failures))
        times.append(now)

    def blocked_for(self, peer: str, now: float) -> int:
        """Whole seconds this peer must wait, 0 when it may try."""
        times = self._failures.get(peer)
        if not times or len(times) < self.max_failures:
            return 0
        left = self.window - (now - times[0])
        if left <= 0:
            del self._failures[peer]
            return 0
        return max(1, int(left + 0.999))
