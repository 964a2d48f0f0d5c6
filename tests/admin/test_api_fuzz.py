"""The admin API fuzzed from its own OpenAPI document (schemathesis): no input makes it answer 5xx.

Every request carries the operator token, so each operation is reached past authentication (a 401 or
403 would mean the token was lost, and fails the run). ``ROLLGUARD_FUZZ_EXAMPLES`` is the number of
inputs for the whole API, shared out over its operations (``make fuzz`` sets it); unset, each operation
gets :data:`PER_OPERATION_DEFAULT`. The counts of what was tried and what failed are printed at the end.
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

from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.tokens import OPERATOR_TOKEN

PER_OPERATION_DEFAULT = 25
TOTAL = os.environ.get("ROLLGUARD_FUZZ_EXAMPLES")
# Whether the inputs are replayed or new is the profile's (tests/conftest.py): fixed in make test and CI.


def per_operation(operations: int) -> int:
    return PER_OPERATION_DEFAULT if TOTAL is None else max(1, math.ceil(int(TOTAL) / operations))


@pytest.fixture
def running(tmp_path: Path, models: Models, proxy_process: Any) -> Any:
    """A real rollguard in its own process (schemathesis calls synchronously)."""
    return proxy_process(
        write_config(tmp_path, config_doc(tmp_path, models.baseline.url, models.candidate.url))
    )


@pytest.mark.timeout(120 + int(TOTAL or 0) // 10)
async def test_no_generated_request_gets_a_5xx(running: Any, capsys: pytest.CaptureFixture[str]) -> None:
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    seen: list[tuple[str, str, int]] = []  # every call, shrinking included

    def fuzz() -> None:
        doc = httpx.get(running.admin_url + "/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(doc)
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation in operations:

            @hypothesis.given(operation.as_strategy())
            @settings(
                max_examples=per_operation(len(operations)),
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                response = case.call(base_url=running.admin_url, headers=headers, timeout=10)
                seen.append((case.method, case.formatted_path, response.status_code))
                assert response.status_code < 500, (case.method, case.formatted_path, response.text)
                assert response.status_code not in (401, 403), (case.method, case.formatted_path)

            check()

    try:
        await asyncio.to_thread(fuzz)
    finally:
        codes = Counter(code for _, _, code in seen)
        failed = sum(n for code, n in codes.items() if code >= 500 or code in (401, 403))
        with capsys.disabled():
            print(
                f"\nadmin API fuzz: {len(seen)} inputs tried, {failed} failed; "
                f"answers {{{', '.join(f'{c}: {n}' for c, n in sorted(codes.items()))}}}"
            )
    assert len({(m, p.split("?")[0]) for m, p, _ in seen}) >= 14  # every documented operation was exercised
    assert any(code == 422 for _, _, code in seen)  # and bad bodies were among the inputs
