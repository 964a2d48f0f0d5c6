"""``rollguard loadtest`` as a user runs it, against real servers on loopback: through the proxy in front
of the sample models (an SLO that passes, one that fails on injected latency), straight at a server that
counts what it receives (the offered rate is held; JSONL bodies are sent as written), and its bad
arguments (exit 2, naming the argument)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from proxy.cli import main
from proxy.demo.sample_model import ModelBehavior
from tests.helpers.models import Models
from tests.helpers.tokens import OPERATOR_TOKEN

BOUND_S = 60.0  # any one loadtest run, start to exit


@dataclass
class Run:
    code: int
    out: list[str]
    err: str
    report: dict[str, Any] = field(default_factory=dict)


async def _loadtest(tmp_path: Path, *args: str) -> Run:
    """``python -m proxy loadtest ... --out tmp_path/out --plain``, killed after :data:`BOUND_S`."""
    out = tmp_path / "out"
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "proxy", "loadtest", *args, "--plain", "--out", str(out)),
        env={**os.environ, "ROLLGUARD_TOKEN": OPERATOR_TOKEN},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(BOUND_S):
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    report_path = out / "staging_report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return Run(proc.returncode, stdout.decode().splitlines(), stderr.decode(), report)


def _line(run: Run, start: str) -> str:
    found = [line for line in run.out if line.startswith(start)]
    assert len(found) == 1, (start, run.out, run.err)
    return found[0]


async def test_a_loadtest_through_the_proxy_passes_its_slo_split_by_version(
    tmp_path: Path, proxy_factory: Any
) -> None:
    proxy = await proxy_factory(canary={"weight": 50})
    run = await _loadtest(
        tmp_path,
        *("--target", f"{proxy.data_url}/v1/infer", "--rate", "100", "--duration", "3s"),
        *("--slo", "p95=500ms,p99=1s,errors=1%", "--admin", proxy.admin_url),
    )
    assert run.code == 0, (run.out, run.err)
    for start in ("PASS p95 <= 500 ms: all", "PASS p99 <= 1000 ms: all", "PASS errors <= 1%: all"):
        line = _line(run, start)
        assert " v1 " in line and " v2 " in line  # split by x-rollguard-version
    assert _line(run, "PASS rate held: 300 of 300 offered sent")
    assert run.out[-2:] == ["verdict: PASS", f"wrote {tmp_path / 'out' / 'staging_report.json'}"]

    load = run.report["load"]
    assert (load["offered"], load["sent"], load["all"]["requests"], load["all"]["status"]) == (
        300,
        300,
        300,
        {"200": 300},
    )
    by_version = load["versions"]
    assert set(by_version) == {"v1", "v2"}
    assert sum(v["requests"] for v in by_version.values()) == 300
    assert all(v["requests"] > 50 for v in by_version.values())  # sticky users split about evenly
    assert load["passed"] is True and load["throughput"]["passed"] is True
    assert [v["slo"] for v in load["slo"]] == ["p95", "p99", "errors"]
    assert load["resources"]["driver"]["cpu_s"] is not None
    # The proxy's own staging report around it: proxy-side figures for the same requests.
    infer = run.report["routes"]["infer"]["versions"]
    assert infer["baseline"]["requests"] + infer["candidate"]["requests"] == 300
    assert run.report["versions"] == {"baseline": "v1", "candidate": "v2"}


async def test_injected_latency_on_the_candidate_fails_the_slo_on_that_version(
    tmp_path: Path, models: Models, proxy_factory: Any
) -> None:
    models.candidate.model.set_behavior(ModelBehavior(version="v2", latency_ms=150.0))
    proxy = await proxy_factory(canary={"weight": 50})
    run = await _loadtest(
        tmp_path,
        *("--target", f"{proxy.data_url}/v1/infer", "--rate", "60", "--duration", "3s"),
        *("--slo", "p95=100ms,errors=1%"),
    )
    assert run.code == 1, (run.out, run.err)
    p95 = _line(run, "FAIL p95 <= 100 ms: all")
    v1, v2 = p95.split(" v1 ")[1].split(", v2 ")
    assert not v1.endswith("over") and v2.endswith("over"), p95
    assert _line(run, "PASS errors <= 1%")
    assert _line(run, "PASS rate held")
    assert "verdict: FAIL" in run.out
    load = run.report["load"]
    assert load["passed"] is False
    assert load["versions"]["v2"]["latency_ms"]["p50"] >= 150.0  # from the scheduled send time
    assert [v["passed"] for v in load["slo"]] == [False, True]
    assert "routes" not in run.report  # without --admin: the load run alone, in the report's frame
    assert run.report["format"] == 1


@dataclass
class Counting:
    url: str
    bodies: list[bytes]
    headers: list[dict[str, str]]


@pytest.fixture
async def counting_server() -> AsyncIterator[Counting]:
    """A server that answers every POST 200 at once and keeps what it received."""
    received = Counting(url="", bodies=[], headers=[])

    async def handle(request: web.Request) -> web.Response:
        received.bodies.append(await request.read())
        received.headers.append(dict(request.headers))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    received.url = f"http://127.0.0.1:{runner.addresses[0][1]}/score"
    try:
        yield received
    finally:
        await runner.cleanup()


async def test_the_driver_holds_the_offered_rate(tmp_path: Path, counting_server: Counting) -> None:
    run = await _loadtest(tmp_path, "--target", counting_server.url, "--rate", "200", "--duration", "3s")
    assert run.code == 0, (run.out, run.err)
    # Counted where the load lands, not timed: 200 req/s for 3 s is 600 requests, within 2%.
    assert 588 <= len(counting_server.bodies) <= 612
    load = run.report["load"]
    assert (load["offered"], load["sent"], load["throughput"]["dropped"], load["unsent"]) == (600, 600, 0, 0)
    assert load["versions"] == {}  # no x-rollguard-version straight at a server: totals only
    assert all(h["User-Agent"].startswith("rollguard-loadtest/") for h in counting_server.headers)


async def test_jsonl_bodies_are_sent_as_written_in_turn_with_the_given_headers(
    tmp_path: Path, counting_server: Counting
) -> None:
    lines = [b'{"features": {"amount": 1}}', b'{"features": {"amount": 2}}', b"[1, 2, 3]"]
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_bytes(lines[0] + b"\n\n" + lines[1] + b"\n" + lines[2] + b"\n")
    run = await _loadtest(
        tmp_path,
        *("--target", counting_server.url, "--rate", "20", "--duration", "1500ms"),
        *("--bodies", str(bodies), "-H", "x-api-key: k-123", "--slo", "errors=0%"),
    )
    assert run.code == 0, (run.out, run.err)
    assert sorted(counting_server.bodies) == sorted(lines * 10)
    assert {h["x-api-key"] for h in counting_server.headers} == {"k-123"}
    assert run.report["load"]["bodies"] == f"{bodies} (3 bodies)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "localhost:8080"], "--target 'localhost:8080': expected an http:// or https:// URL"),
        (["--stages", "30s"], "--stages '30s' (stage 1): expected DURATION:RATE"),
        (["--stages", "1s:10", "--duration", "5s"], "--duration goes with --rate"),
        (["--rate", "0"], "--rate 0: expected a number of requests per second above 0"),
        (["--duration", "30"], "--duration '30': a duration needs its unit"),
        (["--timeout", "never"], "--timeout 'never' is not a duration"),
        (["--slo", "p95=120"], "--slo 'p95=120': '120' is not a latency with its unit"),
        (["--slo", "errors=1"], "--slo 'errors=1': the error share is a percentage"),
        (["--concurrency", "0"], "--concurrency 0: expected at least 1"),
        (["--header", "no-colon"], "--header 'no-colon': expected 'Name: value'"),
        (["--config", "/nonexistent/rollguard.yaml"], "--config /nonexistent/rollguard.yaml: invalid config"),
        (["--pid", "999999999"], "--pid 999999999: no such process"),
    ],
)
def test_a_bad_argument_exits_2_naming_it(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = (
        ["loadtest", *args] if "--target" in args else ["loadtest", "--target", "http://127.0.0.1:9/", *args]
    )
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "no request bodies in it"), (b'{"a": 1}\n{nope\n', "line 2: not JSON")],
)
def test_bad_bodies_exit_2_naming_the_line(
    content: bytes, message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_bytes(content)
    assert main(["loadtest", "--target", "http://127.0.0.1:9/", "--bodies", str(bodies)]) == 2
    err = capsys.readouterr().err
    assert f"--bodies {bodies}" in err and message in err, err


def test_rate_and_stages_together_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["loadtest", "--target", "http://127.0.0.1:9/", "--rate", "5", "--stages", "1s:5"])
    assert exc.value.code == 2
    assert "--stages: not allowed with argument --rate" in capsys.readouterr().err
