"""The ``rollguard`` command.

Server commands: ``serve --config FILE``, ``check-config FILE``, ``demo``; ``backtest --config FILE
TRACE`` replays a trace through the controller offline. Client commands talk to a
running proxy's admin listener (``--admin URL``, token from ``ROLLGUARD_TOKEN``): ``status``
(``--watch``), ``decisions`` (``--follow``), ``weights set N``, ``rollout ACTION``, ``shadow set X``,
``report``, ``reload``, ``wait --for``; each prints lines for people or, with ``-o json``, the server's
JSON. ``completion bash|zsh`` prints a shell completion script drawn from the parser below. Exit codes:
the ``EXIT_*`` constants below (0 success, 2 bad usage or config).
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from proxy._version import __version__
from proxy.content.text import printable
from proxy.errors import ConfigError
from proxy.reports.artifacts import ARTIFACTS

DEFAULT_ADMIN = "http://127.0.0.1:9901"


# Exit codes of the client commands, distinct so a pipeline can tell a refusal from an outage.
EXIT_FAILED = 1  # the server failed or answered otherwise (5xx, 404), or nothing to do
EXIT_USAGE = 2  # bad arguments or an invalid config
EXIT_UNREACHABLE = 3  # no admin API at --admin (connection, TLS), or no answer from the MLflow server
EXIT_UNAUTHORIZED = 4  # 401/403: no token, a wrong one, or a viewer token for an operator's change
EXIT_REFUSED = 5  # 409/412/422: an illegal move, a stale revision, an invalid value or config
EXIT_TIMEOUT = 6  # ``wait``: the condition did not hold within --timeout
EXIT_OTHER_END = 7  # ``wait``: the rollout ended the other way (rolled back while waiting for promoted)


def _exit_for(status: int) -> int:
    if status in (401, 403):
        return EXIT_UNAUTHORIZED
    if status in (409, 412, 422):
        return EXIT_REFUSED
    return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rollguard", description="Safe canary and shadow rollouts for model servers."
    )
    p.add_argument("--version", action="version", version=f"rollguard {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", required=True, metavar="FILE", help="path to the YAML config")

    check = sub.add_parser("check-config", help="validate a config file without starting anything")
    check.add_argument("file")

    bt = sub.add_parser(
        "backtest", help="replay a trace of both versions' outcomes through the controller (no servers)"
    )
    bt.add_argument(
        "--config", required=True, metavar="FILE", help="the config whose canary settings are replayed"
    )
    bt.add_argument("trace", help="JSONL, one request per line with both outcomes; - for stdin")
    bt.add_argument("--json", action="store_true", help="one JSON object per decision, then a summary")
    bt.add_argument("--seed", type=int, default=0, help="the routing draw for requests without a key")
    demo = sub.add_parser("demo", help="self-contained demo on loopback: models, proxy, traffic, live view")
    demo.add_argument(
        "--scenario",
        default="good",
        choices=["good", "latency", "errors", "drift", "schema"],
        help="good: a healthy candidate is promoted by the controller; latency, errors, drift, schema: a "
        "bad one is rolled back for that reason",
    )
    demo.add_argument("--duration", type=float, default=120.0, help="upper bound in seconds (default 120)")
    demo.add_argument("--rps", type=float, default=300.0, help="requests per second (default 300)")
    demo.add_argument(
        "--out", default="rollguard-demo", metavar="DIR", help="folder for the demo's config, state and logs"
    )
    demo.add_argument("--plain", action="store_true", help="print lines instead of the live view")

    def client(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--admin",
            default=os.environ.get("ROLLGUARD_ADMIN", DEFAULT_ADMIN),
            help=f"admin URL (default {DEFAULT_ADMIN}, or $ROLLGUARD_ADMIN)",
        )
        out = parser.add_mutually_exclusive_group()
        out.add_argument(
            "-o",
            "--output",
            choices=OUTPUTS,
            default="table",
            help="table (default): lines for people; json: the server's JSON document",
        )
        out.add_argument("--json", dest="output", action="store_const", const="json", help="-o json")
        tls = parser.add_argument_group("TLS to an https:// admin listener")
        tls.add_argument(
            "--cacert",
            default=os.environ.get("ROLLGUARD_CACERT"),
            metavar="FILE",
            help="PEM bundle of the CAs to trust for the admin listener (default: the system store, or "
            "$ROLLGUARD_CACERT)",
        )
        tls.add_argument(
            "--cert",
            default=os.environ.get("ROLLGUARD_CLIENT_CERT"),
            metavar="FILE",
            help="client certificate (PEM) for an admin listener that requires one, or "
            "$ROLLGUARD_CLIENT_CERT",
        )
        tls.add_argument(
            "--key",
            default=os.environ.get("ROLLGUARD_CLIENT_KEY"),
            metavar="FILE",
            help="its private key (PEM; default: in the --cert file), or $ROLLGUARD_CLIENT_KEY",
        )

    status = sub.add_parser(
        "status", help="show the rollout: phase, step, weights, gates, the window per version, upstreams"
    )
    status.add_argument(
        "-w", "--watch", action="store_true", help="redraw it in place until Ctrl-C, with the decisions"
    )
    status.add_argument(
        "--interval", type=_seconds, default=1.0, help="with --watch: how often to read (default 1s)"
    )
    client(status)

    dec = sub.add_parser("decisions", help="print the decision log, newest last (--follow: as it grows)")
    dec.add_argument(
        "-n",
        "--limit",
        type=_limit,
        default=20,
        help=f"the latest N entries (default 20, at most {MAX_LIMIT})",
    )
    dec.add_argument(
        "-f", "--follow", action="store_true", help="then print each new entry as it is logged, until Ctrl-C"
    )
    dec.add_argument(
        "--interval", type=_seconds, default=1.0, help="with --follow: how often to read (default 1s)"
    )
    client(dec)

    weights = sub.add_parser("weights", help="set the canary weight by hand (pauses the controller)")
    wsub = weights.add_subparsers(dest="action", required=True)
    wset = wsub.add_parser("set", help="set the candidate's share in percent")
    wset.add_argument("percent", type=float)
    wset.add_argument("--reason", default="")
    wset.add_argument(
        "--if-match", dest="if_match", default=None, help="only if the state is at this revision"
    )
    client(wset)

    ro = sub.add_parser("rollout", help="drive the rollout: start, pause, resume, promote, rollback, rearm")
    ro.add_argument("action", choices=["start", "pause", "resume", "promote", "rollback", "rearm"])
    ro.add_argument("--reason", default="")
    client(ro)

    kg = sub.add_parser("keygen", help="make an Ed25519 key pair for signing release manifests")
    kg.add_argument(
        "--out", required=True, metavar="FILE", help="private key path; the public key goes to <out>.pub"
    )
    sg = sub.add_parser("sign", help="sign a release manifest (writes <manifest>.sig)")
    sg.add_argument("manifest")
    sg.add_argument("--key", required=True, metavar="FILE", help="the Ed25519 private key (PEM)")
    vf = sub.add_parser("verify", help="verify a signed release manifest against trusted public keys")
    vf.add_argument("manifest")
    vf.add_argument(
        "--key", action="append", required=True, metavar="FILE", help="a trusted public key (PEM); repeatable"
    )
    vf.add_argument(
        "--version",
        dest="expected_version",
        default=None,
        help="the candidate version it must be for (default: the manifest's own)",
    )

    hk = sub.add_parser(
        "hash-key",
        help="make a data-plane API key (--generate) or hash one read from stdin, for auth.api_keys",
    )
    hk.add_argument("--generate", action="store_true", help="generate a new random key and print it too")
    hk.add_argument("--name", default="CLIENT", help="client name for the printed config line")

    report = sub.add_parser(
        "report",
        help="write the rollout artifacts (staging_report.json, shadow_eval.json, ...) into a folder, "
        "an MLflow run, or both",
    )
    report.add_argument(
        "--out",
        metavar="DIR",
        help="folder to write into (created if missing); optional with --mlflow-run",
    )
    mlflow = report.add_argument_group("MLflow (pip install 'rollguard[mlflow]')")
    mlflow.add_argument(
        "--mlflow-run",
        metavar="RUN_ID",
        help="log the artifacts (under rollguard/) and their key figures (metrics, tags) to this run",
    )
    mlflow.add_argument(
        "--mlflow-uri", metavar="URI", help="the MLflow tracking URI (default: $MLFLOW_TRACKING_URI)"
    )
    client(report)

    wait = sub.add_parser(
        "wait",
        help="wait until the rollout is promoted, rolled back, at a step or in a phase (for pipelines)",
    )
    wait.add_argument(
        "--for",
        dest="until",
        required=True,
        type=_wait_condition,
        help="promoted, rolled_back, phase=NAME, or step=N (the Nth canary step reached, from 1)",
    )
    wait.add_argument("--timeout", type=_seconds, default=600.0, help="give up after this long (default 10m)")
    wait.add_argument("--interval", type=_seconds, default=1.0, help="how often to read /status (default 1s)")
    client(wait)

    reload = sub.add_parser("reload", help="re-read the config file the proxy was started with")
    client(reload)

    shadow = sub.add_parser("shadow", help="change the share of baseline traffic mirrored to the candidate")
    ssub = shadow.add_subparsers(dest="action", required=True)
    sset = ssub.add_parser("set", help="set the shadow sample, a share from 0 to 1")
    sset.add_argument("sample", type=float)
    sset.add_argument("--reason", default="")
    client(sset)

    lt = sub.add_parser(
        "loadtest",
        help="drive open-loop load at a URL, judge it against SLOs (exit 0 pass, 1 fail), write the report",
    )
    lt.add_argument("--target", required=True, metavar="URL", help="where to POST: the proxy or an upstream")
    lt.add_argument("--config", metavar="FILE", help="take the SLOs from this config's canary.gates")
    load = lt.add_mutually_exclusive_group()
    load.add_argument("--rate", type=float, metavar="R", help="requests per second, held (default 100)")
    load.add_argument(
        "--stages", metavar="D:R,...", help="ramps like k6's: 30s:50,2m:200,30s:0 (from 0, to R over D)"
    )
    lt.add_argument("--duration", metavar="D", help="with --rate: how long (default 30s)")
    lt.add_argument("--bodies", metavar="FILE.jsonl", help="one JSON body per line (default: sample model's)")
    lt.add_argument(
        "--slo", metavar="SPEC", help="p95=120ms,p99=300ms,errors=1%% (over --config's; default the gates')"
    )
    lt.add_argument("--out", metavar="DIR", help="write staging_report.json with the load section here")
    lt.add_argument("--pid", type=int, help="a local target process whose CPU and RSS to record")
    lt.add_argument("--concurrency", type=int, default=256, help="most requests in flight (default 256)")
    lt.add_argument("--timeout", default="10s", metavar="D", help="per request (default 10s)")
    lt.add_argument("-H", "--header", action="append", metavar="'NAME: VALUE'", help="add to every request")
    lt.add_argument("--seed", type=int, default=7, help="of the sample body generator (default 7)")
    lt.add_argument(
        "--admin", metavar="URL", help="fold in this proxy's own staging report (token: $ROLLGUARD_TOKEN)"
    )
    lt.add_argument("--plain", action="store_true", help="plain progress lines even on a terminal")

    sr = sub.add_parser(
        "staging-report",
        help="fold a k6 or Locust run into staging_report.json, judged against SLOs (exit 0 pass, 1 fail)",
    )
    sr.add_argument("--k6", metavar="summary.json", help="k6's --summary-export file or handleSummary JSON")
    sr.add_argument("--locust", metavar="stats.csv", help="Locust's PREFIX_stats.csv (from --csv PREFIX)")
    sr.add_argument("--config", metavar="FILE", help="take the SLOs from this config's canary.gates")
    sr.add_argument(
        "--slo", metavar="SPEC", help="p95=120ms,p99=300ms,errors=1%% (over --config's; default the gates')"
    )
    sr.add_argument(
        "--admin", metavar="URL", help="fold in this proxy's own staging report (token: $ROLLGUARD_TOKEN)"
    )
    sr.add_argument("--out", required=True, metavar="DIR", help="write staging_report.json here")

    contract = sub.add_parser("contract", help="compare two versions of a route's request or response schema")
    csub = contract.add_subparsers(dest="action", required=True)
    cdiff = csub.add_parser(
        "diff", help="breaking changes from OLD to NEW in the readers' terms (exit 0 compatible, 1 breaking)"
    )
    cdiff.add_argument("old", metavar="OLD.json")
    cdiff.add_argument("new", metavar="NEW.json")
    cdiff.add_argument(
        "--kind",
        choices=("request", "response"),
        help="who reads the schema: the model (request) or consumers (response); default: NEW's file name",
    )
    cdiff.add_argument(
        "-o", "--output", choices=OUTPUTS, default="table", help="table (default): one line per change; json"
    )

    pf = sub.add_parser(
        "preflight", help="the staging checklist: one PASS/FAIL line per check (exit 0 only when all pass)"
    )
    pf.add_argument("--config", required=True, metavar="FILE", help="the config to check")
    pf.add_argument(
        "--bodies", metavar="FILE.jsonl", help="its first line is the sample body (default: sample model's)"
    )
    pf.add_argument(
        "--tls-warn", default="14d", metavar="D", help="fail certificates expiring within D (default 14d)"
    )
    pf.add_argument(
        "--admin", metavar="URL", help="a running proxy's admin: /metrics, /readyz (token: $ROLLGUARD_TOKEN)"
    )
    pf.add_argument("--cacert", metavar="FILE", help="PEM bundle of CAs to trust for an https:// --admin")
    pf.add_argument(
        "--rehearse", action="store_true", help="with --admin: weight 1%% -> rollback -> 0 on an idle rollout"
    )
    pf.add_argument("--rehearse-within", default="5s", metavar="D", help="the rollback's bound (default 5s)")
    pf.add_argument(
        "--rules",
        default="config/prometheus/rollguard-rules.yml",
        metavar="FILE",
        help="alert rules for promtool check rules (default config/prometheus/rollguard-rules.yml)",
    )

    comp = sub.add_parser("completion", help="print a shell completion script (bash or zsh)")
    comp.add_argument("shell", choices=["bash", "zsh"])
    return p


OUTPUTS = ("table", "json")
MAX_LIMIT = 10_000  # the most entries GET /decisions answers with


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from 1 to {MAX_LIMIT}")
    return int(text)


TERMINAL_PHASES = ("promoted", "rolled_back")
PHASES = ("idle", "shadow", "canary", "paused", *TERMINAL_PHASES)


@dataclass(frozen=True, slots=True)
class WaitCondition:
    """What ``rollguard wait --for`` waits for: a phase, or the Nth canary step (from 1)."""

    phase: str | None = None
    step: int | None = None

    def __str__(self) -> str:
        return f"step {self.step}" if self.step is not None else str(self.phase)

    def met(self, rollout: dict[str, Any]) -> bool:
        if self.phase is not None:
            return bool(rollout["phase"] == self.phase)
        assert self.step is not None
        stepping = rollout["phase"] in ("canary", "paused") and int(rollout["step"]) + 1 >= self.step
        return stepping or rollout["phase"] == "promoted"  # promotion is past every step

    def lost(self, rollout: dict[str, Any]) -> bool:
        """The rollout ended where this condition can no longer hold (a latch needs an operator)."""
        return rollout["phase"] in TERMINAL_PHASES and not self.met(rollout)


def _wait_condition(text: str) -> WaitCondition:
    key, _, value = text.partition("=")
    if not value and key in PHASES:
        return WaitCondition(phase=key)
    if key == "phase" and value in PHASES:
        return WaitCondition(phase=value)
    if key == "step" and value.isdigit() and int(value) >= 1:
        return WaitCondition(step=int(value))
    raise argparse.ArgumentTypeError(
        f"{text!r}: expected promoted, rolled_back, phase=({'|'.join(PHASES)}) or step=N (N >= 1)"
    )


def _seconds(text: str) -> float:
    from proxy.config.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _wait(args: argparse.Namespace) -> int:
    """Poll ``/status`` until the condition holds (0), the rollout ends the other way (7) or the time is
    up (6). A proxy that is briefly unreachable (a restart) is waited for too, within the timeout."""
    until: WaitCondition = args.until
    deadline = time.monotonic() + args.timeout
    shown: tuple[Any, ...] | None = None
    problem = ""
    while True:
        try:
            status, doc = _request(args, "GET", "/status")
        except (httpx.HTTPError, OSError, ValueError) as exc:
            status, doc, problem = 0, {}, f"cannot reach the admin API at {args.admin}: {exc}"
        if status >= 400:
            return _die(f"{status} {printable(str(doc.get('detail', '')), 2000)}", _exit_for(status))
        if status:
            r = doc["rollout"]
            now = (r["phase"], r["step"], r["weight"])
            if now != shown and args.output != "json":
                shown = now
                print(f"phase {r['phase']}, candidate weight {r['weight']:g}%, revision {r['revision']}")
            if until.met(r) or until.lost(r):
                if args.output == "json":
                    _print_json(r)
                if until.met(r):
                    return 0
                return _die(
                    f"the rollout ended {r['phase']} ({printable(str(r['reason']), 500)}), not {until}",
                    EXIT_OTHER_END,
                )
        if time.monotonic() >= deadline:
            why = f"; last: {problem}" if not status else ""
            return _die(f"not {until} within {args.timeout:g}s{why}", EXIT_TIMEOUT)
        time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))


# ``report --mlflow-run``: the exit code for each reason the run could not be used or logged to.
_MLFLOW_EXIT = {
    "missing": EXIT_USAGE,
    "usage": EXIT_USAGE,
    "not_found": EXIT_FAILED,
    "deleted": EXIT_REFUSED,
    "unreachable": EXIT_UNREACHABLE,
    "unauthorized": EXIT_UNAUTHORIZED,
    "failed": EXIT_FAILED,
}


def _write_reports(args: argparse.Namespace) -> int:
    """``report``: the artifacts into ``--out``, into an MLflow run (through a temporary folder when there
    is no ``--out``), or both. The run is checked before the admin API is asked for anything."""
    import tempfile
    from contextlib import ExitStack

    if args.out is None and args.mlflow_run is None:
        return _die("report needs --out DIR, --mlflow-run RUN_ID, or both", EXIT_USAGE)
    run = None
    if args.mlflow_run is not None:
        from proxy.reports.mlflow_run import MlflowRun, MlflowRunError

        try:
            run = MlflowRun.open(args.mlflow_run, args.mlflow_uri)
        except MlflowRunError as exc:
            return _die(str(exc), _MLFLOW_EXIT[exc.reason])
        print(run.describe())
    with ExitStack() as stack:
        if args.out is None:
            out = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rollguard-report-")))
        else:
            out = Path(args.out)
        fetched = _fetch_reports(args, out, show=args.out is not None)
        if isinstance(fetched, int):
            return fetched
        if run is not None:
            try:
                run.attach(fetched, print)
            except MlflowRunError as exc:
                return _die(str(exc), _MLFLOW_EXIT[exc.reason])
    return 0


def _fetch_reports(args: argparse.Namespace, out: Path, *, show: bool) -> dict[str, Path] | int:
    """Every artifact the proxy has, written into ``out``; name -> file, or the exit code of a failure."""
    out.mkdir(parents=True, exist_ok=True)
    token = os.environ.get("ROLLGUARD_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    written: dict[str, Path] = {}
    try:
        with _http(args, 30.0, headers=headers) as client:
            for name in ARTIFACTS:
                resp = client.get(f"/reports/{name}")
                if resp.status_code == 404:
                    print(f"{name}: not available from this proxy")
                    continue
                if resp.status_code >= 400:
                    return _die(f"{name}: {resp.status_code} {resp.text[:200]}", _exit_for(resp.status_code))
                target = out / name
                tmp = target.with_name(f".{name}.tmp")
                tmp.write_bytes(resp.content)
                tmp.replace(target)
                written[name] = target
                if show:
                    print(f"wrote {target}")
    except (httpx.HTTPError, OSError, ValueError) as exc:  # OSError: ssl.SSLError, an unreadable cert file
        return _die(f"cannot reach the admin API at {args.admin}: {exc}", EXIT_UNREACHABLE)
    return written if written else _die("no artifact was available", 1)


def _http(args: argparse.Namespace, timeout: float, **kw: Any) -> httpx.Client:
    """The admin client: verifies an https:// listener (against ``--cacert`` when given) and presents
    ``--cert``/``--key`` to one that requires a client certificate. Never unverified."""
    ctx = ssl.create_default_context(cafile=args.cacert) if args.cacert else ssl.create_default_context()
    if args.cert:
        ctx.load_cert_chain(args.cert, args.key)
    elif args.key:
        raise ValueError("--key needs --cert")
    return httpx.Client(base_url=args.admin, timeout=timeout, verify=ctx, **kw)


def _die(message: str, code: int) -> int:
    print(f"rollguard: {message}", file=sys.stderr)
    return code


def _request(
    args: argparse.Namespace, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    hdrs = dict(headers or {})
    token = os.environ.get("ROLLGUARD_TOKEN")
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    content = orjson.dumps(body) if body is not None else None
    if content is not None:
        hdrs["Content-Type"] = "application/json"
    with _http(args, 10.0) as client:
        resp = client.request(method, path, content=content, headers=hdrs)
    try:
        doc = resp.json()
    except ValueError:
        doc = {"detail": resp.text}
    return resp.status_code, doc


def _refused(status: int, doc: dict[str, Any]) -> int:
    """Report an answer of 400 or above; its exit code."""
    hint = " (set ROLLGUARD_TOKEN)" if status == 401 else ""
    title = printable(str(doc.get("title", "")), 200)
    detail = printable(str(doc.get("detail", "")), 2000)
    return _die(f"{status} {title}: {detail}{hint}", _exit_for(status))


def _client_call(
    args: argparse.Namespace, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]] | int:
    try:
        status, doc = _request(args, method, path, body, headers)
    except (httpx.HTTPError, OSError, ValueError) as exc:  # OSError: ssl.SSLError, an unreadable cert file
        return _die(f"cannot reach the admin API at {args.admin}: {exc}", EXIT_UNREACHABLE)
    if status >= 400:
        return _refused(status, doc)
    return status, doc


def _print_json(doc: Any) -> None:
    print(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())


def _call_and_show(
    args: argparse.Namespace,
    method: str,
    path: str,
    show: Callable[[dict[str, Any]], None],
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> int:
    """One admin call; its answer as JSON (``-o json``) or through ``show``. Exit code as for every client
    command."""
    result = _client_call(args, method, path, body, headers)
    if isinstance(result, int):
        return result
    if args.output == "json":
        _print_json(result[1])
    else:
        show(result[1])
    return 0


def _state_line(what: str) -> Callable[[dict[str, Any]], None]:
    """How a state change is shown: the new phase, weight and revision."""

    def show(doc: dict[str, Any]) -> None:
        print(
            f"{what}: phase {doc['phase']}, candidate weight {doc['weight']:g}%, revision {doc['revision']}"
        )

    return show


def _print_status(doc: dict[str, Any]) -> None:
    from rich.console import Console

    from proxy.demo.rollout_view import rollout_parts, upstreams_table

    console = Console(highlight=False)
    for part in rollout_parts(doc):
        console.print(part)
    console.print(upstreams_table(doc))


def _print_reload(doc: dict[str, Any]) -> None:
    changed = ", ".join(doc.get("changed") or []) or "no changes"
    print(f"config reloaded (generation {doc.get('generation', '?')}): {printable(changed, 2000)}")
    for key in doc.get("restart_required") or []:
        print(f"  needs a restart to take effect: {printable(str(key), 200)}")
    if doc.get("candidate_reset"):
        print(f"  {printable(str(doc['candidate_reset']), 2000)}")


def _print_shadow(doc: dict[str, Any]) -> None:
    print(f"shadow sample {doc['shadow_sample']:g} (revision {doc['revision']})")


class PollEnded(Exception):
    """A command that reads again and again ends, with this exit code."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class Poller:
    """Reads of the admin API, again and again (``status --watch``, ``decisions --follow``).

    A refusal (401/403, 404, 5xx) ends the command at once with its exit code. A proxy that does not
    answer is read again at the next tick, and ends the command as unreachable (3) after ``MISSES`` reads
    in a row, or at once when it never answered: a restart is a blip to wait out, a stopped proxy is not.
    """

    MISSES = 3

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.misses = 0
        self.answered = False
        self.problem = ""  # why the latest read got no answer; "" once one does

    def read(self, path: str) -> dict[str, Any] | None:
        """The document at ``path``; None for a read without an answer that does not end the command."""
        try:
            status, doc = _request(self.args, "GET", path)
        except (httpx.HTTPError, OSError, ValueError) as exc:
            self.misses += 1
            self.problem = f"cannot reach the admin API at {self.args.admin}: {exc}"
            if not self.answered or self.misses >= self.MISSES:
                raise PollEnded(_die(self.problem, EXIT_UNREACHABLE)) from exc
            return None
        if status >= 400:
            raise PollEnded(_refused(status, doc))
        self.misses, self.answered, self.problem = 0, True, ""
        return doc


WATCH_DECISIONS = 200  # decision-log entries the watch reads for its timeline, more than a screen shows


def _watch(args: argparse.Namespace) -> int:
    """``status --watch``: the rollout redrawn in place every ``--interval`` until Ctrl-C (0). Where there
    is no terminal to redraw in, a frame is printed each time the rollout's revision or the decision log
    changes; with ``-o json``, the ``/status`` document of every read, one per line."""
    import contextlib
    from datetime import UTC, datetime

    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    from proxy.demo.rollout_view import line, versions_of, watch_view

    console = Console(highlight=False)
    in_place = console.is_terminal and args.output == "table"
    poller = Poller(args)
    status: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = []
    printed: tuple[Any, ...] | None = None
    try:
        with Live(console=console, auto_refresh=False) if in_place else contextlib.nullcontext() as live:
            while True:
                doc = poller.read("/status")
                if doc is not None and args.output == "json":
                    print(orjson.dumps(doc).decode(), flush=True)
                elif doc is not None:
                    status = doc
                    log = poller.read(f"/decisions?limit={WATCH_DECISIONS}")
                    decisions = log["decisions"] if log is not None else decisions
                if args.output == "table" and status is not None:
                    base, cand = versions_of(status)
                    at = datetime.now(UTC).strftime("%H:%M:%S")
                    title = line(("rollguard status", "bold"), f"  {args.admin}  {base} -> {cand}  {at} UTC")
                    notes = [line((f"no answer ({poller.misses}): {poller.problem}", "bold red"))]
                    view = watch_view(status, decisions, title=title, notes=notes if poller.problem else ())
                    if isinstance(live, Live):
                        live.update(view, refresh=True)
                    elif (key := _frame_key(status, decisions, poller.problem)) != printed:
                        printed = key
                        console.print(view)
                        console.print(Text(""))
                        console.file.flush()
                time.sleep(args.interval)
    except PollEnded as end:
        return end.code
    except KeyboardInterrupt:
        return 0


def _frame_key(status: dict[str, Any], decisions: list[dict[str, Any]], problem: str) -> tuple[Any, ...]:
    """What makes a printed frame worth printing again: the state, the decision log, a failing read."""
    newest = _entry_key(decisions[-1]) if decisions else None
    return (status.get("rollout", {}).get("revision"), newest, problem)


def _entry_key(entry: dict[str, Any]) -> bytes:
    """The identity of a decision-log entry: the whole entry. Entries are appended and never rewritten;
    ``ts`` alone repeats within a millisecond, and appended records (a config reload, a blocked
    candidate) carry no revision."""
    return orjson.dumps(entry, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def _where(phase: Any, step: Any, weight: Any) -> str:
    """Where an entry found or left the rollout: ``idle``, ``shadow``, ``step 2 (25%)``, ``paused 25%``."""
    at = f"{weight:g}%" if isinstance(weight, int | float) else "?"
    if phase == "canary" and isinstance(step, int) and step >= 0:
        return f"step {step + 1} ({at})"
    if phase in ("paused", "promoted", "rolled_back"):
        return f"{phase} {at}"
    return printable(str(phase), 40)


def decision_line(entry: dict[str, Any]) -> str:
    """One decision-log entry on one line: time, actor, action, from -> to, reason."""
    ts = printable(str(entry.get("ts", "?")), 40)
    actor = printable(str(entry.get("actor", "?")), 64)
    action = printable(str(entry.get("action", "?")), 64)
    to = _where(entry.get("phase"), entry.get("step"), entry.get("weight")) if "phase" in entry else "-"
    move, before = to, entry.get("before")
    if isinstance(before, dict):
        came = _where(before.get("phase"), before.get("step"), before.get("weight"))
        move = to if came == to else f"{came} -> {to}"
    reason = printable(str(entry.get("reason", "")), 2000)
    return f"{ts}  {actor:<10} {action:<17} {move:<28} {reason}".rstrip()


FOLLOW_WINDOW = 1000  # entries each --follow read looks at: more than are logged between two reads


def _decisions(args: argparse.Namespace) -> int:
    """``decisions``: the latest ``--limit`` entries, oldest first; ``--follow`` then prints each new one
    (a JSON line each with ``-o json``) until Ctrl-C. An entry is new when the previous read did not hold
    it, so none is printed twice, and none is missed while fewer than FOLLOW_WINDOW are logged between
    two reads."""
    if not args.follow:
        return _call_and_show(
            args,
            "GET",
            f"/decisions?limit={args.limit}",
            lambda doc: print("\n".join(decision_line(e) for e in doc["decisions"])),
        )

    def emit(entry: dict[str, Any]) -> None:
        print(orjson.dumps(entry).decode() if args.output == "json" else decision_line(entry), flush=True)

    poller = Poller(args)
    try:
        # The first read looks as far back as the later ones, so an entry older than --limit is not new.
        doc = poller.read(f"/decisions?limit={max(args.limit, FOLLOW_WINDOW)}")
        assert doc is not None  # the first read answers or ends the command
        for entry in doc["decisions"][-args.limit :]:
            emit(entry)
        seen = {_entry_key(e) for e in doc["decisions"]}
        while True:
            time.sleep(args.interval)
            doc = poller.read(f"/decisions?limit={FOLLOW_WINDOW}")
            if doc is None:
                continue
            keys = [_entry_key(e) for e in doc["decisions"]]
            for entry, key in zip(doc["decisions"], keys, strict=True):
                if key not in seen:
                    emit(entry)
            seen = set(keys)
    except PollEnded as end:
        return end.code
    except KeyboardInterrupt:
        return 0


def _manifest_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from proxy.config.keys import load_public_key
    from proxy.rollout import manifest

    try:
        if args.command == "keygen":
            out = Path(args.out)
            public = manifest.keygen(out, out.with_name(out.name + ".pub"))
            print(f"private key {out} (keep it secret), public key {out}.pub\nbase64: {public}")
            return 0
        if args.command == "sign":
            print(f"wrote {manifest.sign(Path(args.manifest), Path(args.key))}")
            return 0
        keys = {Path(k).name: load_public_key(Path(k).read_text()) for k in args.key}
        expected = args.expected_version or str(
            orjson.loads(Path(args.manifest).read_bytes()).get("version", "")
        )
    except (OSError, ValueError) as exc:
        return _die(str(exc), 2)
    verdict = manifest.verify(Path(args.manifest), keys, expected_version=expected)
    print(("ok: " if verdict.ok else "REFUSED: ") + verdict.reason)
    return 0 if verdict.ok else 1


def _backtest(args: argparse.Namespace) -> int:
    """Exit 0 whatever the outcome; 2 for a bad config or a bad trace line (named by its number)."""
    import asyncio

    from proxy.app.backtest import backtest
    from proxy.config.load import load_config
    from proxy.errors import TraceError

    logging.getLogger("rollguard").setLevel(logging.WARNING)  # the timeline is the output, not the log
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _die(f"invalid config: {exc}", 2)

    def shown(d: dict[str, Any]) -> None:
        if args.json:
            sys.stdout.write(orjson.dumps(d).decode() + "\n")
            return
        where = "shadow" if d["phase"] == "shadow" else f"{d['weight']:g}%"
        print(f"{d['t']:>10.1f}s  {d['action']:<9} {where:>7}  {printable(str(d['reason']), 300)}")

    try:
        with open(args.trace, "rb") if args.trace != "-" else sys.stdin.buffer as trace:  # noqa: SIM115
            summary = asyncio.run(backtest(config, trace, seed=args.seed, on_decision=shown))
    except OSError as exc:
        return _die(f"cannot read the trace: {exc}", 2)
    except TraceError as exc:
        return _die(str(exc), 2)
    if args.json:
        print(orjson.dumps(summary.to_json()).decode())
    else:
        by = f" by the {summary.rolled_back_by}" if summary.rolled_back_by else ""
        gates = f" ({', '.join(summary.decisive_gates)})" if summary.decisive_gates else ""
        print(
            f"outcome: {summary.outcome}{by}{gates} after {summary.windows} windows, "
            f"{summary.requests} requests ({summary.observed['candidate']} seen by the candidate), "
            f"at {summary.ended_at:.1f}s; weight {summary.final_weight:g}%"
        )
    return 0


_MIN_KEY_CHARS = 24


def _hash_key(args: argparse.Namespace) -> int:
    """SHA-256 of an API key. Generated keys carry 256 random bits; read keys must not be short."""
    import hashlib
    import secrets

    if args.generate:
        key = "rg_" + secrets.token_urlsafe(32)
    else:
        key = sys.stdin.readline().strip()
        if len(key) < _MIN_KEY_CHARS:
            return _die(
                f"the key must be at least {_MIN_KEY_CHARS} characters of random text "
                "(use --generate for a new one)",
                2,
            )
    digest = hashlib.sha256(key.encode()).hexdigest()
    if args.generate:
        print(f"key: {key}")
    print(f"key_sha256: {digest}")
    print(f"config: - {{name: {args.name}, roles: [], key_sha256: {digest}}}")
    return 0


# -- shell completion ------------------------------------------------------------------------------------

PATH_METAVARS = frozenset({"FILE", "DIR"})
"""Options whose value is a path say so with their metavar; the completion offers paths for those only."""


@dataclass(frozen=True, slots=True)
class CompletionNode:
    """What may follow one command path (``""``, ``weights``, ``weights set``): its subcommands or
    positional choices with their help, its options, what each option's value is (a tuple of choices,
    ``"path"`` or ``"text"``), and whether a positional is a path."""

    words: dict[str, str]
    options: tuple[str, ...]
    values: dict[str, tuple[str, ...] | str]
    paths: bool


def completion_tree(parser: argparse.ArgumentParser, path: str = "") -> dict[str, CompletionNode]:
    """Every command path of ``parser`` and what may follow it. argparse keeps its arguments in
    ``_actions`` and has no public reader for them (argcomplete and shtab read the same)."""
    tree: dict[str, CompletionNode] = {}
    words: dict[str, str] = {}
    options: list[str] = []
    values: dict[str, tuple[str, ...] | str] = {}
    paths = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, child in action.choices.items():
                words[name] = helps.get(name, "")
                tree.update(completion_tree(child, f"{path} {name}".strip()))
        elif action.option_strings:
            options += action.option_strings
            if action.nargs != 0:
                choices = tuple(map(str, action.choices or ()))
                kind = choices or ("path" if action.metavar in PATH_METAVARS else "text")
                values.update(dict.fromkeys(action.option_strings, kind))
        elif action.choices:
            words.update(dict.fromkeys(map(str, action.choices), ""))
        elif action.type is None:  # a number (weights set N) is typed; a file or a trace is not
            paths = True
    tree[path] = CompletionNode(words, tuple(options), values, paths)
    return tree


def _quoted(text: str) -> str:
    """``text`` as one single-quoted shell word."""
    return "'" + text.replace("'", "'\\''") + "'"


def _moves(tree: dict[str, CompletionNode]) -> list[str]:
    """``path|word`` for every word that leads to a deeper command path."""
    return [_quoted(f"{p}|{w}") for p, node in tree.items() for w in node.words if f"{p} {w}".strip() in tree]


def _bash_script(tree: dict[str, CompletionNode]) -> str:
    value_cases, word_cases = [], []
    for path, node in tree.items():
        for option, kind in node.values.items():
            if kind == "path":
                reply = '$(compgen -f -- "$cur")'
            elif kind == "text":
                reply = ""
            else:
                reply = f'$(compgen -W {_quoted(" ".join(kind))} -- "$cur")'
            value_cases.append(f"        {_quoted(f'{path}|{option}')}) COMPREPLY=({reply}); return ;;")
        words = _quoted(" ".join([*node.words, *node.options]))
        files = ' $(compgen -f -- "$cur")' if node.paths else ""
        word_cases.append(f'        {_quoted(path)}) COMPREPLY=($(compgen -W {words} -- "$cur"){files}) ;;')
    return "\n".join(
        [
            '# bash completion for rollguard: eval "$(rollguard completion bash)" in ~/.bashrc, or save it',
            "# as /etc/bash_completion.d/rollguard",
            "_rollguard() {",
            '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" cmd="" word i',
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            '        word="${COMP_WORDS[i]}"',
            '        case "$cmd|$word" in',
            f'            {" | ".join(_moves(tree))}) cmd="${{cmd:+$cmd }}$word" ;;',
            "        esac",
            "    done",
            '    case "$cmd|$prev" in',
            *value_cases,
            "    esac",
            '    case "$cmd" in',
            *word_cases,
            "    esac",
            "}",
            "complete -F _rollguard rollguard",
            "",
        ]
    )


def _zsh_script(tree: dict[str, CompletionNode]) -> str:
    value_cases, word_cases = [], []
    for path, node in tree.items():
        for option, kind in node.values.items():
            if kind == "path":
                reply = "_files"
            elif kind == "text":
                reply = ":"
            else:
                reply = f"compadd -- {' '.join(map(_quoted, kind))}"
            value_cases.append(f"        ({_quoted(f'{path}|{option}')}) {reply}; return ;;")
        body = []
        if node.words:
            described = " ".join(_quoted(w.replace(":", "\\:") + ":" + h) for w, h in node.words.items())
            body += [f"local -a subcommands=({described})", "_describe command subcommands"]
        if node.options:
            body.append(f"compadd -- {' '.join(map(_quoted, node.options))}")
        if node.paths:
            body.append("_files")
        word_cases.append(f"        ({_quoted(path)}) {'; '.join(body) or ':'} ;;")
    return "\n".join(
        [
            "#compdef rollguard",
            "# zsh completion for rollguard: save it as _rollguard in a folder of $fpath, or",
            "# source <(rollguard completion zsh) after compinit",
            "_rollguard() {",
            '    local cmd="" word prev="${words[CURRENT-1]}" i',
            "    for (( i = 2; i < CURRENT; i++ )); do",
            '        word="${words[i]}"',
            '        case "$cmd|$word" in',
            f'            ({"|".join(_moves(tree))}) cmd="${{cmd:+$cmd }}$word" ;;',
            "        esac",
            "    done",
            '    case "$cmd|$prev" in',
            *value_cases,
            "    esac",
            '    case "$cmd" in',
            *word_cases,
            "    esac",
            "}",
            # Loaded from $fpath, the file is the function's body; sourced, it registers the function.
            'if [[ "${funcstack[1]}" == _rollguard ]]; then _rollguard "$@"',
            "else compdef _rollguard rollguard; fi",
            "",
        ]
    )


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """A completion script for ``shell`` (bash or zsh): subcommands, options, option choices, paths."""
    tree = completion_tree(parser)
    return _bash_script(tree) if shell == "bash" else _zsh_script(tree)


class OneLineFormatter(logging.Formatter):
    """Log lines whose message cannot break the line or reach the terminal as a control sequence: a
    reason or a path with a newline or an ESC in it is shown escaped. Tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = printable(record.message)
        return super().formatMessage(record)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a client prints its answer, not its requests
    if args.command in ("serve", "check-config"):
        from proxy.config.load import load_config

        try:
            config = load_config(args.config if args.command == "serve" else args.file)
        except ConfigError as exc:
            return _die(f"invalid config: {exc}", 2)
        if args.command == "check-config":
            print(
                f"{config.source}: ok ({len(config.routes)} routes, baseline {config.baseline.version}, "
                f"candidate {config.candidate.version})"
            )
            return 0
        from proxy.app.serve import run

        logging.getLogger().setLevel(config.logging.level.upper())
        try:
            run(config)
        except ConfigError as exc:  # a TLS file changed between the check and the start
            return _die(f"invalid config: {exc}", 2)
        except OSError as exc:
            return _die(str(exc), 1)
        return 0
    if args.command == "backtest":
        return _backtest(args)
    if args.command in ("keygen", "sign", "verify"):
        return _manifest_command(args)
    if args.command == "hash-key":
        return _hash_key(args)
    if args.command == "demo":
        from proxy.demo.run import run_demo

        return run_demo(args)
    if args.command == "status":
        if args.watch:
            return _watch(args)
        return _call_and_show(args, "GET", "/status", _print_status)
    if args.command == "decisions":
        return _decisions(args)
    if args.command == "weights":
        headers = {"If-Match": f'"{args.if_match}"'} if args.if_match else None
        body = {"canary": args.percent, "reason": args.reason}
        return _call_and_show(args, "PUT", "/weights", _state_line("candidate weight"), body, headers)
    if args.command == "rollout":
        body = {"reason": args.reason} if args.reason else {}
        return _call_and_show(args, "POST", f"/rollout/{args.action}", _state_line(args.action), body)
    if args.command == "report":
        return _write_reports(args)
    if args.command == "wait":
        return _wait(args)
    if args.command == "reload":
        return _call_and_show(args, "POST", "/config/reload", _print_reload)
    if args.command == "shadow":
        body = {"sample": args.sample, "reason": args.reason}
        return _call_and_show(args, "PUT", "/shadow", _print_shadow, body)
    if args.command == "loadtest":
        from proxy.app.loadtest import run_loadtest
        from proxy.demo.sample_model import features_generator

        return run_loadtest(args, sample=features_generator)
    if args.command == "staging-report":
        from proxy.app.staging_report import run_staging_report

        return run_staging_report(args)
    if args.command == "contract":
        from proxy.app.contract import run_contract_diff

        return run_contract_diff(args)
    if args.command == "preflight":
        from proxy.app.preflight import run_preflight
        from proxy.demo.sample_model import features_generator

        return run_preflight(args, sample=features_generator)
    if args.command == "completion":
        print(completion_script(_parser(), args.shell), end="")
        return 0
    return _die(f"unknown command {args.command}", 2)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
