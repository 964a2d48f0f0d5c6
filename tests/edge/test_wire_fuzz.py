"""Raw bytes into the data listener, drawn by hypothesis (``tests/helpers/wire.py``), over real sockets.

Whatever a connection sends, the proxy must answer well-formed HTTP/1.1 or close; never answer a 5xx of
its own making (501 and 505 are its refusals of what it does not serve); never keep a connection past
its deadlines; never log an error. After the run it must still serve an ordinary request, and no
exchange observer may have failed. One proxy serves the whole run, on uvloop (the loop ``rollguard
serve`` runs on), with short deadlines so that the inputs that meet them cost little.

``ROLLGUARD_FUZZ_EXAMPLES`` sets how many inputs are drawn (``make fuzz`` sets it; ``make test`` runs
the short default). The counts of what was tried and what failed are printed at the end of the run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
import uvloop
from aiohttp import web
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from proxy.config.load import load_config
from proxy.demo.sample_model import ModelBehavior, SampleModel
from tests.helpers.config import config_doc, write_config
from tests.helpers.metrics import metric_samples, sample
from tests.helpers.proxy_runner import RunningProxy, start_proxy
from tests.helpers.traffic import VALID_BODY
from tests.helpers.wire import request_bytes

# Whether the inputs are replayed or new is the profile's (tests/conftest.py): fixed in make test and CI.
EXAMPLES = int(os.environ.get("ROLLGUARD_FUZZ_EXAMPLES", "150"))

HEAD_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
LIMITS = {
    "head_timeout": f"{int(HEAD_TIMEOUT * 1000)}ms",
    "body_timeout": f"{int(BODY_TIMEOUT * 1000)}ms",
    # Small, so that the strategies reach the limits with few bytes: heads over 4 KiB are refused (431),
    # bodies over 8 KiB stream to the model unchecked, over 16 KiB are refused (413).
    "max_header_bytes": "4KiB",
    "replay_body_bytes": "8KiB",
    "max_body_bytes": "16KiB",
}
# Once the last byte is sent, a head must be complete within head_timeout of its first byte and a body
# within body_timeout of its head, so the proxy has no reason to keep a connection that is not idle
# longer than the larger of the two. The slack covers timers that a loaded 2-core machine runs late.
SCHEDULING_SLACK = 1.5
DEADLINE = max(HEAD_TIMEOUT, BODY_TIMEOUT) + SCHEDULING_SLACK
SETTLE = 0.2  # for exchanges still with the (millisecond) model when their client has gone

# 501 and 505 are the proxy refusing what it does not serve. 502, 503 and 504 would mean the upstream
# failed, timed out or the listener was overloaded: the sample models are healthy, take whatever the
# head limit lets through (``roomy_model``) and one connection is open at a time, so none of them has a
# legitimate cause here.
ALLOWED_5XX = {501, 505}

# How a connection ends after its bytes: a request asking for close (the probe), the client's
# half-close, or nothing at all (then the deadlines alone may end it). "wait" costs the whole deadline
# whenever the bytes leave the connection idle, hence its small share.
ENDINGS = ["probe"] * 6 + ["half-close"] * 2 + ["wait"] * 2
PROBE = b"GET /fuzz-probe HTTP/1.1\r\nHost: rollguard\r\nX-Request-Id: %s\r\nConnection: close\r\n\r\n"
PROBE_PADDING = b"X-Padding: a different length\r\n"

VALID_JSON = orjson.dumps(VALID_BODY)


def post(body: bytes) -> bytes:
    return b"POST /v1/infer HTTP/1.1\r\nHost: rollguard\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


# -- one connection --------------------------------------------------------------------------------


@dataclass
class Transcript:
    """What one connection sent, how it ended, and everything the proxy said on it."""

    sent: bytes
    ending: str
    received: bytes
    # "fin"; "reset" (closed as well, though an answer may have been lost); "deadline": still open
    # DEADLINE after the last byte was sent.
    close: str
    after_deadline: bytes = b""  # the answer to a fresh request sent at the deadline
    after_deadline_close: str = ""


def read_until_close(sock: socket.socket, deadline: float) -> tuple[bytes, str]:
    chunks: list[bytes] = []
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        if not chunk:
            return b"".join(chunks), "fin"
        chunks.append(chunk)
    return b"".join(chunks), "deadline"


def probe(request_id: bytes, padded: bool = False) -> bytes:
    head = PROBE % request_id
    return head[:-2] + PROBE_PADDING + b"\r\n" if padded else head


def converse(address: tuple[str, int], data: bytes, ending: str, padded_probe: bool = False) -> Transcript:
    with socket.create_connection(address, timeout=DEADLINE) as sock:
        try:
            # The probe goes in the same write: bytes that follow a request in one read must be parsed too.
            sock.sendall(data + probe(b"probe-end", padded_probe) if ending == "probe" else data)
            if ending == "half-close":
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy answered and closed before reading it all: what it said is still to be read
        received, close = read_until_close(sock, time.monotonic() + DEADLINE)
        transcript = Transcript(sent=data, ending=ending, received=received, close=close)
        if close == "deadline" and ending != "half-close":
            # Open this long is only right if the proxy is idle between requests: then a fresh request is
            # answered as one (its id echoed) and, asking for close, closes the connection. After a probe
            # it is wrong anyway; the answer tells what state the connection was left in.
            try:
                sock.sendall(probe(b"probe-deadline"))
            except OSError:
                pass
            more, transcript.after_deadline_close = read_until_close(sock, time.monotonic() + DEADLINE)
            transcript.after_deadline = more
        return transcript


# -- reading the answers ---------------------------------------------------------------------------

STATUS_LINE = re.compile(rb"HTTP/1\.1 ([1-5][0-9][0-9]) [^\r\n]*\r\n")


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]  # lower-case names; the last of repeated ones
    complete: bool


def parse_responses(data: bytes) -> tuple[list[Response], str | None]:
    """The answers in ``data``, in order, and what is wrong with the bytes if they are not HTTP/1.1."""
    out: list[Response] = []
    pos = 0
    while pos < len(data):
        m = STATUS_LINE.match(data, pos)
        if m is None:
            return out, f"not an HTTP/1.1 status line at byte {pos}: {data[pos : pos + 80]!r}"
        head_end = data.find(b"\r\n\r\n", m.start())
        if head_end == -1:
            out.append(Response(int(m[1]), {}, complete=False))
            return out, None
        headers: dict[bytes, bytes] = {}
        for line in data[m.start() : head_end].split(b"\r\n")[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                return out, f"not a header line: {line!r}"
            headers[name.lower()] = value.strip()
        status = int(m[1])
        pos = head_end + 4
        if 100 <= status < 200 or status in (204, 304):
            out.append(Response(status, headers, complete=True))
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            pos, complete = _skip_chunked(data, pos)
            out.append(Response(status, headers, complete))
        elif b"content-length" in headers:
            if not headers[b"content-length"].isdigit():
                return out, f"not a length: {headers[b'content-length']!r}"
            length = int(headers[b"content-length"])
            # The client cannot tell which of its mutated requests the proxy parsed as HEAD, whose answer
            # has a length and no body; such an answer is followed by the next status line, or by nothing.
            if STATUS_LINE.match(data, pos) or pos == len(data):
                length = 0
            complete = pos + length <= len(data)
            out.append(Response(status, headers, complete))
            pos += length
        else:
            out.append(Response(status, headers, complete=True))  # delimited by the close
            pos = len(data)
    return out, None


def _skip_chunked(data: bytes, pos: int) -> tuple[int, bool]:
    """Where a chunked body starting at ``pos`` ends, and whether all of it is in ``data``."""
    while True:
        line_end = data.find(b"\r\n", pos)
        if line_end == -1:
            return len(data), False
        try:
            size = int(data[pos:line_end].split(b";")[0], 16)
        except ValueError:
            return len(data), False  # not a chunk size: what follows cannot be read as an answer
        pos = line_end + 2
        if size == 0:
            trailers_end = data.find(b"\r\n", pos)  # no trailers from this proxy: the empty line
            return (len(data), False) if trailers_end == -1 else (trailers_end + 2, True)
        pos += size + 2
        if pos > len(data):
            return len(data), False


# -- the contract ----------------------------------------------------------------------------------


def idle_at_deadline(t: Transcript) -> bool:
    """Whether the request sent at the deadline was answered as a request of its own."""
    after, _ = parse_responses(t.after_deadline)
    return any(r.headers.get(b"x-request-id") == b"probe-deadline" for r in after)


def left_idle_after_probe(t: Transcript) -> bool:
    return t.ending == "probe" and t.close == "deadline" and idle_at_deadline(t)


def problems_with(t: Transcript) -> list[str]:
    responses, error = parse_responses(t.received + t.after_deadline)
    problems = [error] if error else []
    for r in responses:
        if r.status >= 500 and r.status not in ALLOWED_5XX:
            problems.append(f"answered {r.status}")
        elif 100 <= r.status < 200 and r.status != 100:
            problems.append(f"answered {r.status}: no interim answer but 100 Continue is expected")
    if responses and not responses[-1].complete and t.ending != "half-close":
        # A half-closed client may lose the rest of an answer (uvicorn closes on the client's EOF).
        problems.append(f"the answer with status {responses[-1].status} was cut short")
    if t.close != "deadline":
        return problems
    idle = idle_at_deadline(t)
    if t.ending == "probe":
        # The probe asks for close: answered, or swallowed by a request that then fails, it ends the
        # connection either way (one that completes a declared body to the byte is told apart in check).
        problems.append(
            f"the connection was still open {DEADLINE}s after a request asking for close "
            f"({'idle: that request was dropped unanswered' if idle else 'not idle'}; a fresh request got "
            f"{t.after_deadline[:120]!r})"
        )
    elif not idle or t.after_deadline_close == "deadline":
        problems.append(
            f"the connection was still open {DEADLINE}s after the last byte sent, and not between "
            f"requests (a fresh request then got {t.after_deadline[:120]!r})"
        )
    return problems


@dataclass
class Tally:
    """What the run tried and saw; failures count every failing execution, shrinking included."""

    inputs: int = 0
    failed: int = 0
    first_failure: int | None = None
    errors_logged: int = 0  # proxy error records seen up to the last input
    statuses: Counter[int] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)

    def record(self, t: Transcript, problems: list[str]) -> None:
        self.inputs += 1
        responses, _ = parse_responses(t.received + t.after_deadline)
        self.statuses.update(r.status for r in responses)
        self.closes[t.close if t.close != "deadline" else f"deadline+{t.after_deadline_close}"] += 1
        if problems:
            self.failed += 1
            if self.first_failure is None:
                self.first_failure = self.inputs

    def summary(self) -> str:
        first = f" (first at input {self.first_failure})" if self.first_failure else ""
        statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        closes = ", ".join(f"{c}: {n}" for c, n in self.closes.most_common())
        return (
            f"\nwire fuzz: {self.inputs} inputs tried, {self.failed} failed{first}; "
            f"answers {{{statuses}}}; connections ended {{{closes}}}"
        )


# -- the run ---------------------------------------------------------------------------------------


@asynccontextmanager
async def roomy_model(version: str) -> AsyncIterator[str]:
    """A sample model whose server takes as many header fields as the proxy's head limit lets through.
    aiohttp's default of 128 refuses some forwarded requests, with a 400 that carries a body even for
    HEAD, which the proxy rightly answers 502: the upstream's failure would hide what the proxy did."""
    runner = web.AppRunner(
        SampleModel(ModelBehavior(version=version)).make_app(), access_log=None, max_headers=4096
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def fuzzed_proxy(tmp_path: Path) -> AsyncIterator[RunningProxy]:
    async with roomy_model("v1") as baseline, roomy_model("v2") as candidate:
        doc = config_doc(tmp_path, baseline, candidate, limits=LIMITS)
        proxy, stop, task = await start_proxy(load_config(write_config(tmp_path, doc)))
        try:
            yield proxy
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)


async def observer_errors(proxy: RunningProxy) -> float:
    return sample(await metric_samples(proxy.admin_url), "rollguard_observer_errors_total")


# The sample models run in this process too; what their aiohttp server logs is theirs, not the proxy's
# (an upstream refusing a forwarded request, say for too many headers, answers 400 and logs an error).
MODEL_LOGGERS = ("aiohttp.server", "aiohttp.access", "aiohttp.web")


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR and not r.name.startswith(MODEL_LOGGERS)]


async def fuzz_listener(proxy: RunningProxy, caplog: pytest.LogCaptureFixture, tally: Tally) -> None:
    parts = urlsplit(proxy.data_url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,  # the deadlines under test are the proxy's, checked per connection
        # Inputs over the head limit are large on purpose, and each costs a connection's round trips.
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=request_bytes(), ending=st.sampled_from(ENDINGS))
    # An asterisk-form target (RFC 9112 §3.2.4) is appended to the upstream's URL as is, which makes its
    # port "<port>*": yarl raises in the forwarder, a 500.
    @example(data=b"OPTIONS * HTTP/1.1\r\nHost: rollguard\r\n\r\n", ending="probe")
    # JSON nested 256 deep parses (orjson allows 1024) but the route's contract check (jsonschema_rs)
    # raises "Recursion limit reached": a 500.
    @example(data=post(b"[" * 256 + b"1" + b"]" * 256), ending="probe")
    # Two pipelined requests and the client's FIN: uvicorn marks only the last one disconnected, so the
    # first writes its answer to the closed transport, which uvloop refuses with RuntimeError: a logged
    # traceback, and a local 500 counted for a client that left.
    @example(data=post(VALID_JSON) * 2, ending="half-close")
    # CONNECT with an origin-form target is forwarded as an ordinary request; llhttp takes it for an
    # upgrade, so what follows it in the same read (here the probe) is never parsed nor answered.
    @example(data=b"CONNECT /v1/infer HTTP/1.1\r\nHost: rollguard\r\n\r\n", ending="probe")
    # Not a bug: the probe completes, to the byte, a body whose length was declared, and the connection
    # is rightly left idle; the check must tell this from a dropped request.
    @example(
        data=b"POST /v1/infer HTTP/1.1\r\nContent-Length: %d\r\n\r\n[" % (1 + len(probe(b"probe-end"))),
        ending="probe",
    )
    def check(data: bytes, ending: str) -> None:
        logged = len(error_records(caplog))
        transcript = converse(address, data, ending)
        if left_idle_after_probe(transcript):
            # The probe may have been taken, to the byte, for the rest of a body whose length was
            # declared; one of another length cannot be. A request dropped unread is dropped again.
            transcript = converse(address, data, ending, padded_probe=True)
        if ending == "half-close":
            # The client's FIN closes the connection at once, while requests read before it may still be
            # with the model; what they log when they come back belongs to this input.
            time.sleep(SETTLE)
        problems = problems_with(transcript)
        problems += [f"logged {r.levelname}: {r.getMessage()}" for r in error_records(caplog)[logged:]]
        tally.record(transcript, problems)
        tally.errors_logged = len(error_records(caplog))
        assert not problems, (problems, transcript)

    await asyncio.to_thread(check)


async def scenario(tmp_path: Path, caplog: pytest.LogCaptureFixture, tally: Tally) -> None:
    async with fuzzed_proxy(tmp_path) as proxy:
        before = await observer_errors(proxy)
        await fuzz_listener(proxy, caplog, tally)
        async with httpx.AsyncClient(base_url=proxy.data_url, timeout=5) as c:
            r = await c.post("/v1/infer", json=VALID_BODY)
        assert r.status_code == 200, r.text
        assert await observer_errors(proxy) == before
        await asyncio.sleep(SETTLE)
        assert not error_records(caplog)[tally.errors_logged :]  # nothing logged after the last input
        samples = await metric_samples(proxy.admin_url)
    if tally.inputs >= 100:
        # The draw reached both the listener's refusals and the model, not just one side of the proxy.
        assert sample(samples, "rollguard_listener_rejections_total", listener="data") > 0
        assert {200, 400} <= tally.statuses.keys(), tally.summary()


@pytest.mark.timeout(120 + 2 * EXAMPLES)
def test_raw_bytes_get_http_answers_within_the_deadlines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    tally = Tally()

    async def bounded() -> None:
        async with asyncio.timeout(100 + 2 * EXAMPLES):
            await scenario(tmp_path, caplog, tally)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(bounded())
    finally:
        with capsys.disabled():
            print(tally.summary())


def test_the_answer_reader_refuses_what_is_not_http() -> None:
    ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiHTTP/1.1 408 Request Timeout\r\n\r\n"
    assert parse_responses(ok) == (
        [Response(200, {b"content-length": b"2"}, True), Response(408, {}, True)],
        None,
    )
    assert parse_responses(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhi")[0][0].complete is False
    assert parse_responses(b"HTTP/1.0 200 OK\r\n\r\n")[1] is not None
    assert parse_responses(b"Internal Server Error")[1] is not None
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    assert parse_responses(chunked) == ([Response(200, {b"transfer-encoding": b"chunked"}, True)], None)
    held = Transcript(sent=b"", ending="wait", received=b"", close="deadline")
    assert problems_with(held)
