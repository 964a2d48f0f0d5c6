"""The admin API fuzzed from its own OpenAPI document (schemathesis), in both of its generation modes.

Positive inputs follow the document and must be accepted (2xx, or a 404/409 a valid request can meet);
negative inputs break it and must be refused with a 4xx. Every answer, either way, must be one the
document lists for the operation, with its media type, headers and body schema: schemathesis's default
checks, run on each answer. Nothing may be a 5xx.

Every generated input carries the operator token, so each operation is reached past authentication (a
401, 403 or 429 would mean the token was lost, and fails the run). Authentication is checked apart, by
:func:`check_auth_is_enforced`, in place of schemathesis's ``ignored_auth`` (which probes each answer again
without a token and with a wrong one, and insists on 401): its probes are failed authentications, and
after ten from one address the admin throttle answers them 429, documented, with ``Retry-After``. A valid
token is never throttled, so the generated inputs go on being served; the probes, once per operation,
take either documented refusal, and the run asserts it met both.

``ROLLGUARD_FUZZ_EXAMPLES`` is the number of inputs for the whole API, shared out over its operations and
both modes (``make fuzz`` sets it); unset, each operation gets :data:`PER_OPERATION_DEFAULT` per mode.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.tokens import OPERATOR_TOKEN

PER_OPERATION_DEFAULT = 25
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
TOTAL = os.environ.get("ROLLGUARD_FUZZ_EXAMPLES")
# What schemathesis accepts as the answer to a valid input (schemathesis's default has 401 and 5xx; every
# valid input here carries a valid token, and nothing may be a 5xx): a 404 is the catch-all report path's
# only answer, a 409 an illegal move in the current phase, a 412 an If-Match naming another revision, a 304
# an If-None-Match naming the asset's current ETag. A negative input is refused before anything is changed.
SCHEMATHESIS_CONFIG = {
    # The token is the test's, on every input: breaking it is check_auth_is_enforced's job.
    "generation": {"with-security-parameters": False},
    "checks": {
        "positive_data_acceptance": {"expected-statuses": ["2xx", "304", "404", "409", "412"]},
        "negative_data_rejection": {"expected-statuses": ["400", "401", "404", "422", "429"]},
    },
}
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Whether the inputs are replayed or new is the profile's (tests/conftest.py): fixed in make test and CI.


def per_operation(operations: int) -> int:
    return PER_OPERATION_DEFAULT if TOTAL is None else max(1, math.ceil(int(TOTAL) / operations / len(MODES)))


@pytest.fixture
def running(tmp_path: Path, models: Models, proxy_process: Any) -> Any:
    """A real rollguard in its own process (schemathesis calls synchronously)."""
    return proxy_process(
        write_config(tmp_path, config_doc(tmp_path, models.baseline.url, models.candidate.url))
    )


def check_auth_is_enforced(operation: Any, base_url: str) -> list[int]:
    """Without a token and with a wrong one, a secured operation answers 401, or 429 once the throttle
    has seen enough failures from this address; either answer as the document describes it."""
    raw = operation.definition.raw
    if not raw.get("security"):
        return []
    # Any path the operation serves will do: the refusal comes before anything else is read.
    path = {
        p["name"]: p["schema"].get("enum", ["x"])[0] for p in raw.get("parameters", []) if p["in"] == "path"
    }
    codes = []
    for headers in ({}, {"Authorization": "Bearer not-a-configured-token"}):
        case = operation.Case(path_parameters=path)
        response = case.call(base_url=base_url, headers=headers, timeout=10)
        codes.append(response.status_code)
        assert response.status_code in (401, 429), (operation.label, response.status_code, response.text)
        case.validate_response(response, checks=CONFORMANCE, headers=headers)
    return codes


# The catch-all for unknown report names: breaking its one rule (not a report's name) gives the name of a
# report, which is another operation's valid input and rightly answered 200.
NEGATIVE_IS_ANOTHER_OPERATION = {"GET /reports/{name}"}


@pytest.mark.timeout(150 + int(TOTAL or 0) // 10)
async def test_no_generated_request_breaks_the_document(
    running: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    seen: list[tuple[str, str, int]] = []  # (mode, operation, status) of every call, shrinking included
    documented: set[str] = set()
    refusals: list[int] = []
    unbreakable: list[str] = []

    def fuzz() -> None:
        doc = httpx.get(running.admin_url + "/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(
            doc, config=schemathesis.Config.from_dict(SCHEMATHESIS_CONFIG)
        )
        operations = [result.ok() for result in schema.get_all_operations()]
        documented.update(operation.label for operation in operations)
        for operation in operations:
            refusals.extend(check_auth_is_enforced(operation, running.admin_url))
            for mode in MODES:
                if mode is GenerationMode.NEGATIVE and operation.label in NEGATIVE_IS_ANOTHER_OPERATION:
                    continue

                @hypothesis.given(operation.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=per_operation(len(operations)),
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: Any) -> None:
                    response = case.call(base_url=running.admin_url, headers=headers, timeout=10)
                    mode = case.meta.generation.mode.value
                    label = case.operation.label
                    seen.append((mode, label, response.status_code))
                    assert response.status_code not in (401, 403, 429), (label, response.text)
                    case.validate_response(response, excluded_checks=[ignored_auth], headers=headers)

                try:
                    check()
                except hypothesis.errors.Unsatisfiable:
                    # Nothing to break: no parameter, body or token, or only ones any string satisfies.
                    assert mode is GenerationMode.NEGATIVE, operation.label
                    unbreakable.append(operation.label)

    try:
        await asyncio.to_thread(fuzz)
    finally:
        codes = Counter((mode, code) for mode, _, code in seen)
        with capsys.disabled():
            print(
                f"\nadmin API fuzz: {len(seen)} inputs; answers "
                + ", ".join(f"{mode} {code}: {n}" for (mode, code), n in sorted(codes.items()))
                + f"; without a valid token: {dict(Counter(refusals))}; no negative input for {unbreakable}"
            )
    exercised = {label for _, label, _ in seen}
    assert exercised == documented  # every documented operation was called
    negative = {code for mode, _, code in seen if mode == "negative"}
    assert {400, 422} <= negative  # malformed requests and bad values were among the inputs
    assert 401 in refusals and 429 in refusals  # the probes met the throttle, and it was taken as documented
