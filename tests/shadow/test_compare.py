"""Pair comparison and noise learning (proxy/shadow/compare.py): table-driven, plus a simulated model."""

from __future__ import annotations

import math
import random
import uuid
from typing import Any

import pytest

from proxy.content.contracts import MISSING
from proxy.shadow.compare import (
    OVERFLOW,
    Answer,
    NoiseLearner,
    compare,
    diff_fields,
    field_differences,
    flatten,
)
from proxy.stats.inference import wilson_interval

# -- flatten ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"a": 1, "b": {"c": "x", "d": [1, 2]}}, {"/a": 1, "/b/c": "x", "/b/d/0": 1, "/b/d/1": 2}),
        ({"e": {}, "f": [], "g": None}, {"/e": {}, "/f": [], "/g": None}),
        ({"a/b": 1, "m~n": 2}, {"/a~1b": 1, "/m~0n": 2}),
        (3.5, {"": 3.5}),
        ([{"p": 1}, {"p": 2}], {"/0/p": 1, "/1/p": 2}),
        (MISSING, {}),
    ],
)
def test_flatten(doc: Any, expected: dict[str, Any]) -> None:
    assert flatten(doc) == expected
    assert list(flatten(doc)) == list(expected)  # document order


def test_flatten_is_bounded() -> None:
    doc = {"items": [{"price": i, "qty": 1} for i in range(1000)]}
    flat = flatten(doc, max_fields=10)
    assert len(flat) == 11
    assert flat[OVERFLOW] == 1990
    assert list(flat)[:2] == ["/items/0/price", "/items/0/qty"]


def test_flatten_and_diff_survive_deep_nesting() -> None:
    deep: Any = 1
    for _ in range(5000):
        deep = {"k": deep}
    assert list(flatten(deep).values()) == [1]
    assert field_differences(deep, {"k": 2}) == {"/k", "/k" + "/k" * 4999}


# -- field_differences ------------------------------------------------------------------------------

TABLE: list[tuple[str, Any, Any, set[str]]] = [
    ("identical", {"a": 1, "b": "x"}, {"a": 1, "b": "x"}, set()),
    ("within relative tolerance", {"s": 0.5}, {"s": 0.5 + 1e-8}, set()),
    ("within absolute tolerance near zero", {"s": 0.0}, {"s": 1e-10}, set()),
    ("beyond tolerance", {"s": 0.5}, {"s": 0.5001}, {"/s"}),
    ("int and float are both numbers", {"n": 1}, {"n": 1.0}, set()),
    ("bool is not a number", {"n": 1}, {"n": True}, {"/n"}),
    ("type change string to number", {"v": "1"}, {"v": 1}, {"/v"}),
    ("null vs value", {"v": None}, {"v": 0}, {"/v"}),
    ("missing key", {"a": 1, "b": 2}, {"a": 1}, {"/b"}),
    ("extra key", {"a": 1}, {"a": 1, "c": {"d": 1, "e": [1]}}, {"/c/d", "/c/e/*"}),
    ("object replaced by scalar", {"o": {"x": 1, "y": 2}}, {"o": 3}, {"/o", "/o/x", "/o/y"}),
    (
        "array element differs, name normalized",
        {"it": [{"p": 1}, {"p": 2}]},
        {"it": [{"p": 1}, {"p": 3}]},
        {"/it/*/p"},
    ),
    ("arrays are positional", {"it": [1, 2]}, {"it": [2, 1]}, {"/it/*"}),
    ("array longer", {"it": [1]}, {"it": [1, 2]}, {"/it/*"}),
    ("empty vs non-empty array", {"it": []}, {"it": [1]}, {"/it/*"}),
    ("empty object vs empty array", {"e": {}}, {"e": []}, {"/e"}),
    ("root scalars", 1, 2, {""}),
    ("escaped keys", {"a/b": 1}, {"a/b": 2}, {"/a~1b"}),
    ("integers compared exactly", {"t": 1_700_000_000_000}, {"t": 1_700_000_000_001}, {"/t"}),
    ("big integers compared exactly", {"n": 10**400}, {"n": 10**400 + 1}, {"/n"}),
    ("integer beyond a double against a float", {"n": 10**400}, {"n": 1e300}, {"/n"}),
]


@pytest.mark.parametrize(("a", "b", "expected"), [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_field_differences(a: Any, b: Any, expected: set[str]) -> None:
    assert field_differences(a, b) == expected
    assert field_differences(b, a) == expected  # symmetric


def test_tolerances_are_configurable() -> None:
    assert field_differences({"s": 1.0}, {"s": 1.05}, rel_tol=0.1) == set()
    assert field_differences({"s": 0.0}, {"s": 0.01}, abs_tol=0.1) == set()
    assert field_differences({"s": 0.0}, {"s": 0.01}) == {"/s"}


def test_diff_fields_reports_presence_and_first_example() -> None:
    d = diff_fields({"a": 1, "it": [5, 6], "x": "same"}, {"a": 2, "it": [5, 7, 8]})
    assert d.differing == {"/a": (1, 2), "/it/*": (6, 7), "/x": ("same", MISSING)}
    assert d.present == {"/a", "/it/*", "/x"}


def test_diff_is_bounded() -> None:
    a = {f"k{i}": i for i in range(1000)}
    b = {f"k{i}": i + (i == 999) for i in range(1000)}
    d = diff_fields(a, b, max_fields=100)
    assert len(d.present) == 101 and OVERFLOW in d.present
    assert set(d.differing) == {OVERFLOW}
    assert diff_fields(a, dict(a), max_fields=100).differing == {}


# -- compare ---------------------------------------------------------------------------------------


def doc(score: float, **extra: Any) -> dict[str, Any]:
    return {"score": score, "decision": score >= 0.5, **extra}


def ok(score: float | None, *, latency: float = 0.01, **extra: Any) -> Answer:
    body = doc(score, **extra) if score is not None else {"label": "none", **extra}
    return Answer(
        status=200,
        doc=body,
        schema_valid=True,
        latency_s=latency,
        score=score,
        decision=None if score is None else score >= 0.5,
    )


def test_compare_equal_answers() -> None:
    r = compare(ok(0.7), ok(0.7, latency=0.03))
    assert r.status_match and r.both_ok and r.schema_valid is True
    assert r.score_delta == 0.0 and r.decision_match is True
    assert r.fields == frozenset() and r.present == {"/score", "/decision"}
    assert r.latency_delta_s == pytest.approx(0.02)


def test_compare_score_shift_flips_the_decision() -> None:
    r = compare(ok(0.45), ok(0.55))
    assert r.score_delta == pytest.approx(0.1)
    assert r.decision_match is False
    assert r.fields == {"/score", "/decision"}
    assert dict((name, (a, b)) for name, a, b in r.examples)["/decision"] == (False, True)


def test_compare_candidate_error() -> None:
    cand = Answer(status=504, latency_s=2.0, error="timeout")
    r = compare(ok(0.7), cand)
    assert not r.status_match and not r.both_ok
    assert r.score_delta is None and r.decision_match is None
    assert r.fields == frozenset() and r.present == frozenset()  # error bodies teach nothing about fields
    assert r.schema_valid is None


def test_compare_5xx_with_json_body_is_not_field_compared() -> None:
    cand = Answer(status=500, doc={"error": "boom"}, error="http_5xx", latency_s=0.01)
    r = compare(ok(0.7), cand)
    assert not r.both_ok and r.fields == frozenset()


def test_compare_missing_scores_and_unparsed_bodies() -> None:
    r = compare(ok(None), ok(0.3))
    assert r.score_delta is None and r.decision_match is None
    assert "/score" in r.fields and "/label" in r.fields
    unparsed = Answer(status=200, doc=MISSING, latency_s=0.01)
    r = compare(unparsed, unparsed)
    assert r.both_ok and r.fields == frozenset() and r.present == frozenset()
    r = compare(ok(0.6), Answer(status=200, doc={"score": 0.6}, schema_valid=False, score=0.6))
    assert r.schema_valid is False and r.fields == {"/decision"}


def test_compare_tolerance_is_passed_through() -> None:
    assert compare(ok(0.5), ok(0.5 + 1e-4), rel_tol=1e-3).fields == frozenset()
    assert compare(ok(0.5), ok(0.5 + 1e-4)).fields == {"/score"}


# -- Wilson ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "lo", "hi"),
    [(0, 10, 0.0, 0.27753), (5, 10, 0.23659, 0.76341), (10, 10, 0.72247, 1.0), (81, 263, 0.25529, 0.36621)],
)
def test_wilson_interval(k: int, n: int, lo: float, hi: float) -> None:
    assert wilson_interval(k, n) == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_interval_without_data() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)


# -- noise learning on the sample model's answers ---------------------------------------------------


class SampleModel:
    """The sample model's response shape: a score, its decision, a version, a uuid and a timestamp."""

    def __init__(self, version: str, drift: float, rng: random.Random) -> None:
        self.version = version
        self.drift = drift
        self.rng = rng
        self.clock_ms = 1_700_000_000_000

    def answer(self, logit: float) -> Answer:
        self.clock_ms += self.rng.randint(1, 40)  # every answer is served at a later millisecond
        score = round(1 / (1 + math.exp(-(logit + self.drift))), 6)
        body = {
            "score": score,
            "decision": score >= 0.5,
            "model_version": self.version,
            "prediction_id": uuid.UUID(int=self.rng.getrandbits(128), version=4).hex,
            "served_at": f"{self.clock_ms}ms",
        }
        return Answer(
            status=200, doc=body, schema_valid=True, latency_s=0.01, score=score, decision=score >= 0.5
        )


def learn(candidate_version: str, drift: float, *, pairs: int, noise: int, seed: int = 1) -> NoiseLearner:
    rng = random.Random(seed)
    base = SampleModel("v1", 0.0, rng)
    cand = SampleModel(candidate_version, drift, rng)
    learner = NoiseLearner()
    for i in range(pairs):
        logit = rng.gauss(0, 1.5)
        r = compare(base.answer(logit), cand.answer(logit))
        learner.observe_pair(r.fields, r.present)
        if i < noise:
            n = compare(base.answer(logit), base.answer(logit))
            learner.observe_noise(n.fields, n.present)
    return learner


def test_noise_learning_separates_ids_and_timestamps_from_a_real_score_shift() -> None:
    learner = learn("v2", drift=0.3, pairs=400, noise=100)
    assert learner.classify("/prediction_id") == "noise"
    assert learner.classify("/served_at") == "noise"
    assert learner.classify("/score") == "real"
    assert learner.classify("/model_version") == "real"
    r = learner.rates("/score")
    assert r.candidate_rate == 1.0 and r.noise_rate == 0.0 and r.pairs == 400 and r.noise_pairs == 100


def test_noise_learning_a_a_finds_nothing_real() -> None:
    learner = learn("v1", drift=0.0, pairs=400, noise=100)
    verdicts = {f: learner.classify(f) for f in learner.fields()}
    assert set(verdicts) == {"/score", "/decision", "/model_version", "/prediction_id", "/served_at"}
    assert "real" not in verdicts.values()
    assert verdicts["/prediction_id"] == verdicts["/served_at"] == "noise"


def test_noise_learning_is_undecided_below_min_samples() -> None:
    learner = learn("v2", drift=0.3, pairs=400, noise=49)
    assert {learner.classify(f) for f in learner.fields()} == {"undecided"}
    assert learner.classify("/never/seen") == "undecided"


@pytest.mark.parametrize(
    ("cand_rate", "noise_rate", "expected"),
    [
        (0.40, 0.00, "real"),  # a field the candidate changes 40% of the time
        (0.35, 0.30, "noise"),  # a bit above a noisy field: not practically larger
        (0.15, 0.05, "real"),  # +10 points and three times the noise, at n = 5000
        (0.12, 0.05, "undecided"),  # +7 points, but not clearly twice the noise
        (0.08, 0.05, "noise"),  # +3 points: under the 5-point threshold
        (0.06, 0.00, "undecided"),  # +6 points, but not clearly above 5 with n = 500
    ],
)
def test_classify_thresholds(cand_rate: float, noise_rate: float, expected: str) -> None:
    n = 500 if cand_rate == 0.06 else 5000
    learner = NoiseLearner()
    for i in range(n):
        learner.observe_pair({"/f"} if i < cand_rate * n else set(), {"/f"})
        learner.observe_noise({"/f"} if i < noise_rate * n else set(), {"/f"})
    assert learner.classify("/f") == expected


def test_noise_learner_memory_is_bounded() -> None:
    learner = NoiseLearner(max_fields=20)
    for i in range(1000):
        learner.observe_pair({f"/random_{i}"}, {f"/random_{i}", "/score"})
    assert len(learner.fields()) == 21 and OVERFLOW in learner.fields()
    assert learner.key("/random_999") == OVERFLOW and learner.key("/score") == "/score"
    assert learner.rates(OVERFLOW).pairs == 1000 - 19  # the first 19 random names got their own slots
    assert learner.rates("/random_999").pairs == 1000 - 19
    long_name = "/" + "x" * 10_000
    assert learner.key(long_name) == OVERFLOW
    assert len(NoiseLearner().key(long_name)) == 256
