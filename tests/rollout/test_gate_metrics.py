"""rollguard_gate_value is in its threshold's units: dashboards and alerts compare the two gauges directly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from proxy.demo.sample_model import ModelBehavior
from tests.helpers.config import config_doc, write_config
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.models import Models
from tests.helpers.traffic import drive_traffic, wait_for_phase

# One-second windows that never move the step: every window holds, so the gates keep being judged on
# one growing sample and the gauges keep being published.
HOLDING_CANARY = {
    "steps": [50, 100],
    "interval": "1s",
    "min_samples": 30,
    "shadow_samples": 0,
    "passes_per_step": 100000,
    "max_failed_windows": 100000,
    "gates": {"decision_delta_pp": 90, "latency_p95_ms": 5000, "error_rate": 0.5, "cost_per_1k": 1.0},
    "tripwire": {"consecutive_failures": 100000},
}


async def _consistent_view(proxy: Any, within: float) -> tuple[dict[str, dict[str, Any]], dict[Any, float]]:
    """The gates from /status and /metrics as of the same window (none closed in between)."""
    deadline = time.monotonic() + within
    async with proxy.admin_client() as admin:
        while time.monotonic() < deadline:
            before = (await admin.get("/status")).json()["controller"]["gates"]
            samples = await metric_samples(proxy.admin_url)
            after = (await admin.get("/status")).json()["controller"]["gates"]
            gates = {g["gate"]: g for g in after}
            judged = gates.get("decision_delta", {}).get("value") is not None
            if before == after and judged:
                return gates, samples
            await asyncio.sleep(0.1)
    raise AssertionError(f"no judged decision_delta gate within {within}s")


async def test_decision_delta_gauge_is_the_distance_between_decision_rates_in_pp(
    proxy_factory: Any, models: Models
) -> None:
    # A drifted candidate decides positive noticeably more often than the baseline.
    models.candidate.model.set_behavior(ModelBehavior(version="v2", drift=1.5, seed=3))
    proxy = await proxy_factory(canary=HOLDING_CANARY)
    stop = asyncio.Event()
    traffic = asyncio.create_task(drive_traffic(proxy.data_url, stop, rps=200))
    try:
        async with proxy.admin_client() as admin:
            assert (await admin.post("/rollout/start", json={"reason": "gauge test"})).status_code == 200
            assert (await wait_for_phase(admin, {"canary"}, 10))["weight"] == 50
        await _consistent_view(proxy, 20)  # a window has been judged with enough samples
    finally:
        stop.set()
        await traffic
    gates, samples = await _consistent_view(proxy, 20)

    gate = gates["decision_delta"]
    published = sample(samples, "rollguard_gate_value", gate="decision_delta", version="v2")
    delta_pp = abs(gate["value"] - gate["baseline"]) * 100.0
    assert delta_pp > 1.0, gate  # the drift is visible: not a comparison of two zeros
    assert abs(published - delta_pp) < 1e-9, (published, gate)
    assert sample(samples, "rollguard_gate_threshold", gate="decision_delta", version="v2") == 90.0
    # The other gates are published as judged, already in their thresholds' units (p95 in ms here).
    latency = gates["latency_p95"]
    assert sample(samples, "rollguard_gate_value", gate="latency_p95", version="v2") == latency["value"]
    assert sample(samples, "rollguard_gate_threshold", gate="latency_p95", version="v2") == 5000.0


async def test_only_the_current_candidates_gate_gauges_are_exported(
    proxy_factory: Any, models: Models, tmp_path: Path
) -> None:
    proxy = await proxy_factory(canary=HOLDING_CANARY)

    def versions(samples: dict[Any, float]) -> set[str]:
        return {
            dict(labels)["version"]
            for name, labels in samples
            if name in ("rollguard_gate_value", "rollguard_gate_threshold")
        }

    async def judged_rollout(candidate: str) -> dict[Any, float]:
        """/metrics once a window of a new rollout of ``candidate`` has been judged."""
        stop = asyncio.Event()
        traffic = asyncio.create_task(drive_traffic(proxy.data_url, stop, rps=200))
        try:
            async with proxy.admin_client() as admin:
                assert (await admin.post("/rollout/start", json={"reason": "gauges"})).status_code == 200
            deadline = time.monotonic() + 20  # a failure guard: 1 s windows
            while candidate not in versions(samples := await metric_samples(proxy.admin_url)):
                assert time.monotonic() < deadline, f"no gate gauges of {candidate}: {versions(samples)}"
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await traffic
        return samples

    assert versions(await judged_rollout("v2")) == {"v2"}
    # The next candidate: a reload resets the rollout to idle, and a new rollout is judged.
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url, canary=HOLDING_CANARY)
    doc["upstreams"]["candidate"]["version"] = "v3"
    write_config(tmp_path, doc)
    async with proxy.admin_client() as admin:
        assert (await admin.post("/config/reload")).status_code == 200
    # v2's gauges, frozen at its last window, would otherwise be mixed into every max by (gate).
    assert versions(await judged_rollout("v3")) == {"v3"}
