"""Helpers for the Prometheus tests: the binaries, exported names, the names a PromQL expression uses."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.paths import ROOT
from tests.helpers.traffic import VALID_BODY

PROM_DIR = ROOT / "config" / "prometheus"
RULES = PROM_DIR / "rollguard-rules.yml"
DASHBOARD = ROOT / "config" / "grafana" / "rollguard-dashboard.json"

# Series Prometheus makes itself for every target.
SCRAPE_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
    | {"inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*)(?![\w:])(?!\s*\()")


def need_binary(name: str) -> str:
    """The path of ``name``; skip the test when it is missing, except under CI, where that is a failure."""
    path = shutil.which(name)
    if path is None:
        why = f"{name} is not installed (Debian package 'prometheus'; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    return path


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [need_binary("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def promtool_expr_tests(
    workdir: Path, series: list[tuple[str, str]], tests: list[dict[str, Any]]
) -> subprocess.CompletedProcess[str]:
    """``promtool test rules`` of ``tests`` (promql_expr_test entries, no rules loaded) over ``series``
    ((selector, values), one sample a minute)."""
    doc = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": sel, "values": values} for sel, values in series],
                "promql_expr_test": tests,
            }
        ],
    }
    path = workdir / "promql_test.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return promtool("test", "rules", str(path))


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects (functions, keywords, labels and durations left out).

    Strings go first (a regex matcher may hold braces), then label matchers, ranges and grouping clauses;
    what remains of the identifiers that are not followed by ``(`` are metric names.
    """
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


async def live_exposition(proxy_factory: Any) -> str:
    """/metrics of a proxy that has routed, mirrored, answered an unmatched path and rolled back."""
    proxy = await proxy_factory(shadow={"sample": 1.0})
    async with proxy.admin_client() as admin, httpx.AsyncClient(base_url=proxy.data_url) as data:
        assert (await admin.put("/weights", json={"canary": 50})).status_code == 200
        for i in range(20):
            await data.post("/v1/infer", json=VALID_BODY, headers={"x-user-id": f"user-{i}"})
        await data.get("/not-a-route")
        assert (await admin.post("/rollout/rollback", json={"reason": "lint"})).status_code == 200
        return str((await admin.get("/metrics")).text)


def rule_names() -> set[str]:
    """The names the rollguard recording rules define."""
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}


def exported_names(exposition: str) -> set[str]:
    """The sample names a /metrics text can carry, from its TYPE lines (series with no child yet included)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
        names.update(s.name for s in family.samples)
    return names


# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((.*),\s*(\w+)\)$")


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return doc


def dashboard_panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows keep their panels inside
    return out


def dashboard_queries(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target, annotation query and variable query (its selector)."""
    out = []
    for p in dashboard_panels(doc):
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", t["expr"]))
    for a in doc["annotations"]["list"]:
        if "expr" in a:
            out.append((f"annotation {a['name']!r}", a["expr"]))
    for v in doc["templating"]["list"]:
        if v["type"] == "query":
            m = _LABEL_VALUES.match(v["query"]["query"])
            assert m is not None, v["name"]
            out.append((f"variable {v['name']!r}", m.group(1)))
    return out


def substitute(expr: str, values: dict[str, str] | None = None) -> str:
    """``expr`` with Grafana's and the dashboard's variables replaced (unknown ones by ``x``)."""
    table = {**GRAFANA_VARIABLES, **(values or {})}

    def one(m: re.Match[str]) -> str:
        return table.get(m.group(1) or m.group(2), "x")

    return _VARIABLE.sub(one, expr)
