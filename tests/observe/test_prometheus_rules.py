"""The shipped Prometheus rules: promtool checks and unit tests, names against a live proxy's /metrics."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.config import config_doc, write_config
from tests.helpers.metrics import metric_samples
from tests.helpers.models import Models
from tests.helpers.paths import ROOT
from tests.helpers.prometheus_alert_cases import OUT as ALERT_TESTS
from tests.helpers.prometheus_alert_cases import build
from tests.helpers.prometheus_server import PrometheusServer
from tests.helpers.promql import (
    DASHBOARD,
    PROM_DIR,
    RULES,
    SCRAPE_SERIES,
    exported_names,
    live_exposition,
    metric_names,
    promtool,
)

SLI_TESTS = PROM_DIR / "tests" / "sli_test.yml"


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [r for g in doc["groups"] for r in g["rules"]]


def test_promtool_check_rules_accepts_the_rules() -> None:
    r = promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in r.stdout


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-docker.yml"])
def test_promtool_check_config_accepts_the_scrape_configs(name: str) -> None:
    r = promtool("check", "config", str(PROM_DIR / name))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rollguard-rules.yml" in r.stdout  # the rules are loaded, not just the scrape job


def test_compose_prometheus_and_grafana_use_the_shipped_files() -> None:
    """No Docker engine here: check what docker compose would mount and read, by construction."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    mounts: dict[str, dict[str, Path]] = {}
    for name in ("prometheus", "grafana"):
        mounts[name] = {}
        for volume in services[name]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), volume
                mounts[name][target] = ROOT / source
            else:
                assert source in compose["volumes"], volume
    config_flag = next(a for a in services["prometheus"]["command"] if a.startswith("--config.file="))
    config_path = Path(config_flag.split("=", 1)[1])
    host = mounts["prometheus"][str(config_path.parent)] / config_path.name
    scrape = yaml.safe_load(host.read_text(encoding="utf-8"))
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["rollguard:9901"]
    docker_admin = yaml.safe_load((ROOT / "config" / "docker.yaml").read_text(encoding="utf-8"))["admin"]
    assert docker_admin["listen"].endswith(":9901") and not docker_admin["listen"].startswith("127.")
    provider = yaml.safe_load(
        (ROOT / "config" / "grafana" / "provisioning" / "dashboards" / "rollguard.yml").read_text()
    )
    dash_dir = provider["providers"][0]["options"]["path"]
    assert mounts["grafana"][f"{dash_dir}/rollguard-dashboard.json"] == DASHBOARD
    assert mounts["grafana"]["/etc/grafana/provisioning"] == ROOT / "config" / "grafana" / "provisioning"


def test_promtool_unit_tests_pass() -> None:
    r = promtool("test", "rules", str(SLI_TESTS), str(ALERT_TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("SUCCESS") == 2, r.stdout


def test_alert_unit_tests_are_generated_from_the_current_rules_and_cases() -> None:
    assert ALERT_TESTS.read_text(encoding="utf-8") == build(), (
        "config/prometheus/tests/alerts_test.yml is stale: "
        "run `python -m tests.helpers.prometheus_alert_cases`"
    )


def test_every_recording_rule_has_an_expected_value_in_the_unit_tests() -> None:
    tested = {
        t["expr"] for case in yaml.safe_load(SLI_TESTS.read_text())["tests"] for t in case["promql_expr_test"]
    }
    tested_names = set().union(*(metric_names(e) for e in tested))
    untested = {r["record"] for r in _rules() if "record" in r} - tested_names
    assert not untested, untested


def test_every_alert_has_a_summary_a_description_and_a_runbook_with_commands() -> None:
    alerts = [r for r in _rules() if "alert" in r]
    assert {a["alert"] for a in alerts} >= {
        "RollguardDown",
        "RollguardMetricsAbsent",
        "RollguardCanaryLatencyP95OverSLO",
        "RollguardCandidateErrorRate",
        "RollguardRollback",
        "RollguardShadowDrops",
        "RollguardDecisionDivergence",
        "RollguardCircuitOpen",
    }
    for a in alerts:
        ann = a["annotations"]
        assert set(ann) == {"summary", "description", "runbook"}, a["alert"]
        assert all(v.strip() for v in ann.values()), a["alert"]
        assert re.search(r"`(rollguard|curl) [^`]+`", ann["runbook"]), (
            f"{a['alert']}: runbook names no command"
        )
        assert a["labels"]["severity"] in {"page", "warning"}


# An SLO rule: the gate's published threshold per proxy (scaled to the alert's unit), else the default.
_SLO = re.compile(
    r'max by \(job, instance\) \(rollguard_gate_threshold\{gate="(?P<gate>\w+)"\}\)(?: / (?P<div>\d+))?'
    r" or (?P<fallback>[0-9.]+) \* group by \(job, instance\) \(rollguard_canary_weight_percent\)"
)


def test_slos_read_the_gates_the_proxy_publishes_and_fall_back_to_their_defaults() -> None:
    """A gate renamed in the proxy would leave its SLO on the fallback for good; a changed default would
    leave the fallback holding proxies to a number no config means."""
    from proxy.config.model import CanaryConfig
    from proxy.rollout.decide import GATES
    from proxy.rollout.gates import GatePolicy

    params = {r["record"]: r["expr"] for r in _rules() if r.get("record", "").startswith("rollguard:slo_")}
    defaults = GatePolicy.from_config(CanaryConfig())
    for record, gate, div, default in (
        # latency_p95 is published in ms, the SLO is in seconds like the histogram.
        ("rollguard:slo_latency_p95:seconds", "latency_p95", "1000", defaults.latency_p95_ms / 1000),
        ("rollguard:slo_error_ratio:ratio", "error_rate", None, defaults.error_rate),
    ):
        m = _SLO.fullmatch(" ".join(params[record].split()))
        assert m is not None, (record, params[record])
        assert m["gate"] == gate and gate in GATES, record
        assert m["div"] == div, record
        assert float(m["fallback"]) == default, record
    assert params["rollguard:slo_min_samples:count"] == f"vector({defaults.min_samples})"


async def test_slos_follow_a_live_proxys_gates_through_a_reload(
    proxy_factory: Any, models: Models, tmp_path: Path
) -> None:
    """The thresholds a real proxy publishes, scraped by a real Prometheus, in the SLOs' units: the
    configured gates from the start (idle, nothing judged yet), and the new ones after a reload."""
    canary = {"weight": 0, "interval": "1s", "gates": {"latency_p95_ms": 250, "error_rate": 0.02}}
    proxy = await proxy_factory(canary=canary)
    slo = "rollguard:slo_latency_p95:seconds == {} and rollguard:slo_error_ratio:ratio == {}"
    async with (
        PrometheusServer(tmp_path / "prometheus", [proxy.admin_url.removeprefix("http://")], [RULES]) as prom,
        proxy.admin_client() as admin,
    ):
        await prom.wait_for(slo.format(0.25, 0.02), 20, "the configured gates while idle")
        assert (await admin.post("/rollout/start", json={"reason": "slo test"})).status_code == 200

        doc = config_doc(
            tmp_path,
            models.baseline.url,
            models.candidate.url,
            canary={**canary, "gates": {"latency_p95_ms": 400, "error_rate": 0}},
        )
        write_config(tmp_path, doc)
        assert (await admin.post("/config/reload")).status_code == 200
        # error_rate 0 allows no failure at all: it is the SLO, not a gap for the default to fill.
        await prom.wait_for(slo.format(0.4, 0), 20, "the reloaded gates")


async def test_a_live_proxys_metrics_pass_promtool_lint_and_cover_every_name_the_rules_use(
    proxy_factory: Any,
) -> None:
    text = await live_exposition(proxy_factory)
    r = promtool("check", "metrics", stdin=text)
    assert r.returncode == 0 and not r.stdout.strip() and not r.stderr.strip(), r.stdout + r.stderr

    exported = exported_names(text)
    recorded = {r["record"] for r in _rules() if "record" in r}
    used = set().union(*(metric_names(r["expr"]) for r in _rules()))
    unknown = used - exported - recorded - SCRAPE_SERIES
    assert not unknown, f"rules use names no proxy exports: {sorted(unknown)}"


async def test_counters_the_alerts_watch_exist_at_zero_before_anything_happens(proxy: Any) -> None:
    """A counter born at 1 hides its first increment from increase(): the first rollback must alert."""
    samples = await metric_samples(proxy.admin_url)
    rg = "rollguard_"
    for name, labels in (
        (rg + "rollbacks_total", {"reason": "gates"}),
        (rg + "rollbacks_total", {"reason": "tripwire"}),
        (rg + "rollbacks_total", {"reason": "operator"}),
        (
            rg + "upstream_errors_total",
            {"kind": "circuit_open", "role": "candidate", "route": "infer", "version": "v2"},
        ),
        (
            rg + "upstream_errors_total",
            {"kind": "http_5xx", "role": "baseline", "route": "unmatched", "version": "v1"},
        ),
        (
            rg + "upstream_errors_total",
            {"kind": "timeout", "role": "shadow", "route": "infer", "version": "v2"},
        ),
        (rg + "shadow_requests_total", {"outcome": "dropped", "route": "infer"}),
        (rg + "shadow_comparisons_total", {"outcome": "mismatch", "route": "infer"}),
    ):
        assert samples.get((name, frozenset(labels.items()))) == 0.0, (name, labels)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(a_bucket{x=~"$v"}[$__rate_interval]))', {"a_bucket"}),
        ("b > on(job) group_left() c:d", {"b", "c:d"}),
        ('absent(up{job="rollguard"}) or histogram_quantile(0.9, e) * 1e3 offset 5m', {"up", "e"}),
    ],
)
def test_metric_names_are_parsed_out_of_expressions(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
