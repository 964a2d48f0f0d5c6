"""The scenarios of ``rollguard demo``, the canary settings they are tuned for, and how a run's outcome is
read back from the decision log (pure: no I/O).

Every scenario runs the same config (:data:`DEMO_CANARY`); only the candidate differs, and each failing
scenario is the ``good`` candidate with one fault added, so the fault alone decides the rollback. Faults
the shadow can see (latency, drift) are caught there, before any client meets v2. Faults that only live
traffic reaches (``live_fault``, applied by the demo the moment it sees the canary begin) show the
canary's defences instead: the per-request trip-wire, the error gate, and the fallback that answers every
client whose candidate attempt failed.

========  =======================================  ===========  =========================================
scenario  candidate v2                             expected     decided by
========  =======================================  ===========  =========================================
good      v1's model with a tiny drift (+0.05)     promoted     every gate passing, shadow then each step
latency   + 500 ms (+-50) per answer               rolled back  latency_p95, in the shadow
errors    500s on 9% of live answers (canary on)   rolled back  the trip-wire or error_rate, in canary
drift     drift +0.8: ~24% of decisions flip       rolled back  decision_delta, paired, in the shadow
schema    10% of live answers break the contract   rolled back  the trip-wire or error_rate, in canary
========  =======================================  ===========  =========================================

Why these settings (:data:`DEMO_CANARY`): at 300 requests/s the shadow's 500 compared pairs take ~2 s and
the 10% step's ``min_samples`` (100) ~3 s. A gate passes only on confident evidence, so the thresholds sit
where an identical candidate passes on such samples (their bounds are a few points wide): error rate 5%,
decisions within 10 pp. Models, proxy and clients share one process, so every latency carries its
scheduling delay: p95 is ~10 ms on an idle machine and stays under 250 ms on a busy one; the relative
guard is 3x. Two failing windows in a row roll back; so does a step inconclusive for 30 s (nobody is
there to answer a WAIT). A good run promotes in ~10-15 s, a failing one rolls back within a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from proxy.demo.sample_model import ModelBehavior
from proxy.rollout.timeline import TimelineRow, seconds_between, since_start, timeline

Expect = Literal["promoted", "rolled_back"]
END_PHASES: Final = frozenset({"promoted", "rolled_back"})

DEMO_CANARY: Final[Mapping[str, Any]] = {
    "weight": 0,
    "steps": [10, 25, 50, 100],
    "interval": "1s",
    "min_samples": 100,
    "passes_per_step": 1,
    "max_failed_windows": 2,
    "max_hold": "30s",
    "on_max_hold": "rollback",
    "auto_promote": True,
    "fallback_to_baseline": True,
    "shadow_samples": 500,
    "tripwire": {"consecutive_failures": 5, "alpha": 0.001, "beta": 0.01, "failure_rate": 0.05},
    "gates": {
        "latency_p95_ms": 250,
        "latency_ratio": 3.0,
        "error_rate": 0.05,
        "decision_delta_pp": 10,
        "policy_violations": 0,
        "cost_per_1k": 0.5,
    },
}

# Both versions answer in 4 +- 3 ms, as a small real model would; the latency scenario adds to that.
BASELINE = ModelBehavior(version="v1", latency_ms=4.0, latency_jitter_ms=3.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """One ``--scenario``: the candidate's behaviour, the fault it shows under live traffic, if any, and
    how its rollout should end."""

    name: str
    story: str  # one line: what this scenario demonstrates
    candidate: ModelBehavior  # from the start: what the shadow sees
    live_fault: Mapping[str, Any] = field(default_factory=dict)  # ModelBehavior changes once canary begins
    expect: Expect
    causes: tuple[str, ...] = ()  # a rollback is as expected when it names one of these (see causes_of)

    def faulty(self, behavior: ModelBehavior) -> ModelBehavior:
        """``behavior`` with the live fault applied."""
        return replace(behavior, **self.live_fault)

    @property
    def fault_text(self) -> str:
        return ", ".join(
            f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.live_fault.items()
        )


def _v2(**changes: Any) -> ModelBehavior:
    # v2 is a slightly different model, not a copy of v1: the shadow has something real but small to find.
    return replace(BASELINE, **{"version": "v2", "drift": 0.05, **changes})


SCENARIOS: Final[Mapping[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario(
            name="good",
            story="a healthy candidate (a small, real drift) passes the shadow and every step: promoted",
            candidate=_v2(),
            expect="promoted",
        ),
        Scenario(
            name="latency",
            story="the candidate answers 500 ms slower: the shadow sees its p95 far over latency_p95 and "
            "rolls it back before any client meets it",
            candidate=_v2(latency_ms=504.0, latency_jitter_ms=50.0),
            expect="rolled_back",
            causes=("latency_p95",),
        ),
        Scenario(
            name="errors",
            story="the candidate passes the shadow, then fails 9% of live requests (a fault only real "
            "traffic reaches): the trip-wire or error_rate rolls it back, the fallback answers every client",
            candidate=_v2(),
            live_fault={"error_rate": 0.09},
            expect="rolled_back",
            causes=("error_rate", "trip-wire"),
        ),
        Scenario(
            name="drift",
            story="the candidate's scores drift (+0.8 on the logit, ~24% of decisions flip): the shadow's "
            "paired decision_delta rolls it back before any client meets it",
            candidate=_v2(drift=0.8),
            expect="rolled_back",
            causes=("decision_delta",),
        ),
        Scenario(
            name="schema",
            story="the candidate passes the shadow, then breaks the response contract on 10% of live "
            "answers: counted as failures and rolled back, the fallback answers the clients",
            candidate=_v2(),
            live_fault={"schema_break_rate": 0.10},
            expect="rolled_back",
            causes=("error_rate", "trip-wire"),
        ),
    )
}


# -- reading the outcome back from the decision log ------------------------------------------------------


def causes_of(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """What decided a PROMOTE or ROLLBACK entry: the failing gates' names, ``trip-wire``, ``max_hold``,
    or the actor for an operator's move. Read from the entry's structured fields, not its wording."""
    if entry.get("actor") == "tripwire":
        return ("trip-wire",)
    if entry.get("actor") != "controller":
        return (f"operator {entry.get('actor', '?')}",)
    failed = tuple(str(g.get("gate")) for g in entry.get("gates", []) if g.get("verdict") in ("HIGH", "LOW"))
    if "max_hold" in str(entry.get("reason", "")) and entry.get("action") == "ROLLBACK":
        return ("max_hold", *failed)
    return failed


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """How the rollout ended, as the decision log and ``/status`` tell it."""

    phase: str  # the phase the rollout was left in
    reason: str  # the state's reason (the deciding decision's reason)
    action: str | None = None  # PROMOTE or ROLLBACK; None when the run ended before either
    actor: str | None = None
    causes: tuple[str, ...] = ()
    seconds: float | None = None  # from the rollout's start to the deciding entry

    @property
    def label(self) -> str:
        if self.phase == "promoted":
            return "PROMOTED"
        if self.phase == "rolled_back":
            return "ROLLED BACK"
        return f"UNDECIDED (still {self.phase})"

    def as_expected(self, scenario: Scenario) -> bool:
        if self.phase != scenario.expect:
            return False
        return scenario.expect != "rolled_back" or bool(set(self.causes) & set(scenario.causes))

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.label,
            "phase": self.phase,
            "reason": self.reason,
            "action": self.action,
            "actor": self.actor,
            "causes": list(self.causes),
            "time_to_decision_s": self.seconds,
        }


def outcome_of(phase: str, reason: str, entries: Sequence[Mapping[str, Any]]) -> Outcome:
    """The outcome of the latest rollout in ``entries`` (newest last), left in ``phase`` with ``reason``."""
    run = since_start(entries)
    deciding = next((e for e in reversed(run) if e.get("action") in ("PROMOTE", "ROLLBACK")), None)
    if phase not in END_PHASES or deciding is None:
        return Outcome(phase=phase, reason=reason)
    start_ts = str(run[0].get("ts", "")) if run and run[0].get("action") == "start" else ""
    return Outcome(
        phase=phase,
        reason=reason,
        action=str(deciding.get("action")),
        actor=str(deciding.get("actor", "?")),
        causes=causes_of(deciding),
        seconds=seconds_between(start_ts, str(deciding.get("ts", ""))),
    )


# -- the steps -----------------------------------------------------------------------------------------


def step_evidence(entries: Iterable[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Each finished step of the latest rollout with the controller's evidence for it: the ``window``
    logged with the decision that ended the step (PROCEED, PROMOTE, ROLLBACK, a trip-wire's rollback).
    The label is ``shadow`` or the step's weight (``10%``)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for e in since_start(list(entries)):
        before, window = e.get("before") or {}, e.get("window")
        if e.get("action") not in ("PROCEED", "PROMOTE", "ROLLBACK") or not isinstance(window, dict):
            continue
        if before.get("phase") == "shadow":
            label = "shadow"
        else:
            weight = before.get("weight")
            label = f"{weight:g}%" if isinstance(weight, int | float) else "?"
        out.append((label, window))
    return out


# -- as text, for the summary --------------------------------------------------------------------------


def num(value: Any, spec: str) -> str:
    """A number formatted with ``spec``; ``-`` for anything else (None, a bool, a string)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return format(value, spec)


def ms(value: Any) -> str:
    return "-" if isinstance(value, bool) or not isinstance(value, int | float) else f"{value:.1f} ms"


def share(rate: Any) -> str:
    """A rate in [0, 1] as a percentage."""
    return "-" if isinstance(rate, bool) or not isinstance(rate, int | float) else f"{100 * rate:.1f}%"


def gate_cells(g: Mapping[str, Any]) -> tuple[str, str, str]:
    """A gate's candidate value, baseline and threshold, each in the gate's unit (see GateResult).

    The shadow's decision gate is the paired divergence in percentage points (no p-value, baseline 0);
    the canary's compares the versions' positive-decision shares.
    """
    gate, v, b, t = g.get("gate"), g.get("value"), g.get("baseline"), g.get("threshold")
    if gate == "latency_p95":
        return ms(v), ms(b), ms(t)
    if gate == "error_rate":
        return share(v), share(b), share(t)
    if gate == "decision_delta":
        if g.get("p_value") is None and b == 0.0 and v is not None:
            return f"{num(v, '.2f')} pp differ", "(paired)", f"{num(t, 'g')} pp"
        delta = f" ({num(100 * (v - b), '+.1f')} pp)" if isinstance(v, float) and isinstance(b, float) else ""
        return ("-" if v is None else f"{share(v)} positive{delta}"), share(b), f"+-{num(t, 'g')} pp"
    if gate == "score_shift":
        return ("-" if v is None else f"PSI {num(v, '.3f')}"), "-", f"PSI {num(t, 'g')}"
    spec = ".0f" if gate == "policy_violations" else ".4g"
    return num(v, spec), num(b, spec), num(t, "g")


def tripwire_line(ctl: Mapping[str, Any]) -> str:
    t = ctl.get("tripwire") or {}
    if not t:
        return "trip-wire -"
    state = "TRIPPED" if t.get("tripped") else "armed" if t.get("armed") else "off (no candidate traffic)"
    sprt = (
        f"SPRT llr {num(t.get('llr'), '.1f')}/{num(t.get('upper'), '.1f')}"
        if t.get("sprt_active")
        else "SPRT off"
    )
    return (
        f"trip-wire {state}: {sprt}, {t.get('consecutive', 0)} failures in a row, "
        f"baseline fails <= {share(t.get('baseline_rate'))}"
    )


def timeline_cells(r: TimelineRow) -> tuple[str, str, str, str, str, str]:
    """time, offset, action (``HOLD x3`` for a run), actor, weight, reason."""
    action = r.action if r.count == 1 else f"{r.action} x{r.count}"
    weight = "-" if r.weight is None else f"{r.weight:g}%"
    return r.clock, f"+{num(r.offset, '.1f')}s", action, r.actor, weight, r.reason


def timeline_lines(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    lines = []
    for r in timeline(entries):
        clock, offset, action, actor, weight, reason = timeline_cells(r)
        lines.append(f"  {clock} {offset:>7} {action:<9} by {actor:<10} {weight:>5}  {reason}")
    return lines


def step_lines(entries: Iterable[Mapping[str, Any]], versions: tuple[str, str]) -> list[str]:
    """The controller's evidence for each step it finished, as logged with the deciding decision."""
    steps = step_evidence(entries)
    if not steps:
        return []
    lines = [
        "the controller's evidence per step (upstream attempts; logged with the decision that ended it):"
    ]
    for label, window in steps:
        cells = []
        for role, version in zip(("baseline", "candidate"), versions, strict=True):
            w = window.get(role) or {}
            p95 = ms((w.get("latency_ms") or {}).get("p95"))
            cells.append(f"{version} {w.get('requests', 0)} requests {w.get('failures', 0)} failed p95 {p95}")
        lines.append(f"  {label:<7} {num(window.get('seconds'), '5.1f')}s  " + "  |  ".join(cells))
    return lines


def outcome_lines(scenario: Scenario, oc: Outcome | None, *, timed_out: bool, bound: float) -> list[str]:
    """The outcome, its cause and reason, the time it took, and whether the scenario expected it."""
    wanted = "promoted" if scenario.expect == "promoted" else f"rolled back on {' or '.join(scenario.causes)}"
    if oc is None:
        return [f"outcome: none (the run stopped before it was read; expected {wanted})"]
    took = "" if oc.seconds is None else f" after {oc.seconds:.1f}s"
    by = f" by {oc.actor}" if oc.actor else ""
    cause = f" on {', '.join(oc.causes)}" if oc.causes and oc.phase == "rolled_back" else ""
    verdict = "as expected" if oc.as_expected(scenario) else f"NOT as expected: {wanted}"
    lines = [f"outcome: {oc.label}{took}{by}{cause} ({verdict})", f"  reason: {oc.reason or '-'}"]
    if timed_out:
        lines.append(f"  the rollout had not ended when --duration ({bound:g}s) ran out")
    return lines
