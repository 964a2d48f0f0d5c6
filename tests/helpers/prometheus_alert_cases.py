"""promtool unit tests of every rollguard alert, as a table; writes config/prometheus/tests/alerts_test.yml.

promtool compares an alert's annotations verbatim, so the expected annotations are the rule's own templates
rendered here with the labels and the formatted values each case states by hand (``{{ $labels.x }}`` from the
expected labels, every ``{{ $value | ... }}`` from the case's ``values``). promtool then checks that Go's
templates render to the same text, so a wrong label, value or format in a template fails the test.

    .venv/bin/python -m tests.helpers.prometheus_alert_cases    # rewrite the YAML after changing them

``tests/observe/test_prometheus_rules.py`` fails when the committed YAML differs from what this table
produces.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

from tests.helpers.paths import ROOT

RULES = ROOT / "config" / "prometheus" / "rollguard-rules.yml"
OUT = ROOT / "config" / "prometheus" / "tests" / "alerts_test.yml"

_TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")


@dataclass
class Fired:
    labels: dict[str, str]
    values: dict[str, str] = field(default_factory=dict)  # template expression -> its rendered text


@dataclass
class Check:
    eval_time: str
    alertname: str
    fired: list[Fired]


@dataclass
class Case:
    comment: str
    series: list[tuple[str, str]]
    checks: list[Check]


def s(name: str, values: str, **labels: str) -> tuple[str, str]:
    """One input series; ``job="rollguard"`` unless given."""
    labels = {"job": "rollguard", **labels}
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{inner}}}", values


def _candidate_latency(instance: str, per_minute: dict[str, int], minutes: int) -> list[tuple[str, str]]:
    out = []
    for le, n in per_minute.items():
        out.append(
            s(
                "rollguard_upstream_duration_seconds_bucket",
                f"0+{n}x{minutes}",
                instance=instance,
                route="infer",
                role="candidate",
                version="v2",
                le=le,
            )
        )
    total = per_minute["+Inf"]
    out.append(
        s(
            "rollguard_upstream_duration_seconds_count",
            f"0+{total}x{minutes}",
            instance=instance,
            route="infer",
            role="candidate",
            version="v2",
        )
    )
    return out


def _proxy(instance: str, minutes: int, **thresholds: str) -> list[tuple[str, str]]:
    """What a proxy exports besides traffic: the weight gauge (from start-up, which the SLOs' fallback
    keys on) and, per gate, the candidate's published threshold as promtool values (none: not yet)."""
    out = [s("rollguard_canary_weight_percent", f"5x{minutes}", instance=instance)]
    for gate, values in thresholds.items():
        out.append(s("rollguard_gate_threshold", values, instance=instance, gate=gate, version="v2"))
    return out


def _candidate(instance: str, values: dict[str, str]) -> Fired:
    """The expected alert of a candidate-version rule on ``instance``, with its rendered ``values``."""
    labels = {"job": "rollguard", "instance": instance, "role": "candidate", "version": "v2"}
    return Fired({**labels, "severity": "warning"}, values)


def _attempts(instance: str, role: str, version: str, attempts: int, errors: int) -> list[tuple[str, str]]:
    common = {"instance": instance, "route": "infer", "role": role, "version": version}
    return [
        s("rollguard_upstream_duration_seconds_count", f"0+{attempts}x15", **common),
        s("rollguard_upstream_errors_total", f"0+{errors}x15", kind="http_5xx", **common),
    ]


CASES: list[Case] = [
    Case(
        "RollguardDown: a fires after a minute unscraped; b stays up; a target exists, so none is absent.",
        [s("up", "1 1 0 0 0 0 0", instance="a:9901"), s("up", "1x6", instance="b:9901")],
        [
            Check("2m", "RollguardDown", []),  # pending: down for less than `for: 1m`
            Check(
                "4m", "RollguardDown", [Fired({"job": "rollguard", "instance": "a:9901", "severity": "page"})]
            ),
            Check("6m", "RollguardMetricsAbsent", []),
        ],
    ),
    Case(
        "RollguardMetricsAbsent: no rollguard target at all (only another job's) for five minutes.",
        [s("up", "1x10", job="node", instance="n:9100")],
        [
            Check("4m", "RollguardMetricsAbsent", []),
            Check("6m", "RollguardMetricsAbsent", [Fired({"job": "rollguard", "severity": "warning"})]),
        ],
    ),
    Case(
        "RollguardCanaryLatencyP95OverSLO: a and b are as slow as each other with enough samples (p95 = "
        "0.12 + 0.03 * 114/120): a publishes latency_p95 120 ms, b 200 ms, so only a fires; c is as slow but "
        "has 150 attempts in 5m (< min_samples 200); d is fast (p95 95 ms); e is as slow and has published "
        "no threshold yet, so the default 120 ms holds it.",
        [
            *_candidate_latency("a:9901", {"0.1": 0, "0.12": 0, "0.15": 120, "+Inf": 120}, 15),
            *_proxy("a:9901", 15, latency_p95="120x15"),
            *_candidate_latency("b:9901", {"0.1": 0, "0.12": 0, "0.15": 120, "+Inf": 120}, 15),
            *_proxy("b:9901", 15, latency_p95="200x15"),
            *_candidate_latency("c:9901", {"0.1": 0, "0.12": 0, "0.15": 30, "+Inf": 30}, 15),
            *_proxy("c:9901", 15, latency_p95="120x15"),
            *_candidate_latency("d:9901", {"0.1": 300, "0.12": 300, "0.15": 300, "+Inf": 300}, 15),
            *_proxy("d:9901", 15, latency_p95="120x15"),
            *_candidate_latency("e:9901", {"0.1": 0, "0.12": 0, "0.15": 120, "+Inf": 120}, 15),
            *_proxy("e:9901", 15),
        ],
        [
            Check("5m", "RollguardCanaryLatencyP95OverSLO", []),  # pending since 1m, `for: 5m`
            Check(
                "10m",
                "RollguardCanaryLatencyP95OverSLO",
                [
                    _candidate("a:9901", {"$value | humanizeDuration": "148.5ms"}),
                    _candidate("e:9901", {"$value | humanizeDuration": "148.5ms"}),
                ],
            ),
        ],
    ),
    Case(
        "RollguardCanaryLatencyP95OverSLO follows a reload: at 10m a's latency_p95 tightens from 200 ms to "
        "120 ms and b's loosens from 120 ms to 200 ms, both candidates as slow (p95 148.5 ms) throughout: "
        "b's alert resolves, a's goes pending and fires once it has held for its `for: 5m`.",
        [
            *_candidate_latency("a:9901", {"0.1": 0, "0.12": 0, "0.15": 120, "+Inf": 120}, 20),
            *_proxy("a:9901", 20, latency_p95="200x9 120x10"),
            *_candidate_latency("b:9901", {"0.1": 0, "0.12": 0, "0.15": 120, "+Inf": 120}, 20),
            *_proxy("b:9901", 20, latency_p95="120x9 200x10"),
        ],
        [
            Check(
                "8m",
                "RollguardCanaryLatencyP95OverSLO",
                [_candidate("b:9901", {"$value | humanizeDuration": "148.5ms"})],
            ),
            Check("13m", "RollguardCanaryLatencyP95OverSLO", []),  # b resolved, a still pending
            Check(
                "16m",
                "RollguardCanaryLatencyP95OverSLO",
                [_candidate("a:9901", {"$value | humanizeDuration": "148.5ms"})],
            ),
        ],
    ),
    Case(
        "RollguardCandidateErrorRate: a's candidate fails 5% (6/120 a minute) against error_rate 0.005; b's "
        "and c's fail 0.4% (4/1000), b's against 0.005, c's against 0.002, so only c fires; d allows none "
        "(error_rate 0) and fails 0.4%, e allows none and fails none; f fails 1% and has published no "
        "threshold yet, so the default 0.005 holds it; a's baseline fails 10%, which is not this alert's "
        "business.",
        [
            *_attempts("a:9901", "candidate", "v2", 120, 6),
            *_attempts("a:9901", "baseline", "v1", 120, 12),
            *_proxy("a:9901", 15, error_rate="0.005x15"),
            *_attempts("b:9901", "candidate", "v2", 1000, 4),
            *_proxy("b:9901", 15, error_rate="0.005x15"),
            *_attempts("c:9901", "candidate", "v2", 1000, 4),
            *_proxy("c:9901", 15, error_rate="0.002x15"),
            *_attempts("d:9901", "candidate", "v2", 1000, 4),
            *_proxy("d:9901", 15, error_rate="0x15"),
            *_attempts("e:9901", "candidate", "v2", 1000, 0),
            *_proxy("e:9901", 15, error_rate="0x15"),
            *_attempts("f:9901", "candidate", "v2", 1000, 10),
            *_proxy("f:9901", 15),
        ],
        [
            Check("5m", "RollguardCandidateErrorRate", []),
            Check(
                "10m",
                "RollguardCandidateErrorRate",
                [
                    _candidate("a:9901", {"$value | humanizePercentage": "5%"}),
                    _candidate("c:9901", {"$value | humanizePercentage": "0.4%"}),
                    _candidate("d:9901", {"$value | humanizePercentage": "0.4%"}),
                    _candidate("f:9901", {"$value | humanizePercentage": "1%"}),
                ],
            ),
        ],
    ),
    Case(
        "RollguardRollback: the gates rolled back at 3m (primed series, so the first rollback shows); "
        "the tripwire series never moves; ten minutes later it is over.",
        [
            s(
                "rollguard_rollbacks_total",
                "0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
                instance="a:9901",
                reason="gates",
            ),
            s("rollguard_rollbacks_total", "0x16", instance="a:9901", reason="tripwire"),
        ],
        [
            Check("2m", "RollguardRollback", []),
            Check(
                "4m",
                "RollguardRollback",
                [Fired({"job": "rollguard", "instance": "a:9901", "reason": "gates", "severity": "warning"})],
            ),
            Check("14m", "RollguardRollback", []),
        ],
    ),
    Case(
        "RollguardShadowDrops: a drops 5 of 100 mirrors a minute for over ten minutes; b drops 1 in 1000.",
        [
            s("rollguard_shadow_requests_total", "0+95x20", instance="a:9901", route="infer", outcome="sent"),
            s(
                "rollguard_shadow_requests_total",
                "0+5x20",
                instance="a:9901",
                route="infer",
                outcome="dropped",
            ),
            s(
                "rollguard_shadow_requests_total",
                "0+999x20",
                instance="b:9901",
                route="infer",
                outcome="sent",
            ),
            s(
                "rollguard_shadow_requests_total",
                "0+1x20",
                instance="b:9901",
                route="infer",
                outcome="dropped",
            ),
        ],
        [
            Check("8m", "RollguardShadowDrops", []),
            Check(
                "12m",
                "RollguardShadowDrops",
                [
                    Fired(
                        {"job": "rollguard", "instance": "a:9901", "route": "infer", "severity": "warning"},
                        {"$value | humanizePercentage": "5%"},
                    )
                ],
            ),
        ],
    ),
    Case(
        "RollguardDecisionDivergence: a's canary diverges 2.5 pp from 2m on (threshold 1 pp); b measured "
        "3 pp but has rolled back, so its stale gauge is not an alert.",
        [
            s(
                "rollguard_gate_value",
                "0.5 0.5 2.5 2.5 2.5 2.5 2.5 2.5 2.5 2.5",
                instance="a:9901",
                gate="decision_delta",
                version="v2",
            ),
            s("rollguard_gate_threshold", "1x9", instance="a:9901", gate="decision_delta", version="v2"),
            s("rollguard_rollout_phase", "1x9", instance="a:9901", phase="canary"),
            s("rollguard_rollout_phase", "0x9", instance="a:9901", phase="rolled_back"),
            s("rollguard_gate_value", "3x9", instance="b:9901", gate="decision_delta", version="v2"),
            s("rollguard_gate_threshold", "1x9", instance="b:9901", gate="decision_delta", version="v2"),
            s("rollguard_rollout_phase", "0x9", instance="b:9901", phase="canary"),
            s("rollguard_rollout_phase", "1x9", instance="b:9901", phase="rolled_back"),
        ],
        [
            Check("3m", "RollguardDecisionDivergence", []),  # pending since 2m, `for: 3m`
            Check(
                "6m",
                "RollguardDecisionDivergence",
                [
                    Fired(
                        {
                            "job": "rollguard",
                            "instance": "a:9901",
                            "gate": "decision_delta",
                            "version": "v2",
                            "severity": "warning",
                        },
                        {'$value | printf "%.2f"': "2.50"},
                    )
                ],
            ),
        ],
    ),
    Case(
        "RollguardConfigReloadFailed: a refused a reload at 3m (primed at 0, so the first one shows) and "
        "then reloaded fine; b only ever reloaded fine; fifteen minutes later it is over.",
        [
            s(
                "rollguard_config_reloads_total",
                "0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
                instance="a:9901",
                outcome="error",
            ),
            s(
                "rollguard_config_reloads_total",
                "0 0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
                instance="a:9901",
                outcome="ok",
            ),
            s("rollguard_config_reloads_total", "0+1x19", instance="b:9901", outcome="ok"),
            s("rollguard_config_reloads_total", "0x19", instance="b:9901", outcome="error"),
        ],
        [
            Check("2m", "RollguardConfigReloadFailed", []),
            Check(
                "5m",
                "RollguardConfigReloadFailed",
                [
                    Fired(
                        {"job": "rollguard", "instance": "a:9901", "outcome": "error", "severity": "warning"}
                    )
                ],
            ),
            Check("19m", "RollguardConfigReloadFailed", []),
        ],
    ),
    Case(
        "RollguardCircuitOpen: a's candidate circuit refused 3 attempts at 3m; b's never opened.",
        [
            s(
                "rollguard_upstream_errors_total",
                "0 0 0 3 3 3 3 3 3 3 3 3",
                instance="a:9901",
                route="infer",
                role="candidate",
                version="v2",
                kind="circuit_open",
            ),
            s(
                "rollguard_upstream_errors_total",
                "0x11",
                instance="b:9901",
                route="infer",
                role="candidate",
                version="v2",
                kind="circuit_open",
            ),
        ],
        [
            Check("2m", "RollguardCircuitOpen", []),
            Check(
                "6m",
                "RollguardCircuitOpen",
                [
                    Fired(
                        {
                            "job": "rollguard",
                            "instance": "a:9901",
                            "route": "infer",
                            "role": "candidate",
                            "version": "v2",
                            "severity": "warning",
                        },
                        {'$value | printf "%.0f"': "3"},
                    )
                ],
            ),
            Check("10m", "RollguardCircuitOpen", []),
        ],
    ),
]


def _alert_rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def _render(text: str, fired: Fired) -> str:
    def one(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr.startswith("$labels."):
            return fired.labels[expr.removeprefix("$labels.")]
        if expr not in fired.values:
            raise KeyError(f"case gives no rendered text for {{{{ {expr} }}}}")
        return fired.values[expr]

    return _TEMPLATE.sub(one, text)


def build() -> str:
    rules = _alert_rules()
    tested = {c.alertname for case in CASES for c in case.checks}
    missing = set(rules) - tested
    if missing:
        raise ValueError(f"alerts without a case: {sorted(missing)}")
    tests = []
    for case in CASES:
        alert_tests = []
        for check in case.checks:
            exp = []
            for fired in check.fired:
                annotations = rules[check.alertname]["annotations"]
                exp.append(
                    {
                        "exp_labels": fired.labels,
                        "exp_annotations": {k: _render(v, fired) for k, v in annotations.items()},
                    }
                )
            alert_tests.append(
                {"eval_time": check.eval_time, "alertname": check.alertname, "exp_alerts": exp}
            )
        tests.append(
            {
                "name": case.comment,
                "interval": "1m",
                "input_series": [{"series": ser, "values": vals} for ser, vals in case.series],
                "alert_rule_test": alert_tests,
            }
        )
    header = (
        "# Generated by `python -m tests.helpers.prometheus_alert_cases` from the case table there;"
        " do not edit.\n"
        "# promtool test rules config/prometheus/tests/alerts_test.yml\n"
    )
    body = {"rule_files": ["../rollguard-rules.yml"], "evaluation_interval": "1m", "tests": tests}
    return header + yaml.safe_dump(body, sort_keys=False, width=110, allow_unicode=True)


if __name__ == "__main__":
    OUT.write_text(build(), encoding="utf-8")
    sys.stdout.write(f"wrote {OUT.relative_to(ROOT)}\n")
