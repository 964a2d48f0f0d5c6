"""The operator's force header: ``x-rollguard-force: baseline|candidate`` with ``x-rollguard-token``.

It pins one request to a version (a smoke test of the candidate before any weight, say). It counts only
with a valid operator token; anything else is ignored and the request is routed as usual.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from proxy._types import Role


class ForcedRole:
    """``forced(headers)`` -> the role the operator asked for, or None."""

    def __init__(self, operator_tokens: Iterable[str]) -> None:
        self._tokens = [t.encode() for t in operator_tokens]

    def __call__(self, headers: list[tuple[bytes, bytes]]) -> Role | None:
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
        return ("candidate" if force == b"candidate" else "baseline") if valid else None
