"""Running rollguard for a test: in this event loop (``start_proxy``) or as a child (``ProxyProcess``)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from proxy.app.serve import serve
from proxy.config.model import Config, Listen
from tests.helpers.tokens import OPERATOR_TOKEN


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


async def wait_for_log(proc: ProxyProcess, text: str, seen: int, within: float = 10.0) -> int:
    """Wait until a log line after the first ``seen`` lines contains ``text``; the new line count."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        lines = list(proc.stderr_lines)
        if any(text in line for line in lines[seen:]):
            return len(lines)
        await asyncio.sleep(0.02)
    raise AssertionError(f"no log line with {text!r}:\n" + "".join(proc.stderr_lines))
