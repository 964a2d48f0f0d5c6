"""A real Prometheus server for tests: own process, free port, temporary config and storage."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from tests.helpers.promql import need_binary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PrometheusServer:
    """``prometheus`` scraping ``targets`` as job ``rollguard`` every second, with ``rule_files`` loaded.

    Use as an async context manager; the process is stopped (SIGTERM, then SIGKILL) on exit.
    """

    def __init__(self, workdir: Path, targets: list[str], rule_files: list[Path]) -> None:
        self.workdir = workdir
        self.targets = targets
        self.rule_files = rule_files
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = workdir / "prometheus.log"

    async def __aenter__(self) -> PrometheusServer:
        binary = need_binary("prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": "rollguard",
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        # A free port can be taken between the probe and the bind: try a few.
        for _ in range(3):
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}"
            self._spawn(binary, config_path, port)
            if await self._ready(30.0):
                return self
            self._stop()
        raise RuntimeError("prometheus did not start:\n" + self.log_path.read_text(errors="replace"))

    def _spawn(self, binary: str, config_path: Path, port: int) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    async def _ready(self, within: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if (await c.get("/-/ready")).status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        return False

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the server's now; the result vector (``metric`` labels and ``value``)."""
        async with httpx.AsyncClient(base_url=self.url, timeout=5) as c:
            r = await c.get("/api/v1/query", params={"query": expr})
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def wait_for(self, expr: str, within: float, what: str) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns samples; fail with the server's log after ``within`` seconds."""
        return await self.wait_until(expr, bool, within, what)

    async def wait_until(
        self, expr: str, done: Callable[[list[dict[str, Any]]], bool], within: float, what: str
    ) -> list[dict[str, Any]]:
        """Poll ``expr`` until ``done(result)``; after ``within`` s fail with the last result and the log."""
        deadline = time.monotonic() + within
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = await self.query(expr)
            if done(result):
                return result
            await asyncio.sleep(0.2)
        raise AssertionError(
            f"{what}: {expr!r} did not get there within {within}s; last {result}\n{self.log_path.read_text()}"
        )


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {s["metric"][label]: float(s["value"][1]) for s in result}
