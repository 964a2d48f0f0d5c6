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
    rule_names,
    substitute,
)

DS_UID = "${DS_PROMETHEUS}"


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
