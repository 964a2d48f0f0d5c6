"""The client commands as an operator runs them, against a real proxy on loopback: ``status --watch``,
``decisions [--follow]``, ``-o json``, shell completion, and the unreachable exit code."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from proxy.config.load import load_config
from tests.helpers.config import config_doc, write_config
from tests.helpers.faulty_upstream import refused_url
from tests.helpers.models import Models
from tests.helpers.proxy_runner import start_proxy
from tests.helpers.tokens import OPERATOR_TOKEN, VIEWER_TOKEN

SUBCOMMANDS = (
    "serve check-config backtest demo status decisions weights rollout keygen sign verify hash-key report "
    "wait reload shadow completion loadtest staging-report contract preflight"
).split()
BOUND = 30  # seconds any one command may take


def _env(token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "ROLLGUARD_TOKEN"}
    return {**env, "ROLLGUARD_TOKEN": token} if token else env


def _cli(admin: str, *args: str, token: str | None = OPERATOR_TOKEN) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args, "--admin", admin],
        capture_output=True,
        text=True,
        env=_env(token),
        timeout=BOUND,
    )


class Running:
    """A client command left running (``--watch``, ``--follow``), read line by line as it prints."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    @classmethod
    async def start(cls, admin: str, *args: str, token: str = VIEWER_TOKEN) -> Running:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "proxy", *args, "--admin", admin),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**_env(token), "PYTHONUNBUFFERED": "1", "COLUMNS": "80", "LINES": "24"},
        )
        return cls(proc)

    async def until(self, text: str) -> list[str]:
        """Read until a line holds ``text``; every line read so far."""
        assert self.proc.stdout is not None
        while not any(text in line for line in self.lines):
            raw = await asyncio.wait_for(self.proc.stdout.readline(), BOUND)
            assert raw, f"ended before printing {text!r}:\n" + "".join(self.lines)
            self.lines.append(raw.decode())
        return self.lines

    async def lines_read(self, count: int) -> list[str]:
        """Read until ``count`` lines were printed."""
        assert self.proc.stdout is not None
        while len(self.lines) < count:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), BOUND)
            assert raw, "ended early:\n" + "".join(self.lines)
            self.lines.append(raw.decode())
        return self.lines

    async def interrupt(self) -> tuple[int, str, str]:
        """Ctrl-C; the exit code, and everything it printed."""
        self.proc.send_signal(signal.SIGINT)
        return await self.ended()

    async def ended(self) -> tuple[int, str, str]:
        out, err = await asyncio.wait_for(self.proc.communicate(), BOUND)
        self.lines.append(out.decode())
        return await asyncio.wait_for(self.proc.wait(), BOUND), "".join(self.lines), err.decode()


async def _run(
    admin: str, *args: str, token: str | None = OPERATOR_TOKEN
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_cli, admin, *args, token=token)


async def test_status_watch_redraws_until_ctrl_c_which_is_exit_0(proxy: Any) -> None:
    watch = await Running.start(proxy.admin_url, "status", "--watch", "--interval", "100ms")
    await watch.until("idle")
    assert (await _run(proxy.admin_url, "weights", "set", "5", "--reason", "by hand")).returncode == 0
    lines = await watch.until("paused")  # a change is drawn again (a pipe gets a frame per change)
    code, out, err = await watch.interrupt()
    assert code == 0, err
    assert any(line.startswith("rollguard status") and proxy.admin_url in line for line in lines)
    assert "weight 5%" in out and "by hand" in out and "decisions (UTC)" in out
    assert "Traceback" not in err


async def test_status_watch_ends_as_unreachable_when_the_proxy_stops(tmp_path: Path, models: Models) -> None:
    doc = config_doc(tmp_path, models.baseline.url, models.candidate.url)
    running, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
    watch = await Running.start(running.admin_url, "status", "--watch", "--interval", "100ms")
    try:
        await watch.until("idle")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    code, _, err = await watch.ended()
    assert code == 3 and "cannot reach the admin API" in err, err


async def test_unreachable_admin_is_exit_3_for_every_read_command() -> None:
    nowhere = refused_url()
    for args in (("status",), ("status", "--watch"), ("decisions",), ("decisions", "--follow")):
        res = await _run(nowhere, *args)
        assert res.returncode == 3 and "cannot reach the admin API" in res.stderr, (args, res.stderr)


async def test_decisions_follow_prints_each_new_entry_once(proxy: Any) -> None:
    admin = proxy.admin_url
    assert (await _run(admin, "weights", "set", "5", "--reason", "first move")).returncode == 0
    follow = await Running.start(admin, "decisions", "--follow", "--interval", "100ms", "--limit", "5")
    await follow.until("first move")
    for n, reason in ((7, "second move"), (9, "third move")):
        assert (await _run(admin, "weights", "set", str(n), "--reason", reason)).returncode == 0
        await follow.until(reason)
    code, out, err = await follow.interrupt()
    assert code == 0, err
    moves = [line for line in out.splitlines() if "move" in line]
    assert [m.rsplit("  ", 1)[-1] for m in moves] == ["first move", "second move", "third move"], out
    # time, actor, action, from -> to, reason
    assert moves[1].split()[1:3] == ["ops", "set_weight"] and "paused 5% -> paused 7%" in moves[1]


async def test_decisions_json_is_the_servers_document(proxy: Any) -> None:
    admin = proxy.admin_url
    for n in (3, 4, 6):
        assert (await _run(admin, "weights", "set", str(n))).returncode == 0
    async with proxy.admin_client(VIEWER_TOKEN) as client:
        served = (await client.get("/decisions", params={"limit": 2})).json()
        status = (await client.get("/status")).json()
    res = await _run(admin, "decisions", "--limit", "2", "-o", "json", token=VIEWER_TOKEN)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == served and len(served["decisions"]) == 2
    table = await _run(admin, "decisions", "--limit", "2", token=VIEWER_TOKEN)
    assert len(table.stdout.splitlines()) == 2 and "paused 4% -> paused 6%" in table.stdout
    for flag in (("-o", "json"), ("--json",)):
        shown = await _run(admin, "status", *flag, token=VIEWER_TOKEN)
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert doc.keys() == status.keys() and doc["rollout"] == status["rollout"]
    # A state change in JSON is the server's answer too; in a table, one line.
    changed = await _run(admin, "rollout", "rearm", "-o", "json")
    assert changed.returncode == 5  # rearm is refused unless rolled back: the JSON flag changes no code
    rollback = json.loads((await _run(admin, "rollout", "rollback", "-o", "json")).stdout)
    assert rollback["phase"] == "rolled_back" and rollback["revision"] == doc["rollout"]["revision"] + 1


async def test_watch_json_prints_one_status_document_per_read(proxy: Any) -> None:
    watch = await Running.start(proxy.admin_url, "status", "--watch", "-o", "json", "--interval", "100ms")
    await watch.lines_read(2)
    code, out, err = await watch.interrupt()
    assert code == 0, err
    docs = [json.loads(line) for line in out.splitlines() if line]
    assert len(docs) >= 2 and all(d["rollout"]["phase"] == "idle" for d in docs)


def test_completion_scripts_name_every_subcommand_and_bash_accepts_its_own() -> None:
    scripts = {}
    for shell in ("bash", "zsh"):
        res = subprocess.run(
            [sys.executable, "-m", "proxy", "completion", shell],
            capture_output=True,
            text=True,
            timeout=BOUND,
        )
        assert res.returncode == 0, res.stderr
        scripts[shell] = res.stdout
        for name in SUBCOMMANDS:
            assert f"|{name}'" in res.stdout, (shell, name)
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    syntax = subprocess.run(
        [bash, "-n"], input=scripts["bash"], capture_output=True, text=True, timeout=BOUND
    )
    assert syntax.returncode == 0, syntax.stderr
    # And it completes: what bash offers after each of these words.
    typed = [  # the words so far, the last one being completed
        ("rollguard sta", 1),
        ('rollguard rollout ""', 2),
        ('rollguard status -o ""', 3),
        ("rollguard demo --scenario l", 3),
    ]
    probe = scripts["bash"] + "\n".join(
        f'COMP_WORDS=({words}); COMP_CWORD={at}; _rollguard; echo "${{COMPREPLY[*]}}"' for words, at in typed
    )
    offered = subprocess.run(
        [bash, "-c", probe], capture_output=True, text=True, timeout=BOUND
    ).stdout.splitlines()
    assert offered[0].split() == ["status", "staging-report"]
    assert {"start", "promote", "rollback", "--reason"} <= set(offered[1].split())
    assert offered[2].split() == ["table", "json"]
    assert offered[3] == "latency"
