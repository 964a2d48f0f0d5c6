"""The admin API's request rules: what a handler accepts is exactly what the OpenAPI document's schema for it
allows (validated with jsonschema-rs, the validator schemathesis generates and checks with)."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.admin import inputs
from proxy.errors import ApiError

RULES = {
    "weights": inputs.WEIGHTS,
    "shadow": inputs.SHADOW,
    "rollout action": inputs.ROLLOUT_ACTION,
    "config reload": inputs.CONFIG_RELOAD,
}
VALUES = st.one_of(
    st.integers(-5, 10_005).map(lambda k: k / 100),  # on the 0.01 grid, inside and outside the ranges
    st.integers(-50, 1_000_050).map(lambda k: k / 10_000),  # up to four decimals
    st.integers(-3, 200),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
    st.text(min_size=495, max_size=505),
    st.lists(st.integers(), max_size=2),
)


def _accepted(read: Any, *args: Any) -> bool:
    try:
        read(*args)
    except ApiError as exc:
        assert exc.status in (400, 422), exc
        return False
    return True


@pytest.mark.parametrize("name", RULES)
@given(data=st.data())
def test_a_body_is_accepted_exactly_when_its_schema_allows_it(name: str, data: st.DataObject) -> None:
    rule = RULES[name]
    optional = {key: VALUES for key in rule.fields if key not in rule.required}
    doc = data.draw(
        st.one_of(
            # mostly the fields the rule has, the required ones present...
            st.fixed_dictionaries({key: VALUES for key in rule.required}, optional=optional),
            # ...and any mix of them and a field it does not have
            st.dictionaries(st.sampled_from([*rule.fields, "extra"]), VALUES, max_size=3),
        )
    )
    schema = jsonschema_rs.validator_for(rule.schema())
    assert _accepted(rule.read, doc) == schema.is_valid(doc), doc
    assert rule.needed == bool(rule.schema().get("required"))


@pytest.mark.parametrize(
    "canary", [0, 0.01, 0.57, 12.34, 99.99, 100, 0.001, 0.005, 0.009, 12.345, 99.999, 100.01, -0.01]
)
def test_the_weight_resolution_is_the_schema_multiple(canary: float) -> None:
    schema = jsonschema_rs.validator_for(inputs.WEIGHTS.schema())
    assert _accepted(inputs.WEIGHTS.read, {"canary": canary}) == schema.is_valid({"canary": canary})


@given(st.text(alphabet='W/*"0123456789 ,a\xb2', max_size=22))
def test_if_match_is_accepted_exactly_when_its_pattern_allows_it(raw: str) -> None:
    schema = jsonschema_rs.validator_for({"type": "string", "pattern": inputs.IF_MATCH_PATTERN})
    assert _accepted(inputs.if_match, raw) == schema.is_valid(raw), raw


@pytest.mark.parametrize(
    ("raw", "revision"),
    [(None, None), ("*", None), ('"7"', 7), ('W/"7"', 7), ("7", 7), ('"' + "9" * 18 + '"', 10**18 - 1)],
)
def test_if_match_names_a_revision(raw: str | None, revision: int | None) -> None:
    assert inputs.if_match(raw) == revision


@pytest.mark.parametrize(
    ("raw", "limit"),
    [
        (None, 1000),
        ("1", 1),
        ("007", 7),
        ("10000", 10_000),
        ("0", None),
        ("10001", None),
        ("-1", None),
        (" 5", None),
        ("+5", None),
        ("1_0", None),
        ("\u0665", None),
        ("", None),
        ("9" * 13, None),
    ],
)
def test_the_decisions_limit(raw: str | None, limit: int | None) -> None:
    rule = inputs.DECISIONS_LIMIT
    if limit is None:
        with pytest.raises(ApiError) as refused:
            rule.read("limit", raw)
        assert refused.value.status == 422 and "limit" in refused.value.detail
    else:
        assert rule.read("limit", raw) == limit
        assert jsonschema_rs.validator_for(rule.schema()).is_valid(limit)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"", None),
        (b"  ", None),
        (b"{}", None),
        (b"{", 400),
        (b'{"a": NaN}', 400),
        (b'{"a": 1, "a": 2}', 400),
        (b"\xff", 400),
        (b"[1]", 422),
        (b"5", 422),
        (b"null", 422),
    ],
)
def test_a_body_is_strict_json_and_an_object(raw: bytes, status: int | None) -> None:
    if status is None:
        assert inputs.json_object(raw) == {}
    else:
        with pytest.raises(ApiError) as refused:
            inputs.json_object(raw)
        assert refused.value.status == status
