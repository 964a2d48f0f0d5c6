"""The durability order, seen in the system calls of a real ``rollguard serve`` under strace.

README ("State and durability"): a change is appended to the decision log and fsynced, then the state
file is replaced atomically (temp file, fsync, rename, fsync of the folder), and only then acknowledged.
The store's unit tests cannot see fsync; this test watches the kernel interface of the process a user
starts, while an operator sets the weight through the admin API, and checks that order call by call.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.config import config_doc, write_config
from tests.helpers.models import Models
from tests.helpers.paths import ROOT
from tests.helpers.syscalls import Syscall, parse_strace, strace_or_skip
from tests.helpers.tokens import OPERATOR_TOKEN

WRITES = {"write", "pwrite64", "writev", "sendto", "sendmsg"}
SYNCS = {"fsync", "fdatasync"}
RENAMES = {"rename", "renameat", "renameat2"}
# "?name": a call this architecture lacks (rename on arm64) is skipped instead of being an error.
TRACED = "openat,write,?pwrite64,writev,sendto,sendmsg,fsync,fdatasync,?rename,?renameat,renameat2"
REASON = "syscall order check 5c1f"  # in both records of the change, and nowhere else
_LISTENING = re.compile(r"rollguard listening data=(\S+) admin=(\S+)")


class TracedProxy:
    """``python -m proxy serve --config FILE`` started by strace, so every thread is traced from exec."""

    def __init__(self, strace: str, config: Path, trace: Path) -> None:
        self.trace = trace
        self.stderr: list[str] = []
        # cwd=ROOT: ``-m proxy`` imports the package beside these tests (a copy of the repo tests its own).
        self.proc = subprocess.Popen(
            [strace, "-f", "-tt", "-y", "-s", "4096", "-qq", "-e", f"trace={TRACED}", "-o", str(trace), "--"]
            + [sys.executable, "-m", "proxy", "serve", "--config", str(config)],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_listening(self) -> str:
        """The admin URL, from the line serve prints once both listeners accept (blocks: run in a thread,
        under a timeout; stopping the proxy ends the pipe and so the wait)."""
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # strace's own errors come on this pipe too
            self.stderr.append(line)
            if m := _LISTENING.search(line):
                # Keep draining, or a chatty proxy would block on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return m.group(2)
        raise AssertionError("rollguard under strace exited before listening:\n" + "".join(self.stderr))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        self.stderr.extend(self.proc.stderr)

    def _proxy_pid(self) -> int | None:
        """strace's one child: the proxy (signalling strace itself would detach before the proxy is done)."""
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
            except OSError:
                continue
            if stat and int(stat.rpartition(")")[2].split()[1]) == self.proc.pid:
                return int(entry.name)
        return None

    def stop(self) -> None:
        """SIGTERM the proxy and wait for strace to follow it out: then the trace file is complete."""
        pid = self._proxy_pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired as hung:
            if (pid := self._proxy_pid()) is not None:
                os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(
                "rollguard under strace did not stop on SIGTERM:\n" + "".join(self.stderr)
            ) from hung


@pytest.fixture
def traced_proxy(tmp_path: Path) -> Iterator[Callable[[Path], TracedProxy]]:
    strace = strace_or_skip()
    started: list[TracedProxy] = []

    def start(config: Path) -> TracedProxy:
        started.append(TracedProxy(strace, config, tmp_path / "strace.txt"))
        return started[-1]

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.stop()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """tmp_path with symlinks resolved: ``-y`` prints the real path of each fd, so compare like with like."""
    return tmp_path.resolve()


async def _ready(client: httpx.AsyncClient, within: float = 30.0) -> None:
    """Poll /readyz (state loaded, baseline reachable): a condition, the deadline only a failure guard."""
    deadline = time.monotonic() + within
    while (r := await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, f"/readyz never became 200: {r.status_code} {r.text}"
        await asyncio.sleep(0.05)


def _first(calls: Iterable[Syscall], what: str, where: Callable[[Syscall], bool], excerpt: str) -> Syscall:
    found = next((c for c in calls if where(c)), None)
    assert found is not None, f"no {what} in the strace log:\n{excerpt}"
    assert found.ok, f"{what} failed: {found}"
    return found


def _before(earlier: Syscall, later: Syscall, promise: str) -> None:
    # The line where strace saw the first call return comes before the one where it saw the second enter.
    returned, entered = earlier.end, later.start
    assert returned < entered, (
        f"{promise}, but\n  {earlier!s:.240}\nreturned after\n  {later!s:.240}\nentered"
    )


async def test_weight_change_is_logged_fsynced_and_renamed_before_it_is_answered(
    root: Path, models: Models, traced_proxy: Callable[[Path], TracedProxy]
) -> None:
    state_dir = root / "state"  # config_doc's state.url
    state = state_dir / "rollguard-state.json"
    # The files the store writes, as -y names them: the log beside the state, the temp file .NAME.PID.tmp.
    log = re.compile(re.escape(str(state_dir / "rollguard-state.decisions.jsonl")))
    tmp_state = re.compile(re.escape(str(state_dir)) + r"/\.rollguard-state\.json\.\d+\.tmp")

    proxy = traced_proxy(write_config(root, config_doc(root, models.baseline.url, models.candidate.url)))
    # Blocking reads off the loop: the loop serves the sample models the proxy checks for readiness.
    admin_url = await asyncio.wait_for(asyncio.to_thread(proxy.wait_listening), 60)
    headers = {"authorization": f"Bearer {OPERATOR_TOKEN}"}
    async with httpx.AsyncClient(base_url=admin_url, headers=headers, timeout=30) as admin:
        await _ready(admin)
        etag = (await admin.get("/status")).headers["etag"]
        r = await admin.put("/weights", json={"canary": 12.5, "reason": REASON}, headers={"if-match": etag})
    assert r.status_code == 200, r.text
    revision: int = r.json()["revision"]
    # Stopping the proxy ends strace too, so the trace is complete and flushed when read: no polling.
    await asyncio.to_thread(proxy.stop)

    calls = parse_strace(await asyncio.to_thread(proxy.trace.read_text, encoding="utf-8", errors="replace"))

    def data(c: Syscall) -> bytes:
        return b"".join(c.strings)

    def writes_of_this_change(file: re.Pattern[str]) -> Callable[[Syscall], bool]:
        return lambda c: (
            c.name in WRITES and bool(file.fullmatch(c.fd_path or "")) and REASON.encode() in data(c)
        )

    def syncs(fd: str, after: Syscall) -> Callable[[Syscall], bool]:
        """An fsync/fdatasync of ``fd`` as -y prints it (``17</path>``: the number and what it names)."""
        return lambda c: c.name in SYNCS and c.args[:1] == (fd,) and c.start > after.end

    # What a failure prints: the calls on the state folder's files and the HTTP answers, in order, one
    # short line each (the folder shown as $STATE; the records themselves are up to 4096 bytes).
    excerpt = "\n".join(
        str(c).replace(str(state_dir), "$STATE")[:160]
        for c in calls
        if str(state_dir) in (c.fd_path or "") + str(c.args) or data(c).startswith(b"HTTP/1.1 ")
    )

    # 1. The decision-log entry of this change, and the first fsync of that fd after it.
    log_write = _first(calls, "write of the decision-log entry", writes_of_this_change(log), excerpt)
    log_sync = _first(
        calls, "fsync of the decision log after the entry", syncs(log_write.args[0], log_write), excerpt
    )
    # 2. The temp state file holding the new state, and its fsync (before the rename the fd names it).
    tmp_write = _first(calls, "write of the temp state file", writes_of_this_change(tmp_state), excerpt)
    tmp = tmp_write.fd_path or ""
    tmp_sync = _first(calls, "fsync of the temp state file", syncs(tmp_write.args[0], tmp_write), excerpt)
    # 3. The temp file renamed over the state file (startup renamed the same names: take the next one).
    renamed = _first(
        calls,
        f"rename of {tmp} over {state}",
        lambda c: (
            c.name in RENAMES
            and [s.decode() for s in c.strings[:2]] == [tmp, str(state)]
            and c.start > tmp_write.end
        ),
        excerpt,
    )
    # 4. The folder fsynced (on whichever fd opened it), so the rename itself survives a power cut.
    dir_sync = _first(
        calls,
        "fsync of the state folder after the rename",
        lambda c: c.name in SYNCS and c.fd_path == str(state_dir) and c.start > renamed.end,
        excerpt,
    )
    # 5. The first bytes of the answer: the 200 carrying the new revision, on a socket. Found on its own,
    # not as "the next write after the fsync", so an answer sent too early is caught, not skipped over.
    answer = _first(
        calls,
        f"HTTP/1.1 200 answer with etag {revision}",
        lambda c: (
            c.name in WRITES
            and (c.fd_path or "").startswith("socket:")
            and data(c).startswith(b"HTTP/1.1 200 ")
            and f'etag: "{revision}"'.encode() in data(c)
        ),
        excerpt,
    )

    # Each "after" above holds by construction; these are the orderings the README promises.
    _before(log_sync, tmp_write, "the decision log must be fsynced before the state file is written")
    _before(tmp_sync, renamed, "the temp state file must be fsynced before it is renamed")
    _before(dir_sync, answer, "the change must be durable before the admin request is answered")
    # And it was this change: one entry in the log, carrying the revision the answer acknowledged.
    assert f'"revision":{revision}'.encode() in data(log_write), log_write
    assert sum(writes_of_this_change(log)(c) for c in calls) == 1, excerpt


# Lines as strace 6.1 writes them with -f -tt -y: two threads interleaved, a call split over two lines,
# a path with a comma and a parenthesis, escapes, buffers inside structs, a failed call, a signal, an exit.
SAMPLE = r"""
103 22:52:19.968167 fsync(5</tmp/a, (b)/log> <unfinished ...>
102 22:52:19.968200 write(4<socket:[1348890]>, "HTTP/1.1 200 OK\r\netag: \"2\"\r\n\303\251"..., 83) = 83
102 22:52:19.968228 rename("/tmp/x", "/tmp/y") = -1 ENOENT (No such file or directory)
103 22:52:19.968300 <... fsync resumed>) = 0
102 22:52:19.968400 --- SIGTERM {si_signo=SIGTERM, si_code=SI_USER, si_pid=1, si_uid=0} ---
102 22:52:19.968450 writev(9<socket:[5]>, [{iov_base="HTTP/1.1 ", iov_len=9}, {iov_base="200", iov_len=3}], 2) = 12
102 22:52:19.968460 sendmsg(9<socket:[5]>, {msg_name=NULL, msg_namelen=0, msg_iov=[{iov_base="a,\"b)", iov_len=5}], msg_iovlen=1, msg_controllen=0, msg_flags=0}, 0) = 5
104 22:52:19.968500 write(2<pipe:[7]>, "bye", 3 <unfinished ...>
103 22:52:19.968600 +++ exited with 0 +++
"""  # noqa: E501 (strace lines are as long as they are)


def test_parser_joins_split_calls_and_keeps_strace_order() -> None:
    # The write still unfinished when the trace ends never returned: it is not a call that happened.
    fsync, write, rename, writev, sendmsg = parse_strace(SAMPLE)
    assert (fsync.name, fsync.pid, fsync.fd_path, fsync.result, fsync.ok) == (
        "fsync",
        103,
        "/tmp/a, (b)/log",
        "0",
        True,
    )
    assert (fsync.start, fsync.end) == (2, 5)  # entered before the write and the rename, returned after them
    assert write.fd_path == "socket:[1348890]" and write.returned == 83
    assert write.strings == ['HTTP/1.1 200 OK\r\netag: "2"\r\n\u00e9'.encode()]
    assert rename.strings == [b"/tmp/x", b"/tmp/y"] and not rename.ok
    assert writev.strings == [b"HTTP/1.1 ", b"200"] and writev.fd_path == "socket:[5]"
    assert sendmsg.strings == [b'a,"b)'] and sendmsg.returned == 5 and len(sendmsg.args) == 3
    assert write.end < fsync.end and not fsync.end < rename.start  # what "returned before entered" means
