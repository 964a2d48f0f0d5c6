"""The admin API fuzzed from its own OpenAPI document (schemathesis): no input makes it answer 5xx."""

from __future__ import annotations

import asyncio
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


@pytest.fixture
def running(tmp_path: Path, models: Models, proxy_process: Any) -> Any:
    """A real rollguard in its own process (schemathesis calls synchronously)."""
    return proxy_process(
        write_config(tmp_path, config_doc(tmp_path, models.baseline.url, models.candidate.url))
    )


async def test_no_generated_request_gets_a_5xx(running: Any) -> None:
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
    seen: list[tuple[str, str, int]] = []

    def fuzz() -> None:
        doc = httpx.get(running.admin_url + "/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(doc)
        for result in schema.get_all_operations():
            operation = result.ok()

            @hypothesis.given(operation.as_strategy())
            @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case: Any) -> None:
                response = case.call(base_url=running.admin_url, headers=headers, timeout=10)
                seen.append((case.method, case.formatted_path, response.status_code))
                assert response.status_code < 500, (case.method, case.formatted_path, response.text)

            check()

    await asyncio.to_thread(fuzz)
    assert len({(m, p.split("?")[0]) for m, p, _ in seen}) >= 14  # every documented operation was exercised
    assert any(code == 422 for _, _, code in seen)  # and bad bodies were among the inputs
