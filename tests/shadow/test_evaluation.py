"""The shadow evaluation aggregate (proxy/shadow/evaluation.py) against known truths.

Scores come from a logistic model, score = sigmoid(L + drift) with L ~ N(mu, sigma^2) per request, so the
truth is analytic: the decision (score >= 0.5) flips between baseline and candidate exactly when
-drift <= L < 0, an expected divergence of Phi(-mu/sigma) - Phi((-drift - mu)/sigma). All draws are
seeded; statistical checks state their tolerance (4.5 standard errors where a share is checked).
"""

from __future__ import annotations

import math
import random
import re
import uuid
from typing import Any

import orjson
import pytest

from proxy.shadow.compare import Answer, NoiseLearner, PairResult, compare
from proxy.shadow.evaluation import ShadowEvaluation
from proxy.stats.inference import kolmogorov_sf, ks_2samp, psi

NOW = "2025-01-01T00:00:00.000Z"
SIGMA = 1.5


def phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def expected_divergence(drift: float, mu: float = 0.0, sigma: float = SIGMA) -> float:
    return phi(-mu / sigma) - phi((-drift - mu) / sigma)


class Model:
    def __init__(self, version: str, drift: float, rng: random.Random) -> None:
        self.version, self.drift, self.rng = version, drift, rng
        self.clock_ms = 1_700_000_000_000

    def answer(self, logit: float, latency: float) -> Answer:
        self.clock_ms += 7
        score = 1 / (1 + math.exp(-(logit + self.drift)))
        body = {
            "score": score,
            "decision": score >= 0.5,
            "model_version": self.version,
            "prediction_id": uuid.UUID(int=self.rng.getrandbits(128), version=4).hex,
            "served_at": self.clock_ms,
        }
        return Answer(
            status=200, doc=body, schema_valid=True, latency_s=latency, score=score, decision=score >= 0.5
        )


def simulate(
    drift: float,
    *,
    n: int = 5000,
    seed: int = 42,
    segments: dict[str, float] | None = None,
    noise_every: int = 10,
    masker: Any = None,
) -> ShadowEvaluation:
    rng = random.Random(seed)
    base, cand = Model("v1", 0.0, rng), Model("v2", drift, rng)
    kwargs: dict[str, Any] = {} if masker is None else {"example_masker": masker}
    ev = ShadowEvaluation(route="infer", decision_threshold=0.5, seed=seed, **kwargs)
    names = list(segments or {"": 0.0})
    for i in range(n):
        segment = names[i % len(names)]
        mu = (segments or {"": 0.0})[segment]
        logit = rng.gauss(mu, SIGMA)
        b = base.answer(logit, rng.lognormvariate(math.log(0.020), 0.3))
        c = cand.answer(logit, rng.lognormvariate(math.log(0.030), 0.3))
        ev.add_pair(b, c, compare(b, c), segment or None)
        if i % noise_every == 0:
            first, second = base.answer(logit, 0.02), base.answer(logit, 0.02)
            r = compare(first, second)
            ev.add_noise(first, second, r.fields, r.present)
    return ev


def test_paired_divergence_interval_contains_the_truth() -> None:
    drift = 0.4
    report = simulate(drift).report(NOW)
    truth = 100 * expected_divergence(drift)  # ~10.6 pp
    div = report["decision_divergence_pp"]
    lo, hi = div["ci95"]
    assert report["compared"] == report["pairs_total"] == 5000
    assert lo <= truth <= hi, (truth, div)
    assert hi - lo < 2.0  # n = 5000 gives about +-0.85 pp
    rates = report["decision_rate"]
    assert rates["candidate"] - rates["baseline"] == pytest.approx(
        div["value"] / 100, abs=1e-5
    )  # only flips up
    assert report["score_delta"]["n"] == 5000 and report["score_delta"]["mean"] > 0
    assert (
        0 < report["score_delta"]["p50"] <= report["score_delta"]["p95"] <= report["score_delta"]["abs_p95"]
    )


def test_divergence_interval_covers_the_truth_95_percent_of_the_time() -> None:
    misses = 0
    for drift in (-0.8, 0.15, 1.0):
        truth = 100 * abs(expected_divergence(drift))
        for seed in range(30):
            lo, hi = simulate(drift, n=500, seed=seed, noise_every=10**9).report(NOW)[
                "decision_divergence_pp"
            ]["ci95"]
            misses += not lo <= truth <= hi
    # 90 intervals at 95%: 4.5 misses expected; P(misses >= 12) = 0.002 for a correct interval.
    assert misses <= 11, misses


def test_a_a_shows_no_shift() -> None:
    report = simulate(0.0).report(NOW)
    assert report["decision_divergence_pp"]["value"] == 0.0
    shift = report["distribution_shift"]
    # The two reservoirs are different random subsets of the same pairs.
    assert shift["psi"] < 0.01
    assert shift["ks"]["p_value"] > 0.2
    assert shift["psi_bins"] == 10 and shift["sample"] == 4096
    assert report["score_delta"]["abs_p95"] == 0.0


def test_a_big_drift_shows_a_big_shift() -> None:
    shift = simulate(1.5).report(NOW)["distribution_shift"]
    assert shift["psi"] > 0.1
    assert shift["ks"]["p_value"] < 0.01
    assert shift["ks"]["statistic"] > 0.1


def test_fields_are_classified_real_and_noise_with_masked_bounded_examples() -> None:
    def masker(text: str) -> str:
        return re.sub(r"[0-9a-f]{32}", "<id>", text)

    report = simulate(0.3, n=1000, masker=masker).report(NOW)
    fields = report["fields"]
    real = {e["field"]: e for e in fields["real"]}
    noise = {e["field"]: e for e in fields["noise"]}
    assert set(real) >= {"/score", "/model_version"}
    assert set(noise) == {"/prediction_id", "/served_at"}
    assert real["/score"]["candidate_rate"] == 1.0 and real["/score"]["noise_rate"] == 0.0
    assert real["/model_version"]["examples"] == ['"v1" -> "v2"'] * 3
    for entry in [*fields["real"], *fields["noise"]]:
        assert 1 <= len(entry["examples"]) <= 3
        assert all(len(x) <= 120 for x in entry["examples"])
    assert noise["/prediction_id"]["examples"] == ['"<id>" -> "<id>"'] * 3
    assert fields["omitted"] == {"real": 0, "noise": 0, "undecided": 0}


def test_a_masker_that_fails_drops_examples() -> None:
    def broken(text: str) -> str:
        raise RuntimeError("detector crashed")

    report = simulate(0.3, n=1000, masker=broken).report(NOW)
    fields = report["fields"]
    # The fields are still found and classified as with a working masker (two real, two noise, one
    # undecided); what the masker could not clean goes: every example, and the field names themselves.
    assert [len(fields[k]) for k in ("real", "noise", "undecided")] == [2, 2, 1]
    entries = fields["real"] + fields["noise"] + fields["undecided"]
    assert all(e["examples"] == [] and e["field"] == "<masked:error>" for e in entries), entries


def test_long_examples_are_truncated_to_120_characters() -> None:
    ev = ShadowEvaluation(route="r", decision_threshold=0.5)
    b = Answer(status=200, doc={"text": "a" * 5000}, latency_s=0.01)
    c = Answer(status=200, doc={"text": "b" * 5000}, latency_s=0.01)
    ev.add_pair(b, c, compare(b, c), None)
    (entry,) = ev.report(NOW)["fields"]["undecided"]
    (example,) = entry["examples"]
    assert len(example) == 120 and example.startswith('"aaa') and ' -> "bbb' in example


def test_per_segment_decision_rates() -> None:
    segments = {"eu": -0.6, "us": 0.6, "br": 0.0}
    drift = 0.5
    report = simulate(drift, n=6000, segments=segments).report(NOW)
    by_name = {s["segment"]: s for s in report["segments"]}
    assert set(by_name) == set(segments)  # three segments < top_n: no "other"
    for name, mu in segments.items():
        s = by_name[name]
        assert s["count"] == s["compared"] == 2000 and s["other"] is False
        for key, d in (("baseline_decision_rate", 0.0), ("candidate_decision_rate", drift)):
            p = 1 - phi((-d - mu) / SIGMA)
            se = math.sqrt(p * (1 - p) / 2000)
            assert abs(s[key] - p) <= 4.5 * se, (name, key, s[key], p)
        lo, hi = s["divergence_ci95_pp"]
        assert lo <= 100 * expected_divergence(drift, mu) <= hi


def decisions_by_segment(
    rates: dict[str, float], shifts: dict[str, float], *, per_segment: int, seed: int, churn: float = 0.0
) -> ShadowEvaluation:
    """Pairs in random order: segment ``s`` says yes at ``rates[s]`` under the baseline; the candidate
    flips a no to yes (a positive shift) or a yes to no (a negative one) so its rate moves by
    ``shifts[s]``. ``churn`` adds flips both ways that leave the rate where it was (a retrained model
    that decides differently on a share of requests without favouring anyone)."""
    rng = random.Random(seed)
    ev = ShadowEvaluation(route="infer", decision_threshold=0.5, seed=seed)
    order = [name for name in rates for _ in range(per_segment)]
    rng.shuffle(order)
    for name in order:
        rate, shift = rates[name], shifts.get(name, 0.0)
        base = rng.random() < rate
        if shift >= 0:
            cand = base or rng.random() < shift / (1 - rate)
        else:
            cand = base and rng.random() >= -shift / rate
        if churn and rng.random() < churn:
            # yes -> no for a share `churn` of the yeses; no -> yes for as many of the noes.
            moved = rate + shift
            cand = not cand if (cand or rng.random() < moved / (1 - moved)) else cand
        b = Answer(status=200, doc={"decision": base}, latency_s=0.01, decision=base)
        c = Answer(status=200, doc={"decision": cand}, latency_s=0.01, decision=cand)
        ev.add_pair(b, c, compare(b, c), name)
    return ev


REGION_RATES = {"br-se": 0.25, "br-ne": 0.40, "br-s": 0.20, "us-east": 0.15, "eu-west": 0.30}


def test_fairness_names_the_one_group_the_candidate_moves() -> None:
    shifts = {name: 0.03 for name in REGION_RATES} | {"br-ne": -0.15}  # all +3 points, br-ne -15
    report = decisions_by_segment(REGION_RATES, shifts, per_segment=600, seed=3, churn=0.05).report(NOW)
    by_name = {s["segment"]: s for s in report["segments"]}
    ne = by_name["br-ne"]
    lo, hi = ne["decision_rate_shift_ci95_pp"]
    assert lo <= -15.0 <= hi and hi < 0, ne
    rate_change = 100 * (ne["candidate_decision_rate"] - ne["baseline_decision_rate"])
    assert ne["decision_rate_shift_pp"] == pytest.approx(rate_change, abs=1e-3)
    fairness = report["fairness"]
    assert fairness["segments"] == 5 and fairness["min_compared"] == 30
    moved = fairness["most_moved"]
    assert moved["segment"] == "br-ne" and moved["compared"] == 600
    # Against the rest, which moved by about +3: a difference of about -18 points.
    low, high = moved["difference_ci95_pp"]
    assert low <= -18.0 <= high, moved
    assert moved["simultaneous_ci_pp"][0] < low and high < moved["simultaneous_ci_pp"][1]
    assert [f["segment"] for f in fairness["flagged"]] == ["br-ne"], fairness
    # br-ne had the highest rate (40%); moved to about 25%, the gap between regions narrows.
    gap = fairness["decision_rate_gap_pp"]
    assert gap["baseline"]["highest"] == "br-ne" and gap["candidate"]["highest"] != "br-ne"
    assert fairness["gap_change_pp"] < 0
    assert fairness["shift_spread_pp"] >= 10.0


@pytest.mark.parametrize("shift", [0.0, 0.05])
def test_fairness_flags_a_group_at_most_five_percent_of_the_time_when_all_move_alike(shift: float) -> None:
    # Every group moves by the same amount (none, or +5 points: a shift the overall divergence shows, not
    # a difference between groups), and 10% of decisions churn both ways; 8 groups are looked at
    # together, 150 seeded runs.
    rates = {f"region-{i}": 0.1 + 0.05 * i for i in range(8)}
    false_flags = 0
    runs = 150
    for seed in range(runs):
        ev = decisions_by_segment(rates, dict.fromkeys(rates, shift), per_segment=150, seed=seed, churn=0.1)
        false_flags += bool(ev.report(NOW)["fairness"]["flagged"])
    assert false_flags / runs <= 0.05 + 4.5 * math.sqrt(0.05 * 0.95 / runs), false_flags


def test_fairness_needs_two_groups_with_enough_pairs() -> None:
    few = decisions_by_segment({"a": 0.3, "b": 0.3}, {"a": 0.2}, per_segment=29, seed=1).report(NOW)
    assert few["fairness"] == {
        "min_compared": 30,
        "segments": 0,
        "decision_rate_gap_pp": None,
        "gap_change_pp": None,
        "most_moved": None,
        "shift_spread_pp": None,
        "flagged": [],
    }
    report = decisions_by_segment({"a": 0.3, "b": 0.3, "c": 0.3}, {}, per_segment=40, seed=1).report(NOW)
    assert report["fairness"]["segments"] == 3


def test_errors_statuses_schema_and_latency() -> None:
    ev = ShadowEvaluation(route="infer", decision_threshold=0.5)
    good = Answer(status=200, doc={"score": 0.7}, schema_valid=True, latency_s=0.020, score=0.7)
    for _ in range(90):
        ev.add_pair(good, good, compare(good, good), None)
    timeout = Answer(status=504, latency_s=2.0, error="timeout")
    five = Answer(status=500, doc={"error": "x"}, latency_s=0.01, error="http_5xx")
    bad = Answer(status=200, doc={"score": "high"}, schema_valid=False, latency_s=0.03)
    for cand in [timeout] * 5 + [five] * 3 + [bad] * 2:
        ev.add_pair(good, cand, compare(good, cand), None)
    report = ev.report(NOW)
    assert report["pairs_total"] == 100
    assert report["compared"] == 90  # decisions derived from score >= threshold where no decision is given
    assert report["decision_rate"] == {"baseline": 1.0, "candidate": 1.0}
    assert report["errors"] == {"baseline": {}, "candidate": {"http_5xx": 3, "timeout": 5}}
    assert report["status_mismatches"] == 8
    assert report["status_mismatch_pairs"] == {"200->500": 3, "200->504": 5}
    assert report["schema_violations"] == {"baseline": 0, "candidate": 2}
    lat = report["latency_ms"]
    assert lat["baseline"]["count"] == 100 and lat["candidate"]["count"] == 92  # errors carry no latency
    assert lat["baseline"]["p50"] == pytest.approx(20.0, rel=0.01)
    assert lat["candidate"]["p99"] == pytest.approx(30.0, rel=0.01)
    assert report["generated_at"] == NOW and report["route"] == "infer"


def test_empty_report_is_serialisable() -> None:
    report = ShadowEvaluation(route="infer", decision_threshold=0.5).report(NOW)
    assert orjson.loads(orjson.dumps(report)) == report
    assert report["decision_divergence_pp"] == {"value": None, "ci95": None}
    assert report["segments"] == [] and report["distribution_shift"]["psi"] is None
    assert list(report) == list(simulate(0.2, n=20).report(NOW))  # the same keys, full or empty


def test_report_stays_bounded_under_many_segments_and_random_fields() -> None:
    rng = random.Random(99)
    learner = NoiseLearner()
    ev = ShadowEvaluation(route="infer", decision_threshold=0.5, segment_top_n=10, noise=learner)
    segments = [f"tenant-{i}" for i in range(10_000)]
    heavy = segments[:5]
    for i in range(100_000):
        score = rng.random()
        b = Answer(status=200, doc=None, latency_s=0.01, score=score, decision=score >= 0.5)
        c = Answer(status=200, doc=None, latency_s=0.02, score=score, decision=score >= 0.5)
        name = f"/f{rng.getrandbits(40):x}"
        result = PairResult(
            status_match=True,
            both_ok=True,
            schema_valid=None,
            score_delta=0.0,
            decision_match=True,
            fields=frozenset({name}),
            latency_delta_s=0.01,
            present=frozenset({name, "/score"}),
            examples=((name, "x" * 200, rng.random()),),
        )
        segment = rng.choice(heavy) if i % 2 else rng.choice(segments)
        ev.add_pair(b, c, result, segment)
    report = ev.report(NOW)
    encoded = orjson.dumps(report)
    assert len(encoded) < 64_000, len(encoded)
    assert len(learner.fields()) <= 513
    seg = report["segments"]
    assert len(seg) == 11 and seg[-1]["other"] is True
    assert {s["segment"] for s in seg[:5]} == set(heavy)
    assert sum(s["count"] for s in seg) == 100_000
    fields = report["fields"]
    assert all(len(fields[k]) <= 50 for k in ("real", "noise", "undecided"))
    listed = sum(fields["omitted"].values()) + sum(len(fields[k]) for k in ("real", "noise", "undecided"))
    assert listed == 512  # every tracked name but /score, which never differed


# -- the statistics themselves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lam", "p"),
    # The classic table of critical values (Smirnov 1948) and K(1) = 0.7300.
    [(1.0727, 0.20), (1.2238, 0.10), (1.3581, 0.05), (1.4802, 0.025), (1.6276, 0.01), (1.0, 0.2700)],
)
def test_kolmogorov_survival_function(lam: float, p: float) -> None:
    assert kolmogorov_sf(lam) == pytest.approx(p, abs=1e-4)


def test_kolmogorov_survival_function_is_monotone_and_continuous() -> None:
    grid = [i / 1000 for i in range(1, 4000)]
    values = [kolmogorov_sf(x) for x in grid]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert all(abs(a - b) < 2e-3 for a, b in zip(values, values[1:], strict=False))  # |slope| < 2
    assert (
        kolmogorov_sf(0.0) == 1.0 and kolmogorov_sf(0.2) == pytest.approx(1.0) and kolmogorov_sf(5.0) < 1e-20
    )


def test_ks_statistic_with_ties_and_disjoint_samples() -> None:
    assert ks_2samp([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])[0] == 1.0
    assert ks_2samp([1.0, 1.0, 2.0], [1.0, 2.0, 2.0])[0] == pytest.approx(1 / 3)
    d, p = ks_2samp([float(i) for i in range(100)], [float(i) for i in range(100)])
    assert d == 0.0 and p == 1.0


def test_psi_of_a_known_shift() -> None:
    base = [i / 1000 for i in range(1000)]
    assert psi(base, base) == (0.0, 10)
    shifted = sorted(x + 0.1 for x in base)  # one decile moves up: the first bin empties
    value, bins = psi(base, shifted)
    expected = (1e-4 - 0.1) * math.log(1e-4 / 0.1) + (0.2 - 0.1) * math.log(0.2 / 0.1)
    assert bins == 10 and value == pytest.approx(expected, rel=1e-3)
