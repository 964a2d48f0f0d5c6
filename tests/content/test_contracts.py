"""Compiled contracts: what a JSON Schema check says about documents it cannot check."""

from __future__ import annotations

import orjson

from proxy.content.contracts import CompatContract, Contract, compat_breaches
from tests.helpers.paths import SCHEMAS


def test_a_document_nested_deeper_than_the_validator_recurses_is_a_violation_not_a_crash() -> None:
    contract = Contract.from_file(SCHEMAS / "infer_request.json")
    deep = orjson.loads(b"[" * 256 + b"1" + b"]" * 256)  # orjson parses up to 1024 levels
    violation = contract.check(deep)
    assert violation is not None and violation.path == "/"
    assert violation.message.startswith("cannot be checked against the schema")
    assert (
        contract.check({"features": {"amount": 1.0, "tenure_months": 1, "txn_24h": 0, "region": "br-se"}})
        is None
    )


def test_compat_breaches_name_each_schema_the_document_fails_in_configured_order() -> None:
    compat = (
        CompatContract("v1", Contract({"type": "object", "required": ["score", "decision"]})),
        CompatContract("score_only", Contract({"type": "object", "required": ["score"]})),
        CompatContract("v0", Contract({"type": "object", "required": ["label"]})),
    )
    assert compat_breaches(compat, {"score": 0.7}) == ("v1", "v0")
    assert compat_breaches(compat, {"score": 0.7, "decision": True, "label": "low"}) == ()
    assert compat_breaches(compat, []) == ("v1", "score_only", "v0")
    assert compat_breaches((), {"score": 0.7}) == ()
    deep = orjson.loads(b"[" * 256 + b"1" + b"]" * 256)
    assert not compat[1].contract.accepts(deep)  # what cannot be checked is not accepted
