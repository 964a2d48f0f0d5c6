"""Shared fixtures: real sample model servers and a real rollguard on loopback, free ports only."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from proxy.app.serve import serve
from proxy.config.load import load_config
from proxy.config.model import Config, Listen
from proxy.demo.sample_model import ModelBehavior, RunningModel, start_sample_model

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "config" / "schemas"
OPERATOR_TOKEN = "op-token-for-tests-0123456789"
VIEWER_TOKEN = "viewer-token-for-tests-012345"


@dataclass
class Models:
    baseline: RunningModel
    candidate: RunningModel


@pytest.fixture
async def models() -> AsyncIterator[Models]:
    baseline = await start_sample_model(ModelBehavior(version="v1"))
    candidate = await start_sample_model(ModelBehavior(version="v2"))
    try:
        yield Models(baseline=baseline, candidate=candidate)
    finally:
        await baseline.close()
        await candidate.close()


def config_doc(tmp_path: Path, baseline_url: str, candidate_url: str, **overrides: Any) -> dict[str, Any]:
    """A complete config document on free ports; ``overrides`` replace top-level keys."""
    doc: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "admin": {
            "listen": "127.0.0.1:0",
            "tokens": [
                {"name": "ops", "role": "operator", "token": "env:RG_TEST_OPERATOR_TOKEN"},
                {"name": "grafana", "role": "viewer", "token": "env:RG_TEST_VIEWER_TOKEN"},
            ],
        },
        "state": {"url": f"file:{tmp_path / 'state' / 'rollguard-state.json'}"},
        "upstreams": {
            "baseline": {"url": baseline_url, "version": "v1", "timeout": "2s"},
            "candidate": {"url": candidate_url, "version": "v2", "timeout": "2s"},
        },
        "routes": [
            {
                "name": "infer",
                "path": "/v1/infer",
                "methods": ["POST"],
                "request_schema": str(SCHEMAS / "infer_request.json"),
                "response_schema": str(SCHEMAS / "infer_response.json"),
                "score": "/score",
                "sticky_key": "header:x-user-id",
                "segment": "/features/region",
            }
        ],
        "canary": {"weight": 0},
        "logging": {"access_log": str(tmp_path / "access.log")},
    }
    doc.update(overrides)
    return doc


def write_config(tmp_path: Path, doc: dict[str, Any], name: str = "rollguard.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RG_TEST_OPERATOR_TOKEN", OPERATOR_TOKEN)
    monkeypatch.setenv("RG_TEST_VIEWER_TOKEN", VIEWER_TOKEN)


@dataclass
class RunningProxy:
    config: Config
    data_url: str
    admin_url: str

    def admin_client(self, token: str | None = OPERATOR_TOKEN) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.admin_url, headers=headers, timeout=10)


def _url(listen: Listen, tls: bool = False) -> str:
    return f"{'https' if tls else 'http'}://{listen}"


async def start_proxy(config: Config) -> tuple[RunningProxy, asyncio.Event, asyncio.Task[None]]:
    """Run rollguard in this event loop; returns once both listeners accept."""
    ready: asyncio.Future[tuple[Listen, Listen]] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(config, on_ready=lambda d, a: ready.set_result((d, a)), stop=stop, handle_signals=False)
    )
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()  # raises the start-up error
    data, admin = ready.result()
    data_url, admin_url = _url(data, config.tls is not None), _url(admin, config.admin.tls is not None)
    return RunningProxy(config=config, data_url=data_url, admin_url=admin_url), stop, task


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


# -- a proxy in its own process, for SIGKILL and signal tests -----------------------------------------

_LISTENING = re.compile(r"rollguard listening data=(\S+) admin=(\S+)")


class ProxyProcess:
    """``rollguard serve`` as a user starts it, in a child process."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.proc: subprocess.Popen[str] | None = None
        self.data_url = self.admin_url = ""
        self.stderr_lines: list[str] = []

    def start(self, timeout: float = 20.0) -> ProxyProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr_lines.append(line)
            m = _LISTENING.search(line)
            if m:
                self.data_url, self.admin_url = m.group(1), m.group(2)
                # Keep draining stderr, or a chatty proxy would block on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.kill()
        raise RuntimeError("rollguard did not start:\n" + "".join(self.stderr_lines))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_lines.append(line)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def wait(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)


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
