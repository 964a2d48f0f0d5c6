"""The backtest's fast replay decides what the reference replay decides, byte for byte.

``tests/helpers/reference_backtest.py`` replays one request at a time through the proxy's own paths (the
recorder's ``observe``, ``parse_line``, ``choose``, a controller that judges a copy in a worker thread);
``backtest`` reads, routes and records in batches. On generated traces — sticky and keyless routing,
a healthy candidate, errors the trip-wire catches, a slower candidate, the shadow phase, paired
requests — every decision and the summary must be the same bytes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.app.backtest import backtest
from proxy.config.load import load_config
from tests.helpers.config import config_doc, write_config
from tests.helpers.reference_backtest import reference_backtest
from tests.helpers.traces import traced_requests

CANARY = {
    "weight": 0,
    "interval": "10s",
    "steps": [10, 50, 100],
    "shadow_samples": 0,
    "min_samples": 20,
    "gates": {"error_rate": 0.05, "latency_p95_ms": 1000, "decision_delta_pp": 25},
}
SHADOW = {"shadow_samples": 300, "interval": "15s"}


def replays(config_path: Path, lines: list[bytes], seed: int) -> tuple[bytes, bytes]:
    config = load_config(config_path)

    def run(fn: Any) -> bytes:
        out: list[dict[str, Any]] = []
        summary = asyncio.run(fn(config, lines, seed=seed, on_decision=out.append))
        return b"\n".join(orjson.dumps(d) for d in [*out, summary.to_json()])

    return run(backtest), run(reference_backtest)


@pytest.mark.parametrize(
    ("canary", "trace", "keyless", "seed"),
    [
        ({}, {"seed": 1}, False, 0),
        ({}, {"seed": 1}, True, 5),
        ({}, {"seed": 2, "candidate_error": 0.08}, False, 0),
        ({}, {"seed": 2, "candidate_error": 1.0}, True, 1),
        ({"gates": {"latency_p95_ms": 120}}, {"seed": 3, "candidate_slowdown": 3.0}, False, 0),
        ({"paired_sample": 0.5, "gates": {"decision_delta_pp": 1}}, {"seed": 3}, True, 2),
        (SHADOW, {"seed": 4, "baseline_error": 0.01}, False, 0),
        (SHADOW, {"seed": 4, "candidate_error": 0.05}, True, 3),
    ],
)
def test_the_fast_replay_decides_what_the_reference_decides(
    tmp_path: Path, canary: dict[str, Any], trace: dict[str, Any], keyless: bool, seed: int
) -> None:
    doc = config_doc(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:10", canary={**CANARY, **canary})
    requests = traced_requests(seconds=240, rps=80, **trace)
    if keyless:
        requests = [r._replace(key=None) if i % 3 else r for i, r in enumerate(requests)]
    lines = [r.to_line() for r in requests]
    lines.insert(len(lines) // 2, b"\n")  # a blank line is skipped, and counted in the line numbers
    fast, reference = replays(write_config(tmp_path, doc), lines, seed)
    assert fast == reference
