"""The staging checklist's checks: each looks at one thing a rollout relies on and returns a result.

A check never raises for what it finds: a broken item is a FAIL with its reason, an item that cannot be
checked from here (nothing configured, no tool, no running proxy named) is a SKIP with why. The checks
reuse the proxy's own loaders and validators (the compiled contracts, the TLS context builders, the
manifest verifier, the state store's file names), so a PASS means what the proxy itself would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import os
import ssl
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from proxy.config.keys import load_public_key
from proxy.config.model import Config, RouteConfig, UpstreamConfig
from proxy.config.tls_contexts import client_context, server_context
from proxy.content.contracts import Contract, InvalidJSON, parse_json, score_of
from proxy.content.text import printable
from proxy.errors import TlsError
from proxy.rollout.manifest import verify
from proxy.rollout.store import open_store

Status = Literal["PASS", "FAIL", "SKIP"]
REHEARSAL_REASON = "preflight rollback rehearsal"
_DETAIL_CHARS = 300  # of an upstream's or the admin API's answer quoted in a line


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    status: Status
    detail: str  # one line: what was checked, what is wrong, or why it was not checked


def passed(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "PASS", detail)


def failed(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "FAIL", detail)


def skipped(name: str, detail: str) -> CheckResult:
    return CheckResult(name, "SKIP", detail)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _quoted(text: str) -> str:
    return printable(text.strip(), _DETAIL_CHARS)


# -- schemas ----------------------------------------------------------------------------------------------


def route_contracts(route: RouteConfig) -> tuple[Contract | None, Contract | None]:
    """The route's compiled request and response contracts, as the data plane compiles them."""
    request = Contract.from_file(route.request_schema) if route.request_schema else None
    response = Contract.from_file(route.response_schema) if route.response_schema else None
    return request, response


def check_schemas(config: Config) -> CheckResult:
    name = "schemas"
    compiled: list[str] = []
    for i, route in enumerate(config.routes):
        for key, file, label in (
            ("request_schema", route.request_schema, "request"),
            ("response_schema", route.response_schema, "response"),
            *(
                (f"compat_schemas[{j}]", s.path, f"compat {s.name}")
                for j, s in enumerate(route.compat_schemas)
            ),
        ):
            if file is None:
                continue
            try:
                Contract.from_file(file)
            except (OSError, ValueError) as exc:  # jsonschema-rs raises ValueError for what it cannot build
                return failed(name, f"routes[{i}].{key} ({route.name}): {file} does not compile: {exc}")
            compiled.append(f"{route.name} {label}")
    if not compiled:
        return skipped(name, "no route has a request_schema or response_schema")
    return passed(name, f"{len(compiled)} compile ({', '.join(compiled)})")


# -- upstreams: reachable, and answering their contract ---------------------------------------------------


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


async def _connect(host: str, port: int, within: float, tls: ssl.SSLContext | None, sni: str | None) -> str:
    """``""`` when a TCP connection (and the TLS handshake, with ``tls``) completes within ``within``
    seconds; otherwise why not."""
    try:
        async with asyncio.timeout(within):
            _, writer = await asyncio.open_connection(host, port, ssl=tls, server_hostname=sni)
    except TimeoutError:
        return f"no connection to {host}:{port} within {within:g}s"
    except ssl.SSLError as exc:
        return f"TLS handshake with {host}:{port} failed: {exc.reason or exc}"
    except OSError as exc:  # asyncio's message repeats the address; the errno's own words say why
        return f"cannot connect to {host}:{port}: {os.strerror(exc.errno) if exc.errno else exc}"
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return ""


def _upstream_tls(up: UpstreamConfig) -> ssl.SSLContext | None:
    """The client context the proxy uses for an https:// upstream; None for http://."""
    return client_context(up.tls) if up.url.startswith("https://") else None


async def check_reachable(up: UpstreamConfig) -> CheckResult:
    name = f"upstream {up.role}"
    try:
        tls = _upstream_tls(up)
    except TlsError as exc:
        return failed(name, f"upstreams.{up.role}.tls.{exc.field}: {exc}")
    host, port = _host_port(up.url)
    sni = (up.tls.server_name if up.tls is not None else None) or host
    started = time.perf_counter()
    problem = await _connect(host, port, up.connect_timeout, tls, sni if tls else None)
    if problem:
        return failed(name, f"{up.url} ({up.version}): {problem}")
    handshake = " and completes the TLS handshake" if tls else ""
    return passed(
        name,
        f"{up.url} ({up.version}) accepts a connection{handshake} in {_ms(time.perf_counter() - started)}",
    )


@dataclass(frozen=True, slots=True)
class SampleRequest:
    body: bytes
    headers: Mapping[str, str]
    source: str  # where the body came from, for the lines


NextSample = Callable[[], dict[str, Any]]
"""One fresh body from the sample model's generator (``proxy.demo.sample_model.features_generator``)."""


def _packaged_sample_schema() -> Any:
    return orjson.loads((importlib.resources.files("proxy") / "schemas" / "infer_request.json").read_bytes())


def is_sample_route(route: RouteConfig) -> bool:
    """A route whose request contract is the sample model's: the generator's bodies are valid for it."""
    if route.request_schema is None:
        return False
    try:
        return bool(orjson.loads(route.request_schema.read_bytes()) == _packaged_sample_schema())
    except (OSError, orjson.JSONDecodeError):
        return False


def sample_request(
    route: RouteConfig, given: SampleRequest | None, sample: NextSample | None
) -> SampleRequest | str:
    """The body to send to ``route``: ``--bodies``' first line, else the sample generator's on the sample
    route; otherwise why there is none."""
    if given is not None:
        return given
    if sample is not None and is_sample_route(route):
        doc = sample()
        return SampleRequest(
            orjson.dumps(doc), {"x-user-id": str(doc.get("user_id", ""))}, "the sample generator"
        )
    return "no sample body for this route: pass --bodies FILE.jsonl (its first line is sent)"


def check_route_sample(route: RouteConfig, sample: SampleRequest | str) -> CheckResult | None:
    """Whether a sample can be sent to ``route`` at all: a SKIP or FAIL for the route as a whole, or None
    when :func:`check_contract` is to run for each upstream."""
    name = f"contract {route.name}"
    if "POST" not in route.methods:
        return skipped(name, f"the route takes {', '.join(sorted(route.methods))}, not POST")
    if route.path.endswith("*"):
        return skipped(name, f"the route's path {route.path} is a prefix: no one path to send a sample to")
    if isinstance(sample, str):
        return skipped(name, sample)
    try:
        request_contract, _ = route_contracts(route)
    except (OSError, ValueError):
        return failed(name, "its schemas do not compile (see the schemas line)")
    if request_contract is not None:
        try:
            doc = parse_json(sample.body)
        except InvalidJSON as exc:
            return failed(name, f"the body from {sample.source} is not strict JSON: {exc}")
        violation = request_contract.check(doc)
        if violation is not None:
            schema = route.request_schema.name if route.request_schema else ""
            return failed(name, f"the body from {sample.source} breaks {schema} at {violation}")
    return None


async def check_contract(route: RouteConfig, up: UpstreamConfig, sample: SampleRequest) -> CheckResult:
    """POST the sample straight to one upstream; the answer must be 2xx, strict JSON (no NaN or
    Infinity), valid against the response schema, and carry a number at the route's score pointer."""
    name = f"contract {route.name}/{up.role}"
    try:
        _, response_contract = route_contracts(route)
        tls = _upstream_tls(up)
    except TlsError as exc:
        return failed(name, f"upstreams.{up.role}.tls.{exc.field}: {exc}")
    except (OSError, ValueError):
        return failed(name, "its schemas do not compile (see the schemas line)")
    extensions = {"sni_hostname": up.tls.server_name} if tls and up.tls and up.tls.server_name else None
    headers = {"content-type": "application/json", **sample.headers}
    started = time.perf_counter()
    try:
        # Straight to the upstream as the proxy calls it: no HTTP proxy from the environment in between.
        async with httpx.AsyncClient(verify=tls or True, timeout=up.timeout, trust_env=False) as client:
            resp = await client.post(
                up.url + route.path, content=sample.body, headers=headers, extensions=extensions
            )
    except httpx.HTTPError as exc:
        return failed(
            name, f"POST {route.path} to {up.url}: no answer: {printable(str(exc)) or type(exc).__name__}"
        )
    took = _ms(time.perf_counter() - started)
    where = f"POST {route.path} to {up.version} -> {resp.status_code} in {took}"
    if not 200 <= resp.status_code < 300:
        return failed(name, f"{where}: {_quoted(resp.text)}")
    try:
        doc = parse_json(resp.content)
    except InvalidJSON as exc:
        return failed(name, f"{where}, but the answer is not strict JSON (NaN, Infinity or malformed): {exc}")
    said = [where]
    if response_contract is not None:
        violation = response_contract.check(doc)
        schema = route.response_schema.name if route.response_schema else ""
        if violation is not None:
            return failed(name, f"{where}, but the answer breaks {schema} at {violation}")
        said.append(f"the answer matches {schema}")
    if route.score is not None:
        score = score_of(doc, route.score)
        if score is None:
            return failed(name, f"{where}, but the answer has no number at {route.score} (routes[].score)")
        said.append(f"score {score:g} at {route.score}")
    return passed(name, ", ".join(said))


# -- the candidate's release manifest ---------------------------------------------------------------------


def check_manifest(config: Config) -> CheckResult:
    name = "manifest"
    up = config.candidate
    if up.manifest is None:
        return skipped(name, "no upstreams.candidate.manifest configured")
    if not config.security.trusted_keys:
        return failed(name, f"{up.manifest.name}: no security.trusted_keys to verify its signature with")
    try:
        trusted = {k.name: load_public_key(k.key) for k in config.security.trusted_keys}
    except ValueError as exc:
        return failed(name, f"security.trusted_keys: {exc}")
    verdict = verify(up.manifest, trusted, expected_version=up.version)
    enforced = (
        "enforced (security.require_signed_candidate)"
        if config.security.require_signed_candidate
        else "recorded, not enforced"
    )
    return CheckResult(name, "PASS" if verdict.ok else "FAIL", f"{verdict.reason}; {enforced}")


# -- TLS files --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsBlock:
    at: str  # the key path: tls, admin.tls, upstreams.<role>.tls
    build: Callable[[], ssl.SSLContext]  # the proxy's own context builder, for the block's files
    files: tuple[tuple[str, Path], ...]  # (key, file) of every certificate file in the block


def tls_blocks(config: Config) -> list[TlsBlock]:
    out: list[TlsBlock] = []
    for listener in (config.tls, config.admin.tls):
        if listener is not None:
            files = [("cert", listener.cert)] + (
                [("client_ca", listener.client_ca)] if listener.client_ca else []
            )
            out.append(TlsBlock(listener.at, partial(server_context, listener), tuple(files)))
    for up in (config.baseline, config.candidate):
        if up.tls is not None:
            pairs = (("ca", up.tls.ca), ("cert", up.tls.cert))
            files = [(key, file) for key, file in pairs if file is not None]
            out.append(TlsBlock(f"upstreams.{up.role}.tls", partial(client_context, up.tls), tuple(files)))
    return out


def _subject(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string() or "no subject"


def _days(seconds: float) -> str:
    return f"{seconds / 86400:.1f} days"


def check_tls_block(block: TlsBlock, *, warn_s: float, now: datetime) -> CheckResult:
    """The block's files load into a context (as at start), and no certificate in them is expired, not
    yet valid, or expires within ``warn_s`` seconds of ``now``."""
    name = f"tls {block.at}"
    try:
        block.build()
    except TlsError as exc:
        return failed(name, f"{block.at}.{exc.field}: {exc}")
    soonest: tuple[datetime, str] | None = None
    for key, file in block.files:
        try:
            certs = x509.load_pem_x509_certificates(file.read_bytes())
        except (OSError, ValueError) as exc:
            return failed(name, f"{block.at}.{key}: cannot read the certificates in {file}: {exc}")
        for cert in certs:
            where = f"{block.at}.{key} {file.name} ({_subject(cert)})"
            if cert.not_valid_before_utc > now:
                return failed(
                    name, f"{where} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
                )
            ends = cert.not_valid_after_utc
            if ends <= now:
                return failed(name, f"{where} expired on {ends:%Y-%m-%d %H:%M} UTC")
            if soonest is None or ends < soonest[0]:
                soonest = (ends, where)
    if soonest is None:
        return passed(name, "loads; no certificate files of its own (the system trust store)")
    ends, where = soonest
    left = (ends - now).total_seconds()
    if left < warn_s:
        return failed(
            name,
            f"{where} expires on {ends:%Y-%m-%d %H:%M} UTC, in {_days(left)}: "
            f"within --tls-warn {_days(warn_s)}",
        )
    return passed(name, f"loads; the first to expire is {where}, on {ends:%Y-%m-%d} (in {_days(left)})")


def check_tls(config: Config, *, warn_s: float, now: datetime | None = None) -> list[CheckResult]:
    blocks = tls_blocks(config)
    if not blocks:
        return [skipped("tls", "no TLS configured (tls, admin.tls, upstreams.*.tls)")]
    at = now or datetime.now(UTC)
    return [check_tls_block(b, warn_s=warn_s, now=at) for b in blocks]


# -- the state store --------------------------------------------------------------------------------------


def check_state_store(config: Config) -> CheckResult:
    """A file can be created, written and synced beside the state file (how the store replaces it), and
    the decision log beside it can be appended to; the probe file is removed again."""
    name = "state store"
    store = open_store(config.state.path)
    folder = store.path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # the store creates the missing folders at start
    probe = existing / f".{store.path.name}.preflight-{os.getpid()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return failed(name, f"state.url: cannot create a file in {existing}: {exc.strerror or exc}")
    try:
        os.write(fd, b"{}\n")
        os.fsync(fd)
    except OSError as exc:
        return failed(name, f"state.url: cannot write in {existing}: {exc.strerror or exc}")
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)
    for path, how in ((store.path, os.R_OK | os.W_OK), (store.log_path, os.W_OK)):
        if path.exists() and not os.access(path, how):
            return failed(
                name,
                f"state.url: {path} exists but cannot be "
                + ("appended to" if how == os.W_OK else "read and replaced"),
            )
    if existing != folder:
        return passed(
            name, f"{folder} does not exist yet; the store creates it in {existing}, which is writable"
        )
    return passed(name, f"wrote, synced and removed a file in {folder}")


# -- a running proxy's admin listener ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admin:
    url: str
    token: str | None
    verify: ssl.SSLContext | bool

    def client(self) -> httpx.AsyncClient:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, verify=self.verify, timeout=10.0)


def _problem(resp: httpx.Response) -> str:
    try:
        doc = resp.json()
    except ValueError:
        return _quoted(resp.text)
    detail = doc.get("detail", doc) if isinstance(doc, dict) else doc
    hint = " (set ROLLGUARD_TOKEN)" if resp.status_code == 401 else ""
    return _quoted(str(detail)) + hint


async def _admin_get(admin: Admin, name: str, path: str) -> httpx.Response | CheckResult:
    """``GET path`` on the admin listener: its 200 answer, or the failed check saying why there is none."""
    try:
        async with admin.client() as client:
            resp = await client.get(path)
    except httpx.HTTPError as exc:
        return failed(name, f"cannot reach {admin.url}: {printable(str(exc)) or type(exc).__name__}")
    if resp.status_code != 200:
        return failed(name, f"GET {path} -> {resp.status_code}: {_problem(resp)}")
    return resp


async def check_metrics(admin: Admin) -> CheckResult:
    name = "admin /metrics"
    resp = await _admin_get(admin, name, "/metrics")
    if isinstance(resp, CheckResult):
        return resp
    try:
        families = [f.name for f in text_string_to_metric_families(resp.text)]
    except ValueError as exc:
        return failed(name, f"GET /metrics -> 200, but not the Prometheus text format: {exc}")
    ours = [f for f in families if f.startswith("rollguard_")]
    if not ours:
        return failed(name, f"GET /metrics -> 200 with {len(families)} families, none of them rollguard_*")
    return passed(name, f"GET /metrics -> 200, {len(ours)} rollguard_* metric families parse")


async def check_readyz(admin: Admin) -> CheckResult:
    name = "admin /readyz"
    resp = await _admin_get(admin, name, "/readyz")
    if isinstance(resp, CheckResult):
        return resp
    try:
        said = str(resp.json().get("status", "ready"))
    except (ValueError, AttributeError):
        said = "ready"
    return passed(name, f"GET /readyz -> 200: {printable(said, _DETAIL_CHARS)}")


# -- tracing and alerting ---------------------------------------------------------------------------------


async def check_otlp(config: Config) -> CheckResult:
    name = "otlp endpoint"
    tracing = config.tracing
    if tracing.exporter != "otlp":
        return skipped(name, f"tracing.exporter is {tracing.exporter}")
    host, port = _host_port(tracing.endpoint)
    started = time.perf_counter()
    problem = await _connect(host, port, min(tracing.timeout, 5.0), None, None)
    if problem:
        return failed(name, f"tracing.endpoint {tracing.endpoint}: {problem}")
    return passed(name, f"{tracing.endpoint} accepts a connection in {_ms(time.perf_counter() - started)}")


def check_alert_rules(rules: Path, promtool: str | None) -> CheckResult:
    name = "alert rules"
    if promtool is None:
        return skipped(name, "promtool is not on PATH")
    if not rules.is_file():
        return skipped(name, f"no rules file at {rules} (pass --rules FILE)")
    try:
        run = subprocess.run(
            [promtool, "check", "rules", str(rules)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return failed(name, f"promtool check rules {rules}: {exc}")
    said = [line.strip() for line in (run.stdout + "\n" + run.stderr).splitlines() if line.strip()]
    if run.returncode != 0:
        return failed(name, f"promtool check rules {rules}: {_quoted(' '.join(said[-3:]))}")
    found = next((line for line in said if line.startswith("SUCCESS")), "ok")
    return passed(name, f"promtool check rules {rules.name}: {found}")


# -- a rollback rehearsal on a running proxy --------------------------------------------------------------


class RehearsalStep(Exception):
    """One admin call of the rehearsal did not answer as expected; the message says which and why."""


async def _call(
    client: httpx.AsyncClient, method: str, path: str, body: Any = None, revision: int | None = None
) -> dict[str, Any]:
    headers = {"if-match": f'"{revision}"'} if revision is not None else {}
    try:
        resp = await client.request(method, path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise RehearsalStep(f"{method} {path}: {printable(str(exc)) or type(exc).__name__}") from exc
    if resp.status_code != 200:
        raise RehearsalStep(f"{method} {path} -> {resp.status_code}: {_problem(resp)}")
    try:
        doc: dict[str, Any] = resp.json()
    except ValueError as exc:
        raise RehearsalStep(f"{method} {path} -> 200, but not JSON: {exc}") from exc
    return doc


async def _rollout(client: httpx.AsyncClient) -> dict[str, Any]:
    rollout: dict[str, Any] = (await _call(client, "GET", "/status"))["rollout"]
    return rollout


async def _restore(client: httpx.AsyncClient, ours: int | None) -> str:
    """After a failed step, bring the rehearsal's own leftovers back to idle at weight 0. Only a state at
    ``ours`` (the last revision the rehearsal made) is touched: one that changed since is someone else's."""
    if ours is None:
        return "nothing was changed"
    with contextlib.suppress(RehearsalStep, KeyError, ValueError):
        now = await _rollout(client)
        if now["revision"] != ours:
            return f"left alone: the rollout changed meanwhile (now {now['phase']} at {now['weight']:g}%)"
        if now["phase"] == "paused":
            now = await _call(client, "POST", "/rollout/rollback", {"reason": REHEARSAL_REASON}, ours)
        if now["phase"] == "rolled_back":
            now = await _call(client, "POST", "/rollout/rearm", {"reason": REHEARSAL_REASON}, now["revision"])
        return f"restored: the rollout is {now['phase']} at {now['weight']:g}%"
    return "the rollout's state could not be read back or restored"


async def rehearse_rollback(admin: Admin, *, within_s: float) -> CheckResult:
    """Weight 1% -> rollback -> weight 0 within ``within_s`` seconds, then re-arm back to idle; only on a
    rollout that is idle at weight 0, so a live rollout is never disturbed. An idle rollout's id has carried
    no traffic (a start, a re-arm and a new candidate each draw a new one), so the rehearsal's users and
    decisions are its own, and the re-arm leaves the next rollout a new id again. Each move names the
    revision it expects (If-Match), so one made by anybody else meanwhile is refused, not overwritten;
    every move is a decision-log entry with the reason :data:`REHEARSAL_REASON`."""
    name = "rollback rehearsal"
    async with admin.client() as client:
        try:
            status = await _call(client, "GET", "/status")
        except RehearsalStep as exc:
            return failed(name, str(exc))
        rollout = status["rollout"]
        if rollout["phase"] != "idle" or rollout["weight"] != 0:
            return failed(
                name,
                f"refused: the rollout is {rollout['phase']} at {rollout['weight']:g}%; a rehearsal runs "
                "only on an idle rollout at weight 0, never on a live one",
            )
        if not status.get("candidate", {}).get("allowed", True):
            return failed(name, "refused: the candidate is not verified, so it may receive no traffic")
        ours: int | None = None
        try:
            body = {"reason": REHEARSAL_REASON}
            raised = await _call(client, "PUT", "/weights", {"canary": 1, **body}, rollout["revision"])
            ours = raised["revision"]
            started = time.perf_counter()
            ours = (await _call(client, "POST", "/rollout/rollback", body, ours))["revision"]
            while (now := await _rollout(client))["weight"] != 0:
                if time.perf_counter() - started > within_s:
                    break
                await asyncio.sleep(0.01)
            took = time.perf_counter() - started
            after = await _call(client, "POST", "/rollout/rearm", body, now["revision"])
        except RehearsalStep as exc:
            return failed(name, f"{exc}; {await _restore(client, ours)}")
    if now["weight"] != 0:
        return failed(name, f"weight 1% -> rollback: still {now['weight']:g}% after {_ms(took)}")
    if took > within_s:
        return failed(name, f"weight 1% -> rollback -> 0% took {_ms(took)}, over the {within_s:g}s bound")
    if after["phase"] != "idle" or after["weight"] != 0:
        return failed(name, f"re-armed, but the rollout is {after['phase']} at {after['weight']:g}%")
    return passed(
        name,
        f"weight 1% -> rollback -> 0% in {_ms(took)} (bound {within_s:g}s) on rollout "
        f"{rollout.get('rollout_id')}, re-armed as rollout {after.get('rollout_id')}: idle at 0%; "
        f"decision log: set_weight, ROLLBACK, rearm ({REHEARSAL_REASON!r})",
    )
