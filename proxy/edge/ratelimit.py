"""Rate limits: GCRA (the generic cell rate algorithm) per key, with bounded memory.

GCRA keeps one number per key, the theoretical arrival time (TAT) of the next request if the key sent
at exactly ``rate``. With emission interval ``T = 1/rate`` and ``burst`` requests allowed at once, a
request at ``now`` is admitted when ``max(TAT, now) + T - now <= burst * T``, and then
``TAT = max(TAT, now) + T``. From idle that admits exactly ``burst`` requests at once, then one every
``T``: a token bucket of depth ``burst`` refilled at ``rate``, without a refill timer. A refused request
learns when the next one would pass: ``max(TAT, now) + T - burst * T - now``.

Keys live in an insertion-ordered dict used as an LRU (admitted and refused requests both count as
seen): at ``max_keys`` the least recently seen key is forgotten, which can only ever grant that key a
fresh burst, never refuse anyone wrongly. Pure: the
clock is injected, nothing here does I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

# Float slack: with T = 0.1, ten requests must fit in a burst of 10 although 10 * 0.1 != 1.0 exactly.
_EPSILON = 1e-9


class Gcra:
    """One limit (``rate`` per second, ``burst``) over many keys."""

    __slots__ = ("interval", "burst", "tolerance", "max_keys", "_tat")

    def __init__(self, rate: float, burst: int, *, max_keys: int = 100_000) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("rate must be > 0, burst and max_keys >= 1")
        self.interval = 1.0 / rate
        self.burst = burst
        self.tolerance = burst * self.interval
        self.max_keys = max_keys
        self._tat: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._tat)

    def __repr__(self) -> str:
        return f"<Gcra rate={1 / self.interval:g}/s burst={self.burst} keys={len(self._tat)}>"

    def peek(self, key: str, now: float) -> tuple[float, float]:
        """``(wait, new_tat)``: wait 0 means admitted once :meth:`commit` is called with ``new_tat``."""
        tat = self._tat.get(key, now)
        new_tat = max(tat, now) + self.interval
        wait = new_tat - self.tolerance - now
        return (wait if wait > _EPSILON else 0.0), new_tat

    def commit(self, key: str, new_tat: float) -> None:
        tats = self._tat
        if key in tats:
            del tats[key]  # re-inserted below: the most recently seen key moves to the end
        elif len(tats) >= self.max_keys:
            del tats[next(iter(tats))]
        tats[key] = new_tat

    def seen(self, key: str) -> None:
        """A refused key is recent too: a client hammering past its limit must not age out and so
        earn a fresh burst while quieter keys are kept."""
        tats = self._tat
        tat = tats.pop(key, None)
        if tat is not None:
            tats[key] = tat

    def acquire(self, key: str, now: float) -> float:
        """Admit (returns 0) or refuse (returns the seconds until a request would pass)."""
        wait, new_tat = self.peek(key, now)
        if wait == 0.0:
            self.commit(key, new_tat)
        else:
            self.seen(key)
        return wait


def acquire_all(limits: Sequence[tuple[Gcra, str]], now: float) -> float:
    """Admit against every ``(limit, key)`` or none: a request one limit refuses uses no other's room.

    Returns 0 when admitted, else the longest wait among the refusing limits.
    """
    wait = 0.0
    tats: list[float] = []
    for limit, key in limits:
        w, new_tat = limit.peek(key, now)
        wait = max(wait, w)
        tats.append(new_tat)
    if wait == 0.0:
        for (limit, key), new_tat in zip(limits, tats, strict=True):
            limit.commit(key, new_tat)
    else:
        for limit, key in limits:
            limit.seen(key)
    return wait


def retry_after(wait: float) -> int:
    """``Retry-After`` in whole seconds: rounded up, at least 1 (RFC 9110 §10.2.3 has no fractions)."""
    return max(1, math.ceil(wait - _EPSILON))


Clock = Callable[[], float]
MONOTONIC: Clock = time.monotonic
