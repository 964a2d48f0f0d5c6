"""``read_line`` (the replay's reader) is ``parse_line``: the same request or the same error, per line."""

from __future__ import annotations

import pytest

from proxy.errors import TraceError
from proxy.rollout.trace import Outcome, TracedRequest, parse_line, read_line
from tests.helpers.traces import traced_requests

B1 = b'{"t": 1.0, "baseline": {"status": 200, "latency_ms": 1.0}, '  # then the candidate
OK = b'"baseline": {"status": 200, "latency_ms": 1.5}, "candidate": {"status": 200, "latency_ms": 2.0}'
LINES = [
    b'{"t": 1.0, ' + OK + b"}",
    b'{"t": 1, ' + OK + b"}",  # an integer t
    b'{"t": 1.0, "key": 42, ' + OK + b"}",  # an integer key becomes its string
    b'{"t": 1.0, "key": "u", "route": "infer", ' + OK + b"}",
    b'{"t": 1.0, "extra": [1], ' + OK + b"}",
    b'{"t": -0.0, "baseline": {"status": 0, "latency_ms": -0.0}, '
    b'"candidate": {"status": 599, "latency_ms": 0}}',
    b'{"t": 1.0, "baseline": {"status": 200, "latency_ms": 1.0, "score": 1}, '
    b'"candidate": {"status": 200, "latency_ms": 1.0, "score": -0.0}}',
    b'{"t": 1.0, "baseline": {"status": 200, "latency_ms": 1.0, "cost": 0.5}, '
    b'"candidate": {"status": 200, "latency_ms": 1.0, "score": 0.2, "contract_ok": false, "violations": 2}}',
    b'{"t": 1.0, "baseline": {"status": 200, "latency_ms": 1.0, "other": 1}, '
    b'"candidate": {"latency_ms": 1.0, "status": 200, "score": null}}',
    # errors, each with parse_line's message
    b"",
    b"{not json",
    b"[1, 2]",
    b'{"t": "1", ' + OK + b"}",
    b'{"t": true, ' + OK + b"}",
    b'{"t": 1.0, "key": [1], ' + OK + b"}",
    b'{"t": 1.0, "route": 3, ' + OK + b"}",
    b'{"t": 1.0, "baseline": {"status": 200, "latency_ms": 1.0}}',
    b'{"t": 1.0, "baseline": {"status": 99, "latency_ms": 1.0}, "candidate": {}}',
    b'{"t": 1.0, "baseline": {"status": 200.0, "latency_ms": 1.0}, "candidate": {}}',
    b'{"t": 1.0, "baseline": {"status": 200, "latency_ms": -1.0}, "candidate": {}}',
    b'{"t": 1.0, "baseline": {"status": 200, "latency_ms": true}, "candidate": {}}',
    b'{"t": 1.0, "baseline": {"status": 200, "latency_ms": 1.0, "score": "x"}, "candidate": {}}',
    B1 + b'"candidate": {"status": 200, "latency_ms": 1e999}}',
    B1 + b'"candidate": {"status": 200, "latency_ms": 1.0, "contract_ok": 1}}',
    B1 + b'"candidate": {"status": 600, "latency_ms": 1.0}}',
]


def outcome_of(fn: object, raw: bytes) -> tuple[str, object]:
    try:
        return "ok", fn(raw, 7)  # type: ignore[operator]
    except TraceError as exc:
        return "error", str(exc)


@pytest.mark.parametrize("raw", LINES)
def test_read_line_reads_what_parse_line_reads(raw: bytes) -> None:
    fast, full = outcome_of(read_line, raw), outcome_of(parse_line, raw)
    assert fast == full
    if fast[0] == "ok":
        assert type(fast[1]) is TracedRequest
        assert all(type(o) is Outcome for o in (fast[1].baseline, fast[1].candidate))  # type: ignore[union-attr]
        assert [type(v) for v in fast[1]] == [type(v) for v in full[1]]  # type: ignore[union-attr]


def test_read_line_on_generated_traces() -> None:
    for req in traced_requests(seconds=30, rps=50, seed=9, candidate_error=0.2):
        for line in (req.to_line(), req._replace(key=None).to_line()):
            assert read_line(line, 1) == parse_line(line, 1)
