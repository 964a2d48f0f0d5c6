"""Starting, probing and stopping the processes a benchmark row needs.

Every process goes into its own session (process group), so a Ctrl-C at the terminal reaches only the
harness, which then tears the groups down in order; nothing is left listening after a run.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
# What `rollguard serve` prints on stderr once both listeners are bound (port 0 picks free ports).
LISTENING = re.compile(r"rollguard listening data=http://(\S+):(\d+) admin=http://(\S+):(\d+)")


def free_ports(count: int) -> list[int]:
    """Ports the kernel just called free. All are held until all are picked, so they differ from each
    other; something else could still take one before our server binds it, which a quiet loopback allows."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def pin(cpu: int | None) -> list[str]:
    """The taskset prefix for a command, or nothing when the run is unpinned."""
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


@dataclass
class Server:
    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    def exited(self) -> bool:
        return self.popen.poll() is not None

    def stderr_tail(self, lines: int = 40) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


def start(name: str, cmd: Sequence[str], log_dir: Path, cwd: Path | None = None) -> Server:
    """Start a server with output in files (a full pipe would stall it) in a fresh process group."""
    out, err = log_dir / f"{name}.out", log_dir / f"{name}.err"
    with out.open("wb") as out_f, err.open("wb") as err_f:
        popen = subprocess.Popen(
            list(cmd), stdin=subprocess.DEVNULL, stdout=out_f, stderr=err_f, cwd=cwd, start_new_session=True
        )
    return Server(name, popen, out, err)


def stop(server: Server, grace_s: float = 5.0) -> None:
    """Terminate the whole group (nginx workers, uvicorn children), then kill whatever is left of it."""
    _signal_group(server, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.popen.wait(timeout=grace_s)
    # Also reaches a worker that outlived its master, not only a leader that ignored SIGTERM.
    _signal_group(server, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.popen.wait(timeout=grace_s)


def _signal_group(server: Server, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.popen.pid, sig)


class NotReady(Exception):
    """A server did not answer in time, or exited while we waited."""


def wait_until(check: Callable[[], bool], servers: Sequence[Server], timeout_s: float, what: str) -> None:
    """Poll `check` until it holds; give up early if a server we depend on has exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for server in servers:
            if server.exited():
                raise NotReady(f"{server.name} exited with code {server.popen.returncode} before {what}")
        if check():
            return
        time.sleep(0.05)
    raise NotReady(f"gave up after {timeout_s:g} s waiting until {what}")


def http_call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request on a fresh connection; (0, b"") when nothing answers yet."""
    conn = http.client.HTTPConnection(HOST, port, timeout=2.0)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, http.client.HTTPException):
        return 0, b""
    finally:
        conn.close()


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on the port."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_sample_model(name: str, log_dir: Path, *args: str) -> tuple[Server, str]:
    """``python -m proxy.demo.sample_model`` on a free port with ``args``, once it answers; and its URL."""
    (port,) = free_ports(1)
    cmd = [sys.executable, "-m", "proxy.demo.sample_model", "--port", str(port), *args]
    server = start(name, cmd, log_dir, cwd=REPO)
    wait_until(lambda: http_call(port, "GET", "/healthz")[0] == 200, [server], 20, f"{name} answers")
    return server, f"http://{HOST}:{port}"


@dataclass(frozen=True)
class Rollguard:
    """A started ``rollguard serve`` and the addresses it printed."""

    server: Server
    data_url: str
    admin_url: str
    data_port: int
    admin_port: int

    @property
    def pid(self) -> int:
        return self.server.popen.pid


def start_rollguard(name: str, cmd: Sequence[str], log_dir: Path) -> Rollguard:
    """Start ``cmd`` (a ``serve --config FILE`` command line) and wait for its listening line."""
    server = start(name, cmd, log_dir, cwd=REPO)
    found: list[re.Match[str]] = []

    def listening() -> bool:
        m = LISTENING.search(server.stderr_path.read_text(errors="replace"))
        if m:
            found.append(m)
        return m is not None

    try:
        wait_until(listening, [server], 30, f"{name} listens")
    except NotReady as exc:
        stop(server)
        raise RuntimeError(f"{exc}\n{server.stderr_tail()}") from exc
    m = found[0]
    data_port, admin_port = int(m.group(2)), int(m.group(4))
    return Rollguard(
        server, f"http://{m.group(1)}:{data_port}", f"http://{m.group(3)}:{admin_port}", data_port, admin_port
    )
