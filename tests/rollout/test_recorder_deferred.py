"""``Recorder.observe_deferred`` + ``flush`` (the replay's ingestion) against ``observe`` (the proxy's):
the same evidence to the last bit, the same trip-wire state after every request, the same trips."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest

from proxy.config.load import load_config
from proxy.rollout.evidence import VersionWindow, cluster_of
from proxy.rollout.recorder import Recorder
from tests.helpers.config import config_doc, write_config


def window_state(w: VersionWindow) -> bytes:
    return orjson.dumps(
        {
            "summary": w.to_json(),
            "latency": w.latency.to_json(),
            "latency_sample": w.latency_sample.values(),
            "scores": w.scores.values(),
            "cost": [w.cost_moments.count, w.cost_moments.mean, w.cost_moments.variance],
            "clusters": [
                w.clusters.requests,
                w.clusters.failures,
                w.clusters.decided,
                w.clusters.positives,
            ],
        }
    )


@pytest.mark.parametrize(("seed", "candidate_error"), [(1, 0.01), (2, 0.3), (3, 1.0)])
def test_deferred_observations_make_the_evidence_observe_makes(
    tmp_path: Path, seed: int, candidate_error: float
) -> None:
    config = load_config(
        write_config(tmp_path, config_doc(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:10"))
    )
    trips: dict[str, list[tuple[int, str]]] = {"live": [], "deferred": []}
    step = [0]
    live = Recorder(config, on_trip=lambda r: trips["live"].append((step[0], r)), clock=lambda: 0.0)
    deferred = Recorder(config, on_trip=lambda r: trips["deferred"].append((step[0], r)), clock=lambda: 0.0)
    rng = random.Random(seed)
    for rec in (live, deferred):
        rec.reset(armed=True, weight=0.1)
    for i in range(12_000):
        step[0] = i
        role = "candidate" if rng.random() < 0.1 else "baseline"
        failed = rng.random() < (candidate_error if role == "candidate" else 0.01)
        latency = rng.lognormvariate(-3.5, 1.0)
        score = None if failed or rng.random() < 0.1 else rng.random()
        cost = None if rng.random() < 0.7 else rng.random() / 1000
        violations = rng.choice([0, 0, 0, 1])
        key = None if rng.random() < 0.2 else f"u-{rng.randrange(500)}"
        live.observe(
            role,
            latency,
            "http_5xx" if failed else None,
            score,
            0.5,
            cost=cost,
            violations=violations,
            key=key,
        )
        deferred.observe_deferred(
            role, latency, failed, score, 0.5, cost, violations, None if key is None else cluster_of(key)
        )
        assert deferred.tripwire.state == live.tripwire.state
        assert deferred.armed == live.armed
        if i % 2500 == 0:
            deferred.flush()
            assert window_state(deferred.evidence.candidate) == window_state(live.evidence.candidate)
    deferred.flush()
    assert trips["deferred"] == trips["live"]
    for role in ("baseline", "candidate"):
        assert window_state(getattr(deferred.evidence, role)) == window_state(getattr(live.evidence, role))


def test_a_reset_drops_the_deferred_requests_with_the_step(tmp_path: Path) -> None:
    config = load_config(
        write_config(tmp_path, config_doc(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:10"))
    )
    rec = Recorder(config, on_trip=lambda _r: None, clock=lambda: 0.0)
    rec.observe_deferred("baseline", 0.02, False, 0.4, 0.5, None, 0, None)
    rec.reset(armed=False)
    rec.flush()
    assert rec.evidence.baseline.requests == 0
