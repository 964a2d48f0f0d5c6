"""Fixtures: real sample model servers and a real rollguard on loopback, free ports only.

Helpers the tests import live in ``tests/helpers/``; this file only wires them into fixtures.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from proxy.config.load import load_config
from proxy.demo.sample_model import ModelBehavior, start_sample_model
from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.proxy_runner import ProxyProcess, RunningProxy, start_proxy
from tests.helpers.tokens import OPERATOR_TOKEN, OPERATOR_TOKEN_ENV, VIEWER_TOKEN, VIEWER_TOKEN_ENV

# Property tests: ``make test`` and every CI run are a regression gate, so they replay the same inputs
# each time (a red build means the code changed, not the draw), with no wall-clock deadline (two shared
# cores make per-example timings noise) and no example database carried between runs. ``make fuzz``
# asks for a count (ROLLGUARD_FUZZ_EXAMPLES) and explores new inputs each time; a failure prints the
# blob that replays it (``@reproduce_failure``). Test-level settings override only what they name.
FUZZ_EXAMPLES = os.environ.get("ROLLGUARD_FUZZ_EXAMPLES")
settings.register_profile("regression", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile(
    "explore",
    max_examples=int(FUZZ_EXAMPLES or 1000),
    derandomize=False,
    deadline=None,
    database=None,
    print_blob=True,
)
EXPLORING = FUZZ_EXAMPLES is not None and os.environ.get("CI") != "true"
settings.load_profile("explore" if EXPLORING else "regression")


@pytest.fixture
async def models() -> AsyncIterator[Models]:
    baseline = await start_sample_model(ModelBehavior(version="v1"))
    candidate = await start_sample_model(ModelBehavior(version="v2"))
    try:
        yield Models(baseline=baseline, candidate=candidate)
    finally:
        await baseline.close()
        await candidate.close()


@pytest.fixture(autouse=True)
def _tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPERATOR_TOKEN_ENV, OPERATOR_TOKEN)
    monkeypatch.setenv(VIEWER_TOKEN_ENV, VIEWER_TOKEN)


@pytest.fixture
async def proxy_factory(tmp_path: Path, models: Models) -> AsyncIterator[Any]:
    """``await proxy_factory(**overrides)`` starts a proxy; every one is stopped at teardown."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def factory(**overrides: Any) -> RunningProxy:
        doc = config_doc(tmp_path, models.baseline.url, models.candidate.url, **overrides)
        rp, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
        running.append((stop, task))
        return rp

    try:
        yield factory
    finally:
        for stop, task in running:
            stop.set()
            await asyncio.wait_for(task, 20)


@pytest.fixture
async def proxy(proxy_factory: Any) -> RunningProxy:
    rp: RunningProxy = await proxy_factory()
    return rp


@pytest.fixture
def proxy_process() -> Iterator[Any]:
    started: list[ProxyProcess] = []

    def factory(config_path: Path) -> ProxyProcess:
        p = ProxyProcess(config_path).start()
        started.append(p)
        return p

    yield factory
    for p in started:
        p.kill()
