"""Reading what ``strace -f -tt -y -s N -o FILE`` wrote: one record per system call, in strace's order.

With ``-f`` several threads run at once, so a call can be split over two lines: ``write(3</f>, "x", 1
<unfinished ...>`` when it enters and ``<... write resumed>) = 1`` when it returns, with other threads'
lines between. :func:`parse_strace` joins the halves and remembers both line numbers. strace handles
one ptrace stop at a time and writes each line as it handles it, so "call A returned before call B
entered" is exactly ``a.end < b.start``: no clock is compared (``-tt`` times are kept for messages).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

_LINE = re.compile(r"^(?:\[pid\s+)?(?P<pid>\d+)\]?\s+(?:(?P<time>\d\d:\d\d:\d\d\.\d+)\s+)?(?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>\w+)\((?P<body>.*)$", re.DOTALL)
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>\s?(?P<tail>.*)$", re.DOTALL)
_UNFINISHED = " <unfinished ...>"
_ANNOTATED_FD = re.compile(r"^-?\d+<(?P<path>.*)>$", re.DOTALL)
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": 10, "t": 9, "r": 13, "v": 11, "f": 12, "a": 7, "b": 8, "e": 27}


@dataclass(frozen=True)
class Syscall:
    """One system call as strace printed it (``args`` and ``result`` are strace's text)."""

    pid: int
    time: str
    name: str
    args: tuple[str, ...]
    result: str
    start: int
    """Line number (from 1) where strace saw the call enter."""
    end: int
    """Line number where strace saw it return (``start`` unless it was ``<unfinished ...>``)."""

    @property
    def ok(self) -> bool:
        """It returned a non-negative value (``-1 EIO (...)`` and ``?`` are failures)."""
        return bool(re.match(r"\d+", self.result))

    @property
    def returned(self) -> int | None:
        m = re.match(r"-?\d+", self.result)
        return int(m.group()) if m else None

    @property
    def fd_path(self) -> str | None:
        """What ``-y`` says the first argument (an fd) refers to: a path, ``socket:[123]``, ``pipe:[4]``."""
        m = _ANNOTATED_FD.match(self.args[0]) if self.args else None
        return m.group("path") if m else None

    @property
    def strings(self) -> list[bytes]:
        """Every quoted string in the arguments, in order and unescaped: a path, write's buffer, and the
        ``iov_base`` of each buffer writev/sendmsg send (truncated ones end where strace cut them)."""
        return [unescape(m.group(1)) for m in _STRING.finditer(", ".join(self.args))]

    def __str__(self) -> str:
        call = f"{self.name}({', '.join(self.args)}) = {self.result}"
        return f"line {self.start}: {self.pid} {self.time} {call}"


def unescape(text: str) -> bytes:
    """strace's C-style escapes (``\\n``, ``\\"``, ``\\x1b``, ``\\303``) back to the bytes they stand for."""

    def byte(m: re.Match[str]) -> str:
        code = m.group(1)
        if code[0] == "x":
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8))
        return chr(_SIMPLE_ESCAPES.get(code, ord(code)))

    return _ESCAPE.sub(byte, text).encode("latin-1")


def _split_call(text: str) -> tuple[tuple[str, ...], str]:
    """``fd<path>, "a, b)", 3) = 3`` -> (args, result): split at top-level commas, outside quotes, brackets
    and ``-y`` annotations (a path may hold commas or parentheses)."""
    args: list[str] = []
    depth, i, begin = 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif ch == "<":
            close = text.find(">", i)
            i = close if close != -1 else len(text)
        elif ch in "([{":
            depth += 1
        elif ch in "}]":
            depth -= 1
        elif ch == ")":
            if depth == 0:
                args.append(text[begin:i].strip())
                result = text[i + 1 :].strip()
                return tuple(a for a in args if a), result.removeprefix("=").strip()
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(text[begin:i].strip())
            begin = i + 1
        i += 1
    raise ValueError(f"no closing parenthesis in strace call text: {text!r}")


def parse_strace(output: str) -> list[Syscall]:
    """Every call that returned, ordered by where it entered. Signals, exits and calls still unfinished
    when the trace ended (a thread killed mid-call) are left out: they never completed."""
    calls: list[Syscall] = []
    pending: dict[int, tuple[str, str, str, int]] = {}  # pid -> (name, text so far, time, start line)
    for number, line in enumerate(output.splitlines(), start=1):
        m = _LINE.match(line)
        if m is None:
            continue
        pid, time, rest = int(m.group("pid")), m.group("time") or "", m.group("rest")
        resumed = _RESUMED.match(rest)
        if resumed is not None:
            if pid not in pending or pending[pid][0] != resumed.group("name"):
                raise ValueError(f"line {number}: resumes a call this thread did not start: {line!r}")
            name, head, time, start = pending.pop(pid)
            text = head + resumed.group("tail")
        else:
            call = _CALL.match(rest)
            if call is None:  # "+++ exited with 0 +++", "--- SIGTERM {...} ---"
                continue
            name, text, start = call.group("name"), call.group("body"), number
            if text.endswith(_UNFINISHED):
                pending[pid] = (name, text.removesuffix(_UNFINISHED), time, start)
                continue
        args, result = _split_call(text)
        calls.append(Syscall(pid, time, name, args, result, start, number))
    return sorted(calls, key=lambda c: c.start)


def strace_or_skip() -> str:
    """The strace binary, once it has traced a child here. Skip when it is missing or ptrace is refused
    (a container without CAP_SYS_PTRACE, a seccomp profile) — except under CI, which must run the test."""
    path = shutil.which("strace") or ("/usr/bin/strace" if os.access("/usr/bin/strace", os.X_OK) else None)
    why = None
    if path is None:
        why = "strace is not installed (Debian package 'strace'; .ci/run installs it)"
    else:
        probe = subprocess.run(
            [path, "-f", "-o", os.devnull, "--", "true"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if probe.returncode != 0:
            detail = probe.stderr.strip().splitlines()[-1:] or [f"exit status {probe.returncode}"]
            why = f"strace cannot trace a process here (ptrace not permitted?): {detail[0]}"
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the syscall-order test: {why}")
        pytest.skip(why)
    assert path is not None
    return path
