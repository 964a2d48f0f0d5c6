"""The shadow evaluation of one route: the aggregate behind ``shadow_eval.json``.

Pure: no I/O and no clock (the caller passes ``now`` to :meth:`ShadowEvaluation.report`). Memory is fixed
at construction whatever the traffic: score and delta samples are reservoirs, latencies are log
histograms, segments are a space-saving top-k with per-segment counters for the tracked ones only, field
statistics are capped by the noise learner, examples are a few short masked strings per tracked field,
and error kinds and status pairs are capped dictionaries.

Statistics, one line each:

- decision divergence (paired): k/n over compared pairs whose decisions differ, Wilson 95% interval;
- score delta: exact streaming mean (Welford), quantiles on a uniform sample of deltas;
- latency ratio (paired): Welford mean and variance of ln(candidate / baseline latency) over pairs both
  answered; the shadow gate turns them into a confidence sequence for the per-request slowdown;
- per-segment shift: Newcombe's paired interval for the difference of the two decision rates;
- PSI = sum_i (q_i - p_i) ln(q_i / p_i) over 10 bins cut at the baseline sample's deciles;
- KS: D = sup_x |F_base(x) - F_cand(x)| on the two samples, p = Q_KS((sqrt(ne) + 0.12 + 0.11/sqrt(ne)) D)
  with ne = nm/(n+m) (Stephens' approximation, as in Numerical Recipes' ``kstwo``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import orjson

from proxy.content.contracts import MISSING
from proxy.shadow.compare import OVERFLOW, Answer, NoiseLearner, PairResult
from proxy.stats.inference import (
    difference_interval,
    ks_2samp,
    paired_shift_interval,
    psi,
    wilson_interval,
    z_upper,
)
from proxy.stats.sketches import LogHistogram, Moments, Reservoir, TopK, quantile_sorted

ROLES: Final = ("baseline", "candidate")
EXAMPLES_PER_FIELD: Final = 3
EXAMPLE_CHARS: Final = 120
SAMPLE_SIZE: Final = 4096
PSI_MIN_SAMPLE: Final = 100  # scores per version before PSI and KS are reported
MAX_KINDS: Final = 32  # distinct error kinds / status pairs kept per table; the rest count as "other"
LATENCY_FLOOR_S: Final = 1e-4  # latencies are floored at 0.1 ms in the paired ratio (ln of 0 is not a number)
FAIRNESS_MIN_COMPARED: Final = 30  # compared pairs before a segment's rate counts in the fairness spot-check
MAX_LABEL_CHARS: Final = 128  # segment labels and error kinds are clipped: memory must not follow input sizes


def identity(text: str) -> str:
    return text


def _sig(x: float | None, digits: int = 6) -> float | None:
    """Round to significant digits so reports are readable and diff cleanly; None and non-finite -> None."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _bump(table: dict[str, int], key: str) -> None:
    key = key[:MAX_LABEL_CHARS]
    if key not in table and len(table) >= MAX_KINDS:
        key = "other"
    table[key] = table.get(key, 0) + 1


def _pp_interval(k: int, n: int) -> list[float | None] | None:
    if n == 0:
        return None
    lo, hi = wilson_interval(k, n)
    return [_sig(100 * lo), _sig(100 * hi)]


@dataclass(slots=True)
class _SegmentStats:
    pairs: int = 0
    compared: int = 0
    baseline_positive: int = 0
    candidate_positive: int = 0
    diverged: int = 0

    def merge(self, other: _SegmentStats) -> None:
        self.pairs += other.pairs
        self.compared += other.compared
        self.baseline_positive += other.baseline_positive
        self.candidate_positive += other.candidate_positive
        self.diverged += other.diverged

    def table(self) -> tuple[int, int, int, int]:
        """The paired 2x2 table: (both positive, baseline only, candidate only, neither). The counters
        determine it: diverged = baseline only + candidate only, and the two rates' difference is their
        difference."""
        up = (self.diverged + self.candidate_positive - self.baseline_positive) // 2
        down = self.diverged - up
        both = self.baseline_positive - down
        return both, down, up, self.compared - both - down - up

    def rate(self, role: str) -> float:
        positive = self.baseline_positive if role == "baseline" else self.candidate_positive
        return positive / self.compared if self.compared else 0.0

    def shift(self) -> float:
        """The candidate's decision rate minus the baseline's, as a share (0 with no compared pair)."""
        return (self.candidate_positive - self.baseline_positive) / self.compared if self.compared else 0.0

    def shift_interval_pp(self, z: float = 1.96) -> list[float | None] | None:
        """The candidate's decision rate minus the baseline's on the same requests, in points (paired)."""
        if self.compared == 0:
            return None
        lo, hi = paired_shift_interval(*self.table(), z=z)
        return [_sig(100 * lo), _sig(100 * hi)]

    def report(self) -> dict[str, Any]:
        n = self.compared
        return {
            "count": self.pairs,
            "compared": n,
            "baseline_decision_rate": _sig(self.rate("baseline")) if n else None,
            "candidate_decision_rate": _sig(self.rate("candidate")) if n else None,
            "decision_rate_shift_pp": _sig(100 * self.shift()) if n else None,
            "decision_rate_shift_ci95_pp": self.shift_interval_pp(),
            "divergence_pp": _sig(100 * self.diverged / n) if n else None,
            "divergence_ci95_pp": _pp_interval(self.diverged, n),
        }


def _moved(
    label: str, segment: _SegmentStats, reference: tuple[str, _SegmentStats], z: float
) -> dict[str, Any]:
    """One segment's paired shift against a reference segment's: disjoint requests, so the two intervals
    combine as independent estimates (:func:`proxy.stats.inference.difference_interval`)."""
    ref_label, ref = reference
    shift, ref_shift = segment.shift(), ref.shift()

    def interval(at: float) -> list[float | None]:
        own = paired_shift_interval(*segment.table(), z=at)
        theirs = paired_shift_interval(*ref.table(), z=at)
        low, high = difference_interval(shift, own, ref_shift, theirs)
        return [_sig(100 * low), _sig(100 * high)]

    return {
        "segment": label,
        "compared": segment.compared,
        "shift_pp": _sig(100 * shift),
        "reference": ref_label,
        "reference_shift_pp": _sig(100 * ref_shift),
        "difference_pp": _sig(100 * (shift - ref_shift)),
        "difference_ci95_pp": interval(1.96),
        "simultaneous_ci_pp": interval(z),
    }


class ShadowEvaluation:
    """Everything ``shadow_eval.json`` says about one route, accumulated pair by pair.

    Pairs count toward ``compared`` (and the decision figures) when both answers are ok and both have a
    decision; an answer without ``decision`` but with ``score`` decides ``score >= decision_threshold``.
    Score figures use pairs where both are ok and scored; latencies use answers without an upstream error;
    field statistics come from ok pairs (see :func:`proxy.shadow.compare.compare`). ``segment`` None means the
    pair has no segment: it counts everywhere except in ``segments``. ``example_masker`` (the PII masker's
    text masking) sees every example before it is kept and every field name reported; if it raises, the
    example is dropped, never kept raw. ``value_masker(pointer, value)`` (the masker's ``mask_at``), when
    given, masks an example's values as the masker masks that place of a document, so configured
    ``json_fields`` and credential-named keys are pseudonymised whole. Segment labels arrive masked.
    ``noise`` overrides the default :class:`NoiseLearner`; ``report_fields`` caps each field list.
    ``compat`` names the route's compat schemas, reported (``compat``) at zero until an answer is checked.
    """

    def __init__(
        self,
        *,
        route: str,
        decision_threshold: float,
        segment_top_n: int = 10,
        example_masker: Callable[[str], str] = identity,
        value_masker: Callable[[str, Any], Any] | None = None,
        seed: int = 0,
        noise: NoiseLearner | None = None,
        report_fields: int = 50,
        compat: Iterable[str] = (),
    ) -> None:
        self.route = route
        self.decision_threshold = decision_threshold
        self.segment_top_n = segment_top_n
        self.report_fields = report_fields
        self._mask = example_masker
        self._mask_value = value_masker
        self._names: dict[str, str] = {}  # field name -> its masked form (field names repeat)
        seeds = random.Random(seed)
        self._rng = random.Random(seeds.getrandbits(64))
        self._pairs = 0
        self._noise_pairs = 0
        self._compared = 0
        self._diverged = 0
        self._positive = dict.fromkeys(ROLES, 0)
        self._delta = Moments()
        # ln(candidate / baseline latency) per pair with both answered: the same request at the same
        # moment, so what slows both (the host, the network, a brownout) cancels out of the ratio.
        self._log_latency_ratio = Moments()
        self._delta_sample = Reservoir(SAMPLE_SIZE, seed=seeds.getrandbits(64))
        self._scores = {role: Reservoir(SAMPLE_SIZE, seed=seeds.getrandbits(64)) for role in ROLES}
        self._latency = {role: LogHistogram() for role in ROLES}
        self._errors: dict[str, dict[str, int]] = {role: {} for role in ROLES}
        self._schema_violations = dict.fromkeys(ROLES, 0)
        # compat schema name -> [candidate answers checked, those that broke it]; names from the config
        self._compat: dict[str, list[int]] = {name: [0, 0] for name in compat}
        self._status_mismatches = 0
        self._status_pairs: dict[str, int] = {}
        self._noise = noise if noise is not None else NoiseLearner()
        self._examples: dict[str, list[str]] = {}
        self._example_seen: dict[str, int] = {}
        # Capacity well above top_n so the reported top segments are the true heavy hitters.
        self._segments = TopK(max(64, 16 * segment_top_n))
        self._segment_stats: dict[str, _SegmentStats] = {}
        self._segment_other = _SegmentStats()

    def _decision(self, answer: Answer) -> bool | None:
        if answer.decision is not None:
            return answer.decision
        if answer.score is not None:
            return answer.score >= self.decision_threshold
        return None

    def add_pair(self, baseline: Answer, candidate: Answer, result: PairResult, segment: str | None) -> None:
        """One mirrored request: the baseline's answer (the client's), the candidate's, their comparison."""
        self._pairs += 1
        for role, answer in zip(ROLES, (baseline, candidate), strict=True):
            if answer.error is not None:
                _bump(self._errors[role], answer.error)
            elif math.isfinite(answer.latency_s):
                self._latency[role].add(answer.latency_s)
            if answer.schema_valid is False:
                self._schema_violations[role] += 1
        if baseline.error is None and candidate.error is None:
            b_s, c_s = baseline.latency_s, candidate.latency_s
            if math.isfinite(b_s) and math.isfinite(c_s):
                self._log_latency_ratio.add(math.log(max(c_s, LATENCY_FLOOR_S) / max(b_s, LATENCY_FLOOR_S)))
        if not result.status_match:
            self._status_mismatches += 1
            _bump(self._status_pairs, f"{baseline.status}->{candidate.status}")

        b_dec = self._decision(baseline) if result.both_ok else None
        c_dec = self._decision(candidate) if result.both_ok else None
        compared = b_dec is not None and c_dec is not None
        if compared:
            self._compared += 1
            self._positive["baseline"] += bool(b_dec)
            self._positive["candidate"] += bool(c_dec)
            self._diverged += b_dec != c_dec
        if result.both_ok and baseline.score is not None and candidate.score is not None:
            delta = candidate.score - baseline.score
            if math.isfinite(delta):
                self._delta.add(delta)
                self._delta_sample.add(delta)
                self._scores["baseline"].add(baseline.score)
                self._scores["candidate"].add(candidate.score)
        if result.both_ok:
            self._noise.observe_pair(result.fields, result.present)
            for name, a, b in result.examples:
                self._keep_example(name, a, b)
        if segment is not None:
            segment = segment[:MAX_LABEL_CHARS]
            evicted = self._segments.add(segment)
            if evicted is not None:
                self._segment_other.merge(self._segment_stats.pop(evicted))
            stats = self._segment_stats.setdefault(segment, _SegmentStats())
            stats.pairs += 1
            if compared:
                stats.compared += 1
                stats.baseline_positive += bool(b_dec)
                stats.candidate_positive += bool(c_dec)
                stats.diverged += b_dec != c_dec

    def add_noise(self, first: Answer, second: Answer, fields: Iterable[str], present: Iterable[str]) -> None:
        """The baseline's two answers to one noise-sampled request, and the fields that differed/existed."""
        self._noise_pairs += 1
        if first.ok and second.ok:
            self._noise.observe_noise(fields, present)

    def add_compat(self, checked: Iterable[str], breached: Iterable[str]) -> None:
        """One mirrored candidate answer checked against the compat schemas named in ``checked``, of which
        it broke those in ``breached``. Only the candidate's answers are checked; the baseline's never."""
        for name in checked:
            counts = self._compat.get(name)
            if counts is None:
                if len(self._compat) >= MAX_KINDS:
                    continue  # names come from the config (16 a route); only reloads could add more
                counts = self._compat[name] = [0, 0]
            counts[0] += 1
        for name in breached:
            if name in self._compat:
                self._compat[name][1] += 1

    def _compat_report(self) -> dict[str, dict[str, int]]:
        return {name: {"checked": c, "violations": v} for name, (c, v) in sorted(self._compat.items())}

    def _keep_example(self, name: str, a: Any, b: Any) -> None:
        key = self._noise.key(name)
        seen = self._example_seen.get(key, 0) + 1
        self._example_seen[key] = seen
        kept = self._examples.setdefault(key, [])
        # Reservoir of EXAMPLES_PER_FIELD per field: render (and mask) only what is kept.
        slot = len(kept) if len(kept) < EXAMPLES_PER_FIELD else self._rng.randrange(seen)
        if slot >= EXAMPLES_PER_FIELD:
            return
        example = self._render_example(name, key == OVERFLOW, a, b)
        if example is None:
            return
        if slot == len(kept):
            kept.append(example)
        else:
            kept[slot] = example

    def _render_example(self, name: str, overflow: bool, a: Any, b: Any) -> str | None:
        try:
            if self._mask_value is not None:
                left, right = _render(self._mask_value(name, a)), _render(self._mask_value(name, b))
            else:
                left, right = self._mask(_render(a)), self._mask(_render(b))
            if overflow:  # a field counted under OVERFLOW: its own name tells which one
                left = f"{self._masked_name(name)}: {left}"
        except Exception:  # what cannot be masked is dropped, never kept raw
            return None
        return _fit(left, right, EXAMPLE_CHARS)

    def _masked_name(self, name: str) -> str:
        """A response field's pointer as reported: each segment masked (a key may be personal data)."""
        masked = self._names.get(name)
        if masked is None:
            try:
                masked = "/".join(self._mask(part) if part else part for part in name.split("/"))
            except Exception:  # never raw
                masked = "<masked:error>"
            if len(self._names) < 4096:  # bounded: the noise learner caps the fields anyway
                self._names[name] = masked
        return masked

    def report(self, now: str) -> dict[str, Any]:
        """The ``shadow_eval.json`` document; ``now`` becomes ``generated_at``. JSON-serialisable."""
        n = self._compared
        div = self._diverged
        return {
            "route": self.route,
            "generated_at": now,
            "decision_threshold": self.decision_threshold,
            "pairs_total": self._pairs,
            "compared": n,
            "noise_pairs": self._noise_pairs,
            "decision_divergence_pp": {
                "value": _sig(100 * div / n) if n else None,
                "ci95": _pp_interval(div, n),
            },
            "decision_rate": {role: _sig(self._positive[role] / n) if n else None for role in ROLES},
            "score_delta": self._score_delta_report(),
            "distribution_shift": self._shift_report(),
            "fields": self._fields_report(),
            "segments": self._segments_report(),
            "fairness": self._fairness_report(),
            "latency_ms": {role: self._latency_report(self._latency[role]) for role in ROLES},
            "latency_ratio": self._latency_ratio_report(),
            "errors": {role: dict(sorted(self._errors[role].items())) for role in ROLES},
            "status_mismatches": self._status_mismatches,
            "status_mismatch_pairs": dict(sorted(self._status_pairs.items())),
            "schema_violations": dict(self._schema_violations),
            "compat": self._compat_report(),  # the candidate's mirrored answers vs routes[].compat_schemas
            # Guardrail policies arrive with LLM routes; none is configured yet.
            "policy_violations": dict.fromkeys(ROLES, 0),
        }

    def _latency_ratio_report(self) -> dict[str, Any]:
        """The paired latency ratio: ``geomean`` = exp(mean of ln(candidate / baseline)) over ``pairs``,
        with the log ratios' mean and standard deviation, from which the shadow gate builds its bound."""
        m = self._log_latency_ratio
        if m.count == 0:
            return {"pairs": 0, "geomean": None, "log_mean": None, "log_sd": None}
        return {
            "pairs": m.count,
            "geomean": _sig(math.exp(m.mean)),
            "log_mean": _sig(m.mean),
            "log_sd": _sig(math.sqrt(m.sample_variance)),
        }

    def _score_delta_report(self) -> dict[str, Any]:
        sample = self._delta_sample.sorted_values()
        if not sample:
            return {"n": 0, "mean": None, "p50": None, "p95": None, "abs_p95": None}
        abs_sorted = sorted(abs(x) for x in sample)
        return {
            "n": self._delta.count,
            "mean": _sig(self._delta.mean),
            "p50": _sig(quantile_sorted(sample, 0.5)),
            "p95": _sig(quantile_sorted(sample, 0.95)),
            "abs_p95": _sig(quantile_sorted(abs_sorted, 0.95)),
        }

    def _shift_report(self) -> dict[str, Any]:
        base = self._scores["baseline"].sorted_values()
        cand = self._scores["candidate"].sorted_values()
        if len(base) < PSI_MIN_SAMPLE or len(cand) < PSI_MIN_SAMPLE:
            # Deciles of a few dozen scores make PSI swing wildly (0.9 on identical models); say nothing yet.
            empty = {"statistic": None, "p_value": None}
            return {"psi": None, "psi_bins": None, "ks": empty, "sample": min(len(base), len(cand))}
        value, bins = psi(base, cand)
        d, p = ks_2samp(base, cand)
        return {
            "psi": _sig(value),
            "psi_bins": bins,
            "ks": {"statistic": _sig(d), "p_value": _sig(p)},
            "sample": min(len(base), len(cand)),
        }

    def _fields_report(self) -> dict[str, Any]:
        lists: dict[str, list[dict[str, Any]]] = {"real": [], "noise": [], "undecided": []}
        for name in self._noise.fields():
            r = self._noise.rates(name)
            if not r.pair_differences:
                continue  # never differed: nothing to report
            lists[self._noise.classify(name)].append(
                {
                    "field": self._masked_name(name),
                    "candidate_rate": _sig(r.candidate_rate),
                    "noise_rate": _sig(r.noise_rate),
                    "pairs": r.pairs,
                    "noise_pairs": r.noise_pairs,
                    "examples": list(self._examples.get(name, ())),
                }
            )
        out: dict[str, Any] = {}
        omitted: dict[str, int] = {}
        for verdict, entries in lists.items():
            entries.sort(key=lambda e: (-(e["candidate_rate"] or 0.0), -e["pairs"], e["field"]))
            out[verdict] = entries[: self.report_fields]
            omitted[verdict] = max(0, len(entries) - self.report_fields)
        out["omitted"] = omitted
        return out

    def _segments_report(self) -> list[dict[str, Any]]:
        shown = [label for label, _ in self._segments.top(self.segment_top_n)]
        out = [{"segment": label, "other": False, **self._segment_stats[label].report()} for label in shown]
        other = _SegmentStats()
        other.merge(self._segment_other)
        shown_set = set(shown)
        for label, stats in self._segment_stats.items():
            if label not in shown_set:
                other.merge(stats)
        if other.pairs:
            out.append({"segment": "other", "other": True, **other.report()})
        return out

    def _fairness_report(self) -> dict[str, Any]:
        """The spot-check across the tracked segments with at least :data:`FAIRNESS_MIN_COMPARED` compared
        pairs ("other" is a mix, never one group): how far apart the segments' decision rates are under
        each version, and whether the candidate moves one group's rate more than the rest's.

        A segment's *shift* is its paired rate change (candidate minus baseline on the same requests); its
        *difference* is that shift minus the shift of a reference: the median segment among the others (a
        robust reference, which one moved group cannot drag along as it drags a pooled "rest"). So a
        candidate that moves everybody alike, which the overall divergence already shows, flags no group.
        A segment is flagged when the Bonferroni-widened interval of its difference (each end at 2.5% / k
        for k segments) excludes 0, so with every group moving alike a flag is rare however many groups
        are looked at together (measured: tests/shadow/test_evaluation.py)."""
        shown = [label for label, _ in self._segments.top(self.segment_top_n)]
        judged = [(label, self._segment_stats[label]) for label in shown]
        judged = [(label, st) for label, st in judged if st.compared >= FAIRNESS_MIN_COMPARED]
        out: dict[str, Any] = {"min_compared": FAIRNESS_MIN_COMPARED, "segments": len(judged)}
        if len(judged) < 2:
            empty = ("decision_rate_gap_pp", "gap_change_pp", "most_moved", "shift_spread_pp")
            return {**out, **dict.fromkeys(empty), "flagged": []}
        z = z_upper(0.05 / (2 * len(judged)))
        gaps: dict[str, Any] = {}
        for role in ROLES:
            rates = sorted((st.rate(role), label) for label, st in judged)
            (low, low_label), (high, high_label) = rates[0], rates[-1]
            gaps[role] = {"value": _sig(100 * (high - low)), "highest": high_label, "lowest": low_label}
        by_shift = sorted(judged, key=lambda row: (row[1].shift(), row[0]))
        rows = []
        for label, st in judged:
            others = [row for row in by_shift if row[0] != label]
            rows.append(_moved(label, st, others[(len(others) - 1) // 2], z))
        shifts = [row["shift_pp"] for row in rows]
        flagged = [
            {k: row[k] for k in ("segment", "shift_pp", "reference", "difference_pp", "simultaneous_ci_pp")}
            for row in sorted(rows, key=lambda row: -abs(row["difference_pp"]))
            if row["simultaneous_ci_pp"][0] > 0 or row["simultaneous_ci_pp"][1] < 0
        ]
        return {
            **out,
            "decision_rate_gap_pp": gaps,
            "gap_change_pp": _sig(gaps["candidate"]["value"] - gaps["baseline"]["value"]),
            "most_moved": max(rows, key=lambda row: (abs(row["difference_pp"]), row["segment"])),
            "shift_spread_pp": _sig(max(shifts) - min(shifts)),
            "flagged": flagged,
        }

    @staticmethod
    def _latency_report(h: LogHistogram) -> dict[str, Any]:
        def ms(q: float) -> float | None:
            v = h.quantile(q)
            return None if v is None else _sig(1000 * v)

        return {"count": h.count, "p50": ms(0.5), "p95": ms(0.95), "p99": ms(0.99)}


def _render(value: Any) -> str:
    if value is MISSING:
        return "(missing)"
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    # Cut long values before masking (cost), far beyond what is shown so no cut token can surface.
    return text[:1024]


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _fit(left: str, right: str, limit: int) -> str:
    """``"left -> right"`` within ``limit`` characters, giving a short side's spare room to the other."""
    room = limit - len(" -> ")
    if len(left) + len(right) > room:
        half = room // 2
        if len(left) <= half:
            right = _truncate(right, room - len(left))
        elif len(right) <= half:
            left = _truncate(left, room - len(right))
        else:
            left, right = _truncate(left, half), _truncate(right, room - half)
    return f"{left} -> {right}"
