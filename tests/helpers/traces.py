"""Backtest traces for tests: seeded, Poisson arrivals, lognormal latencies, each version's outcome."""

from __future__ import annotations

import math
import random
from pathlib import Path

from proxy.rollout.trace import Outcome, TracedRequest


def traced_requests(
    *,
    seconds: float,
    rps: float,
    seed: int,
    candidate_error: float = 0.0,
    baseline_error: float = 0.0,
    candidate_slowdown: float = 1.0,
    users: int = 5000,
) -> list[TracedRequest]:
    """Both versions see the same requests at the same moments; scores are the same model's."""
    rng = random.Random(seed)
    out: list[TracedRequest] = []
    t = 0.0
    while True:
        t += rng.expovariate(rps)
        if t >= seconds:
            return out
        latency = math.exp(math.log(30.0) + rng.gauss(0.0, 0.5))
        score = rng.betavariate(2, 5)
        base = Outcome(503 if rng.random() < baseline_error else 200, round(latency, 3), score)
        cand = Outcome(
            503 if rng.random() < candidate_error else 200, round(latency * candidate_slowdown, 3), score
        )
        out.append(TracedRequest(round(t, 4), f"u-{rng.randrange(users)}", None, base, cand))


def write_trace(path: Path, requests: list[TracedRequest]) -> Path:
    path.write_bytes(b"".join(r.to_line() for r in requests))
    return path
