"""The Grafana dashboard: loads, imports anywhere, and every query names metrics that exist and parses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.helpers.promql import (
    SCRAPE_SERIES,
    dashboard,
    dashboard_panels,
    dashboard_queries,
    exported_names,
    live_exposition,
    metric_names,
    promtool,
    promtool_expr_tests,
    rule_names,
    substitute,
)

DS_UID = "${DS_PROMETHEUS}"


def _gate(name: str, instance: str, gate: str, value: float) -> tuple[str, str]:
    labels = f'job="rollguard",instance="{instance}",gate="{gate}",version="v2"'
    return f"{name}{{{labels}}}", f"{value}x5"


# Two proxies' gate gauges. latency_p95: a at 150 of 120 ms, b at 150 of 300 ms. error_rate: a allows none
# and has none, b is at 0.01 of 0.005. cost_per_1k: a allows none and is at 0.3. policy_violations: 0
# allowed (the default) on both, b has 2.
GATES = [
    _gate("rollguard_gate_value", "a:9901", "latency_p95", 150),
    _gate("rollguard_gate_threshold", "a:9901", "latency_p95", 120),
    _gate("rollguard_gate_value", "b:9901", "latency_p95", 150),
    _gate("rollguard_gate_threshold", "b:9901", "latency_p95", 300),
    _gate("rollguard_gate_value", "a:9901", "error_rate", 0),
    _gate("rollguard_gate_threshold", "a:9901", "error_rate", 0),
    _gate("rollguard_gate_value", "b:9901", "error_rate", 0.01),
    _gate("rollguard_gate_threshold", "b:9901", "error_rate", 0.005),
    _gate("rollguard_gate_value", "a:9901", "cost_per_1k", 0.3),
    _gate("rollguard_gate_threshold", "a:9901", "cost_per_1k", 0),
    _gate("rollguard_gate_value", "a:9901", "policy_violations", 0),
    _gate("rollguard_gate_threshold", "a:9901", "policy_violations", 0),
    _gate("rollguard_gate_value", "b:9901", "policy_violations", 2),
    _gate("rollguard_gate_threshold", "b:9901", "policy_violations", 0),
]
GATE_VARIABLES = {"job": "rollguard", "instance": ".+", "gate": ".+"}


def test_the_dashboard_loads_and_imports_anywhere() -> None:
    doc = dashboard()
    assert doc["schemaVersion"] >= 36 and doc["uid"] and doc["title"]
    ds = [v for v in doc["templating"]["list"] if v["name"] == "DS_PROMETHEUS"]
    assert ds and ds[0]["type"] == "datasource" and ds[0]["query"] == "prometheus"
    for p in dashboard_panels(doc):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == DS_UID, p["title"]
        assert p["targets"], p["title"]
        assert all(t["datasource"]["uid"] == DS_UID for t in p["targets"]), p["title"]
        pos = p["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, p["title"]
    for v in doc["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"]["uid"] == DS_UID, v["name"]
    ids = [p["id"] for p in dashboard_panels(doc)]
    assert len(ids) == len(set(ids))


def test_the_dashboard_shows_what_operators_need() -> None:
    doc = dashboard()
    used = set().union(*(metric_names(e) for _, e in dashboard_queries(doc)))
    assert {
        "rollguard_request_duration_seconds_bucket",
        "rollguard_upstream_duration_seconds_bucket",
        "rollguard_upstream_errors_total",
        "rollguard_requests_total",
        "rollguard_canary_weight_percent",
        "rollguard_rollout_phase",
        "rollguard_shadow_comparisons_total",
        "rollguard_shadow_requests_total",
        "rollguard_gate_value",
        "rollguard_gate_threshold",
        "rollguard_rollbacks_total",
    } <= used
    exprs = " ".join(e for _, e in dashboard_queries(doc))
    for q in ("0.50", "0.95", "0.99"):
        assert f"histogram_quantile({q}, sum by (role, version, le)" in exprs
    rollbacks = [a for a in doc["annotations"]["list"] if a.get("name") == "Rollbacks"]
    assert rollbacks and "rollguard_rollbacks_total" in rollbacks[0]["expr"]
    assert rollbacks[0]["datasource"]["uid"] == DS_UID
    gate_panels = [p for p in dashboard_panels(doc) if p.get("repeat") == "gate"]
    assert gate_panels, "one value-vs-threshold panel per gate"


async def test_every_query_names_metrics_a_live_proxy_exports_or_the_rules_record(proxy_factory: Any) -> None:
    known = exported_names(await live_exposition(proxy_factory)) | rule_names() | SCRAPE_SERIES
    for where, expr in dashboard_queries(dashboard()):
        names = metric_names(substitute(expr))
        assert names, f"{where}: no metric in {expr!r}"
        assert names <= known, f"{where}: unknown {sorted(names - known)} in {expr!r}"


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    queries = dashboard_queries(dashboard())
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(e)} for i, (_, e) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout


def _panel_query(doc: dict[str, Any], title: str) -> str:
    (panel,) = [p for p in dashboard_panels(doc) if p["title"] == title]
    (target,) = panel["targets"]
    return substitute(target["expr"], GATE_VARIABLES)


def test_no_gate_query_divides_by_a_zero_threshold_and_zero_gates_still_show(tmp_path: Path) -> None:
    """A 0 threshold ("none allowed": policy_violations by default) has no ratio; dividing by it would
    show NaN or +Inf. The ratio panel takes each proxy's own value over its own threshold where that is
    above 0, the worst proxy per gate; the gates set to 0 show their value beside it."""
    doc = dashboard()
    gate_queries = [
        substitute(e, GATE_VARIABLES)
        for where, e in dashboard_queries(doc)
        if where.startswith("panel") and "rollguard_gate_threshold" in e
    ]
    assert len(gate_queries) >= 3, gate_queries
    tests: list[dict[str, Any]] = []
    for expr in gate_queries:
        tests.append({"expr": f"({expr}) != ({expr})", "eval_time": "4m", "exp_samples": []})  # NaN
        tests.append({"expr": f"abs({expr}) == +Inf", "eval_time": "4m", "exp_samples": []})
    tests.append(
        {
            "expr": _panel_query(doc, "Gate value / threshold (last window)"),
            "eval_time": "4m",
            "exp_samples": [
                {"labels": '{gate="latency_p95"}', "value": 1.25},
                {"labels": '{gate="error_rate"}', "value": 2},
            ],
        }
    )
    tests.append(
        {
            "expr": _panel_query(doc, "Gates allowing nothing (threshold 0, last window)"),
            "eval_time": "4m",
            "exp_samples": [
                {"labels": '{gate="error_rate"}', "value": 0},
                {"labels": '{gate="cost_per_1k"}', "value": 0.3},
                {"labels": '{gate="policy_violations"}', "value": 2},
            ],
        }
    )
    r = promtool_expr_tests(tmp_path, GATES, tests)
    assert r.returncode == 0, r.stdout + r.stderr
