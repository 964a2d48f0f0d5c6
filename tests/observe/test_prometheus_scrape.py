"""A real Prometheus scrapes a real proxy: the recording rules agree with what /status reports.

/status's ``controller.window`` holds every routed upstream attempt since the current step began (a weight
set by hand starts one): per version the attempts, the failed ones (the controller's failures, fallbacks
included) and the latency quantiles of upstream time. The recording rules ``rollguard:version_*`` compute
the same from rollguard_upstream_duration_seconds and rollguard_upstream_errors_total over routed traffic.
The proxy starts fresh and Prometheus scrapes it once before any traffic, so the rate windows hold exactly
the window's attempts: counts must be equal, error ratios equal, quantiles within one bucket.
"""

from __future__ import annotations

import asyncio
import random
from bisect import bisect_left
from pathlib import Path
from typing import Any

import httpx

from proxy.demo.sample_model import ModelBehavior, features_generator
from tests.helpers.models import Models
from tests.helpers.prometheus_server import PrometheusServer, by_label
from tests.helpers.promql import RULES, dashboard, dashboard_queries, substitute

ROUTED = 'job="rollguard", route!="unmatched", role=~"baseline|candidate"'
REQUESTS = 360
UNMATCHED = 20


async def _drive(data_url: str, n: int, seed: int) -> dict[int, int]:
    """``n`` valid infer requests from distinct users, 8 at a time, plus unmatched ones; counts by status."""
    rng = random.Random(seed)
    bodies = [features_generator(rng) for _ in range(n)]
    sem = asyncio.Semaphore(8)
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=data_url, timeout=10) as c:

        async def one(body: dict[str, Any]) -> None:
            async with sem:
                r = await c.post("/v1/infer", json=body, headers={"x-user-id": str(body["user_id"])})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

        await asyncio.gather(*(one(b) for b in bodies))
        for _ in range(UNMATCHED):  # baseline traffic the controller never judges
            await c.get("/unrouted/path")
    return statuses


def _by_route_role(result: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    return {(s["metric"]["route"], s["metric"]["role"]): float(s["value"][1]) for s in result}


def _bucket(bounds: list[float], seconds: float) -> int:
    """The index of the histogram bucket (le) a value falls in."""
    return bisect_left(bounds, seconds)


async def test_promql_over_scraped_series_agrees_with_status(
    proxy_factory: Any, models: Models, tmp_path: Path
) -> None:
    models.baseline.model.set_behavior(
        ModelBehavior(version="v1", latency_ms=6, latency_jitter_ms=5, error_rate=0.02, seed=11)
    )
    models.candidate.model.set_behavior(
        ModelBehavior(version="v2", latency_ms=45, latency_jitter_ms=40, error_rate=0.08, seed=12)
    )
    proxy = await proxy_factory(shadow={"sample": 0.0}, canary={"weight": 0, "interval": "1h"})
    admin_target = proxy.admin_url.removeprefix("http://")

    async with (
        PrometheusServer(tmp_path / "prometheus", [admin_target], [RULES]) as prom,
        proxy.admin_client() as admin,
    ):
        assert (await admin.put("/weights", json={"canary": 40, "reason": "scrape test"})).status_code == 200
        # One scrape before any traffic: every counter's first sample is its primed 0, so rate() sees
        # all of the traffic below.
        await prom.wait_for('rollguard_canary_weight_percent{job="rollguard"} == 40', 20, "first scrape")

        statuses = await _drive(proxy.data_url, REQUESTS, seed=5)
        assert sum(statuses.values()) == REQUESTS, statuses
        window = (await admin.get("/status")).json()["controller"]["window"]
        base, cand = window["baseline"], window["candidate"]
        # Fallbacks answered the candidate's failures: the baseline's attempts include them.
        assert cand["failures"] > 5 and cand["requests"] > 80, window
        assert base["failures"] > 0 and base["requests"] > 150, window

        counts = 'sum by (route, role) (rollguard_upstream_duration_seconds_count{job="rollguard"})'
        want = {
            ("infer", "baseline"): base["requests"],
            ("infer", "candidate"): cand["requests"],
            ("unmatched", "baseline"): UNMATCHED,  # scraped, and left out of every per-version figure below
            ("unmatched", "candidate"): 0,
        }
        scraped = await prom.wait_until(
            counts, lambda r: _by_route_role(r) == want, 20, "the scrape with the final counts"
        )
        at = max(float(s["value"][0]) for s in scraped)
        # A rule evaluation after that instant has seen the final scrape.
        await prom.wait_for(
            f'timestamp(rollguard:version_error_ratio:rate5m{{role="candidate"}}) > {at}',
            20,
            "a rule evaluation",
        )

        failures = by_label(
            await prom.query(f"sum by (role) (rollguard_upstream_errors_total{{{ROUTED}}})"), "role"
        )
        assert failures == {"baseline": base["failures"], "candidate": cand["failures"]}

        ratios = by_label(await prom.query('rollguard:version_error_ratio:rate5m{job="rollguard"}'), "role")
        assert abs(ratios["candidate"] - cand["error_rate"]) < 1e-9, (ratios, cand)
        assert abs(ratios["baseline"] - base["error_rate"]) < 1e-9, (ratios, base)

        bounds = sorted(
            {
                float(s["metric"]["le"])
                for s in await prom.query('rollguard_upstream_duration_seconds_bucket{job="rollguard"}')
                if s["metric"]["le"] != "+Inf"
            }
        )
        assert 0.12 in bounds  # the default latency gate is a bucket edge
        # /status reads the quantile at rank floor(q * (n - 1)), PromQL interpolates at rank q * n:
        # neighbouring order statistics. Where samples are dense (p50, p95) they share a bucket or touch;
        # a p99 of ~130 samples rests on the top one or two, which may lie buckets apart: not compared.
        for q in ("p50", "p95"):
            promql = by_label(
                await prom.query(
                    f'rollguard:version_upstream_duration_seconds:{q}_rate5m{{job="rollguard"}}'
                ),
                "role",
            )
            for role, doc in (("baseline", base), ("candidate", cand)):
                status_s = doc["latency_ms"][q] / 1000.0
                gap = abs(_bucket(bounds, promql[role]) - _bucket(bounds, status_s))
                assert gap <= 1, f"{role} {q}: PromQL {promql[role]:.4f}s vs /status {status_s:.4f}s"
        # The candidate is clearly slower: the comparison is not between two tiny numbers.
        assert promql["candidate"] > 2 * promql["baseline"]

        # Every dashboard query runs against the scraped data; the version panels show both versions.
        values = {"job": "rollguard", "instance": ".+", "route": ".+", "gate": ".+"}
        for where, expr in dashboard_queries(dashboard()):
            result = await prom.query(substitute(expr, values))
            if "by (role, version" in expr:
                roles = {s["metric"].get("role") for s in result}
                assert {"baseline", "candidate"} <= roles, f"{where}: {result}"
