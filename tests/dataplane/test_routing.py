"""The pure routing core: weighted sticky choice, its statistics, route matching, sticky keys.

Statistical checks state their tolerance in standard errors of a binomial share, SE = sqrt(p(1-p)/n).
At 4.5 SE a correct implementation fails one check in ~150,000 (two-sided normal tail 6.8e-6); every
draw here is also seeded or hash-determined, so the suite cannot flake, while a bias of a fraction of a
percentage point at n = 20,000 is still caught.
"""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from proxy.config.model import RouteConfig, StickyKey
from proxy.content.contracts import MISSING, needs_body
from proxy.dataplane.routing import RouteTable, bucket, choose, sticky_value
from proxy.rollout.state import BUCKETS, weight_to_bp

TOLERANCE_SE = 4.5
ROLLOUT = "5f0c2a9e7b1d4c38"
KEYS_20K = [f"user-{i}" for i in range(20_000)]
KEYS_10K = KEYS_20K[:10_000]


def never_called() -> float:
    raise AssertionError("rand() must not be used when the request has a sticky key")


def within(observed: int, n: int, p: float) -> tuple[bool, str]:
    se = math.sqrt(p * (1 - p) / n)
    share = observed / n
    ok = abs(share - p) <= TOLERANCE_SE * se
    return ok, f"share {share:.5f} vs {p:.5f} (tolerance {TOLERANCE_SE} x SE {se:.5f})"


def candidates(weight: float, keys: list[str], rollout: str = ROLLOUT) -> set[str]:
    bp = weight_to_bp(weight)
    return {k for k in keys if choose(bp, rollout, k, never_called) == "candidate"}


# -- weights ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("percent", "bp"),
    [
        (0, 0),
        (0.01, 1),
        (0.29, 29),  # 0.29 * 100 is 28.999999999999996 in binary floating point
        (1, 100),
        (5, 500),
        (12.34, 1234),
        (37.5, 3750),
        (99.99, 9999),
        (100, 10_000),
        (150, 10_000),
        (-3, 0),
    ],
)
def test_weight_to_bp(percent: float, bp: int) -> None:
    assert weight_to_bp(percent) == bp


def test_all_hundredths_map_one_to_one() -> None:
    assert [weight_to_bp(i / 100) for i in range(10_001)] == list(range(10_001))


@pytest.mark.parametrize("key", [None, "user-1", ""])
def test_weight_0_is_always_baseline_and_100_always_candidate(key: str | None) -> None:
    rng = random.Random(7)
    for _ in range(2_000):
        assert choose(0, ROLLOUT, key, rng.random) == "baseline"
        assert choose(10_000, ROLLOUT, key, rng.random) == "candidate"
    for k in KEYS_10K:
        assert choose(0, ROLLOUT, k, never_called) == "baseline"
        assert choose(10_000, ROLLOUT, k, never_called) == "candidate"


@pytest.mark.parametrize(
    ("bp", "draw", "role"),
    [
        (1, 0.0, "candidate"),
        (1, 0.00009, "candidate"),
        (1, 0.0001, "baseline"),
        (2_500, 0.2499, "candidate"),
        (2_500, 0.25, "baseline"),
        (9_999, 0.99989, "candidate"),
        (9_999, 0.9999, "baseline"),
        (9_999, 0.99999999, "baseline"),
    ],
)
def test_random_choice_boundaries(bp: int, draw: float, role: str) -> None:
    assert choose(bp, ROLLOUT, None, lambda: draw) == role


# -- buckets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rollout", "key", "expected"),
    [
        ("r1", "user-1", 8077),
        ("r1", "user-2", 9669),
        ("0123456789abcdef", "alice", 5588),
        ("0123456789abcdef", "", 1146),
    ],
)
def test_bucket_is_stable_across_processes_and_releases(rollout: str, key: str, expected: int) -> None:
    # Pinned values: an upgrade (or another replica, another PYTHONHASHSEED) must not reshuffle users.
    assert bucket(rollout, key) == expected


def test_bucket_range_and_odd_keys() -> None:
    for key in ["", "é", "\U0001f600", "\ud800", "x" * 10_000, "a\x00b"]:
        assert 0 <= bucket(ROLLOUT, key) < BUCKETS


def test_buckets_are_uniform() -> None:
    # 100,000 keys into 10 deciles of the bucket space; each decile's share within 4.5 SE of 10%.
    counts = [0] * 10
    for i in range(100_000):
        counts[bucket(ROLLOUT, f"k{i}") // 1_000] += 1
    for c in counts:
        ok, why = within(c, 100_000, 0.1)
        assert ok, why


# -- statistics of the split -----------------------------------------------------------------------


@pytest.mark.parametrize("rollout", [ROLLOUT, "a1b2c3d4e5f60718", "rollout-3"])
@pytest.mark.parametrize("weight", [1, 5, 25, 50])
def test_sticky_split_matches_the_weight(weight: float, rollout: str) -> None:
    ok, why = within(len(candidates(weight, KEYS_20K, rollout)), len(KEYS_20K), weight / 100)
    assert ok, why


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("weight", [1, 5, 25, 50])
def test_random_split_matches_the_weight(weight: float, seed: int) -> None:
    rand = random.Random(seed).random
    n = 20_000
    hits = sum(choose(weight_to_bp(weight), ROLLOUT, None, rand) == "candidate" for _ in range(n))
    ok, why = within(hits, n, weight / 100)
    assert ok, why


def test_random_choice_draws_per_request() -> None:
    draws = iter([0.001, 0.9, 0.001, 0.9])
    picks = [choose(500, ROLLOUT, None, lambda: next(draws)) for _ in range(4)]
    assert picks == ["candidate", "baseline", "candidate", "baseline"]


def test_stickiness() -> None:
    keys = KEYS_20K[:1_000]
    for bp in (1, 500, 2_500, 5_000, 9_999):
        first = [choose(bp, ROLLOUT, k, never_called) for k in keys]
        for _ in range(5):
            assert [choose(bp, ROLLOUT, k, never_called) for k in keys] == first


def test_raising_the_weight_only_moves_users_to_the_candidate() -> None:
    steps = [0, 0.01, 1, 5, 25, 50, 99.99, 100]
    sets = [candidates(w, KEYS_10K) for w in steps]
    assert sets[0] == set()
    assert sets[-1] == set(KEYS_10K)
    for lower, higher, w in zip(sets, sets[1:], steps[1:], strict=False):
        assert lower <= higher, f"a user left the candidate when the weight rose to {w}"
    assert len(sets[1]) < len(sets[2]) < len(sets[3]) < len(sets[4]) < len(sets[5])


def test_a_new_rollout_draws_a_new_set_of_users() -> None:
    first = candidates(10, KEYS_10K, "rollout-one")
    second = candidates(10, KEYS_10K, "rollout-two")
    assert first != second
    # Independent draws: the share of the first set that the second also picks is ~10%, not ~100%.
    ok, why = within(len(first & second), len(first), 0.10)
    assert ok, why


# -- route table -----------------------------------------------------------------------------------


def route(name: str, path: str, *methods: str) -> RouteConfig:
    return RouteConfig(name=name, path=path, methods=frozenset(methods or ("POST",)))


TABLE = [
    route("infer", "/v1/infer", "POST"),
    route("infer-get", "/v1/infer", "GET"),
    route("v1", "/v1/*", "POST", "PUT"),
    route("models", "/v1/models/*", "POST"),
    route("anything-get", "/*", "GET"),
]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/infer", "infer"),  # exact
        ("GET", "/v1/infer", "infer-get"),  # same path, other method: the route that allows it
        ("PUT", "/v1/infer", "v1"),  # no exact route for PUT: falls to the prefix
        ("POST", "/v1/infer/", "v1"),  # exact means exact
        ("POST", "/v1/inferx", "v1"),
        ("POST", "/v1/models/fraud", "models"),  # longest prefix wins
        ("POST", "/v1/models/", "models"),
        ("PUT", "/v1/models/fraud", "v1"),  # longest prefix, but its method does not match
        ("POST", "/v1/other", "v1"),
        ("POST", "/v1/", "v1"),
        ("POST", "/v1", None),  # "/v1/*" needs the slash
        ("POST", "/v2/infer", None),
        ("DELETE", "/v1/infer", None),
        ("GET", "/v2/anything", "anything-get"),
        ("GET", "/", "anything-get"),
        ("post", "/v1/infer", None),  # methods are case-sensitive (RFC 9110 §9.1)
    ],
)
def test_route_table(method: str, path: str, expected: str | None) -> None:
    for routes in (TABLE, list(reversed(TABLE))):  # the order in the config does not matter
        found = RouteTable(routes).match(method, path)
        assert (found.name if found else None) == expected


def test_empty_route_table_matches_nothing() -> None:
    assert RouteTable([]).match("POST", "/v1/infer") is None


# -- sticky values ---------------------------------------------------------------------------------

HEADER = StickyKey(source="header", name="x-user-id")
COOKIE = StickyKey(source="cookie", name="sid")
JSON_USER = StickyKey(source="json", name="/user_id")
JSON_NESTED = StickyKey(source="json", name="/user/id")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"x-user-id", b"u-17")], "u-17"),
        ([(b"content-type", b"application/json"), (b"x-user-id", b"u-17")], "u-17"),
        ([(b"x-user-id", b"u-17"), (b"x-user-id", b"u-99")], "u-17"),
        ([(b"x-user-id", b"")], None),
        ([(b"x-other", b"u-17")], None),
        ([], None),
        ([(b"x-user-id", "jos\u00e9".encode("latin-1"))], "jos\u00e9"),
    ],
)
def test_sticky_value_from_header(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert sticky_value(HEADER, headers) == expected


@pytest.mark.parametrize(
    ("cookies", "expected"),
    [
        ([b"sid=abc"], "abc"),
        ([b"theme=dark; sid=abc; lang=pt-BR"], "abc"),
        ([b"theme=dark", b"sid=abc"], "abc"),  # several cookie headers (HTTP/2 style)
        ([b'sid="abc"'], "abc"),
        ([b"sidx=abc; xsid=def"], None),
        ([b"theme=dark"], None),
        ([b"sid="], None),
        ([b"sid"], None),  # malformed: no value at all
        ([], None),
        # A malformed cookie elsewhere in the header must not cost the user their stickiness: these are
        # real-world shapes (a bare name set by document.cookie, a JSON-valued cookie, a stray "=").
        pytest.param([b"sid=abc; ===; lang=pt"], "abc", id="stray-equals-after-key"),
        pytest.param([b"consent; sid=abc"], "abc", id="bare-name-cookie-before-key"),
        pytest.param([b'prefs={"a":1}; sid=abc'], "abc", id="json-valued-cookie-before-key"),
        pytest.param([b"===", b"sid=abc"], "abc", id="bad-first-header-key-in-second"),
    ],
)
def test_sticky_value_from_cookie(cookies: list[bytes], expected: str | None) -> None:
    assert sticky_value(COOKIE, [(b"cookie", c) for c in cookies]) == expected


def test_cookie_key_ignores_other_headers() -> None:
    assert sticky_value(COOKIE, [(b"set-cookie", b"sid=abc"), (b"x-sid", b"abc")]) is None


@pytest.mark.parametrize(
    ("key", "body", "expected"),
    [
        (JSON_USER, {"user_id": "u-17"}, "u-17"),
        (JSON_USER, {"user_id": 42}, "42"),
        (JSON_USER, {"user_id": 4.5}, "4.5"),
        (JSON_NESTED, {"user": {"id": "u-17"}}, "u-17"),
        (JSON_NESTED, {"user": {"id": 7}}, "7"),
        (StickyKey(source="json", name="/users/1"), {"users": ["a", "b"]}, "b"),
        (StickyKey(source="json", name="/a~1b"), {"a/b": "slash"}, "slash"),
        (JSON_USER, {"other": "u-17"}, None),
        (JSON_NESTED, {"user": "u-17"}, None),
        (JSON_NESTED, {"user": {}}, None),
        (JSON_USER, {"user_id": {"id": "u-17"}}, None),  # an object is no identity
        (JSON_USER, {"user_id": ["u-17"]}, None),
        (JSON_USER, {"user_id": None}, None),
        (JSON_USER, ["u-17"], None),
        (JSON_USER, MISSING, None),  # body not parsed (too large, not JSON)
    ],
)
def test_sticky_value_from_json(key: StickyKey, body: Any, expected: str | None) -> None:
    assert sticky_value(key, [(b"x-user-id", b"from-header")], body) == expected


@pytest.mark.parametrize(
    ("key", "needed"),
    [(None, False), (HEADER, False), (COOKIE, False), (JSON_USER, True)],
)
def test_needs_body(key: StickyKey | None, needed: bool) -> None:
    assert needs_body(key) is needed


def test_sticky_value_feeds_a_sticky_choice() -> None:
    def pick(uid: str) -> str:
        return choose(2_500, ROLLOUT, sticky_value(HEADER, [(b"x-user-id", uid.encode())]), never_called)

    assert {pick("u-17") for _ in range(20)} == {pick("u-17")}
