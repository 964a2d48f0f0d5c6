"""Text that reaches a terminal or a line-oriented file: control characters escaped, length capped (pure).

Operator reasons, actor names and config values end up in ``rollout_decision.txt``, in log lines on
stderr and in ``rollguard status`` output. A newline there forges a line (``... PROMOTE ... by
release-bot``), an ESC rewrites the reader's terminal, and bidirectional overrides make a line read
differently from what it says. :func:`printable` renders any such character visibly (``\\n``, ``\\x1b``,
``\\u202e``), so one value is always one line and shows what it holds. JSON outputs need none of this:
their encoder escapes control characters already.
"""

from __future__ import annotations

import re
from typing import Final

# C0 controls (tab included), DEL, C1 controls, the Unicode line and paragraph separators, and the
# bidirectional embedding, override and isolate controls.
_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
ELLIPSIS: Final = "…"


def _escape(m: re.Match[str]) -> str:
    c = m.group(0)
    named = _NAMED.get(c)
    if named is not None:
        return named
    code = ord(c)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str, limit: int | None = None) -> str:
    """``text`` with every control character escaped; at most ``limit`` characters of the input are kept
    (an ellipsis marks a cut), so a cap applies to what was sent, not to its escaped length."""
    if limit is not None and len(text) > limit:
        text = text[:limit] + ELLIPSIS
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(_escape, text)
