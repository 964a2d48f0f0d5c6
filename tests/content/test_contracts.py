"""Compiled contracts: what a JSON Schema check says about documents it cannot check."""

from __future__ import annotations

import orjson

from proxy.content.contracts import Contract
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
