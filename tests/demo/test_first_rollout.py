"""The README's first real rollout (``config/first-rollout.yaml``): sized for about 10 requests a second,
it must reach a verdict at that rate, both ways, under traffic as production makes it: random routing,
heavy-tailed latency, an incident both versions share, and at half and twice the rate.

The replays run the controller the proxy runs (``proxy.app.backtest``) on seeded synthetic traces; the
sample traffic command is driven through a real proxy in front of the real sample models.
"""

from __future__ import annotations

import asyncio
import math
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxy.app.backtest import BacktestSummary, backtest
from proxy.config.load import load_config
from proxy.config.model import Config
from proxy.rollout.trace import Outcome, TracedRequest
from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.paths import ROOT
from tests.helpers.proxy_runner import start_proxy

CONFIG = ROOT / "config" / "first-rollout.yaml"
ENV = {
    "ROLLGUARD_OPERATOR_TOKEN": "first-rollout-operator-0123",
    "ROLLGUARD_VIEWER_TOKEN": "first-rollout-viewer-012345",
    "ROLLGUARD_PII_KEY": "first-rollout-pii-key-0123456789abcdef",
}
# What the README promises at 10 requests a second: a good candidate promoted within 30 minutes; a
# candidate failing 5% of requests, or deciding differently, rolled back in shadow (no user ever answered
# by it) within 3 minutes; and so is one twice as slow (still under the absolute p95 threshold, so only
# the per-request comparison with the baseline on the mirrored pairs can tell).
PROMOTED_WITHIN_S = 30 * 60


Version = Callable[[random.Random, float, float], Outcome]


def _model(median_ms: float, errors: float = 0.0, shift: float = 0.0) -> Version:
    """Lognormal latency (sigma 0.6: p99 ~4x the median) and independent 500s drawn per version; the
    request's score (the same features give the same model the same score) moved by ``shift``."""

    def answer(rng: random.Random, slow: float, score: float) -> Outcome:
        latency = median_ms * slow * math.exp(rng.gauss(0.0, 0.6))
        if rng.random() < errors:
            return Outcome(500, latency)
        return Outcome(200, latency, score=min(1.0, score + shift))

    return answer


def _trace(candidate: Version, *, rps: float = 10.0, seconds: float = 40 * 60, seed: int) -> Iterator[bytes]:
    """Poisson arrivals without sticky keys (each request routed by a seeded draw), one Beta(2, 3) score
    per request; a 90 s brownout at 12 minutes makes both versions 3x slower at the same moments."""
    rng = random.Random(seed)
    baseline = _model(20.0)
    t = 0.0
    while True:
        t += rng.expovariate(rps)
        if t >= seconds:
            return
        slow = 3.0 if 720.0 <= t < 810.0 else 1.0
        score = rng.betavariate(2, 3)
        line = TracedRequest(round(t, 4), None, None, baseline(rng, slow, score), candidate(rng, slow, score))
        yield line.to_line()


@pytest.fixture
def config(monkeypatch: pytest.MonkeyPatch) -> Config:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    return load_config(CONFIG)


def _replay(config: Config, candidate: Version, seed: int, rps: float = 10.0) -> BacktestSummary:
    return asyncio.run(backtest(config, _trace(candidate, rps=rps, seed=seed), seed=seed))


def test_it_is_the_config_the_readme_describes(config: Config) -> None:
    canary = config.canary
    assert canary.steps == (5.0, 25.0, 50.0, 100.0) and canary.interval == 30.0
    assert (canary.shadow_samples, config.shadow.sample, canary.paired_sample) == (300, 0.5, 0.2)
    assert config.state.path == ROOT / "var" / "first-rollout-state.json"


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("rps", [5.0, 10.0, 20.0])
def test_a_good_candidate_is_promoted(config: Config, seed: int, rps: float) -> None:
    summary = _replay(config, _model(20.0), seed, rps)
    assert summary.outcome == "promoted", summary
    # At half the rate it takes about twice as long; the promise is made for 10 requests a second.
    assert summary.ended_at <= PROMOTED_WITHIN_S * (10.0 / min(rps, 10.0)), summary


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize(
    ("name", "candidate", "within_s", "users_answered"),
    [
        ("5% errors", _model(20.0, errors=0.05), 180.0, 0),
        ("decisions +15 pp", _model(20.0, shift=0.15), 180.0, 0),
        ("twice as slow", _model(40.0), 180.0, 0),
    ],
)
def test_a_bad_candidate_is_rolled_back(
    config: Config, seed: int, name: str, candidate: Version, within_s: float, users_answered: int
) -> None:
    summary = _replay(config, candidate, seed)
    assert (summary.outcome, summary.rolled_back_by) == ("rolled_back", "gates"), (name, summary)
    assert summary.ended_at <= within_s, (name, summary)
    assert summary.observed["candidate"] <= users_answered, (name, summary)


async def test_the_sample_traffic_reaches_the_models_through_a_real_proxy(
    tmp_path: Path, models: Models
) -> None:
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url)
    running, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
    try:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "proxy.demo.sample_traffic", "--url", f"{running.data_url}/v1/infer"),
            *("--rps", "40", "--duration", "2s", "--every", "1s", "--seed", "5", "--invalid-share", "0.1"),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        stop.set()
        await task
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    progress = [line for line in lines if line.strip().split("s", 1)[0].isdigit()]
    assert len(progress) >= 2, lines
    summary = next(line for line in lines if line.startswith("traffic: "))
    sent = int(summary.split()[1])
    assert 60 <= sent <= 100, summary  # 40 a second for 2 s, on a fixed schedule
    assert ", 0 errors, 0 shed" in summary and " 0 rejected by contract" not in summary, summary
    assert any(line.startswith("  baseline v1: ") and not line.endswith(": 0 requests") for line in lines)
