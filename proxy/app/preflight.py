"""``rollguard preflight --config FILE``: the staging checklist, one PASS/FAIL/SKIP line per check.

In order: the schemas compile; each upstream accepts a connection; each route answers its contract on a
sample request sent straight to baseline and candidate (the first line of ``--bodies``, or the sample
generator's body on the sample model's route); the candidate's manifest verifies; the TLS files load and
do not expire within ``--tls-warn``; the state store is writable; with ``--admin``, the running proxy's
``/metrics`` parses and ``/readyz`` is ready; the OTLP endpoint accepts a connection when traces are
exported; promtool accepts the alert rules; with ``--admin`` and ``--rehearse``, a rollback rehearsal on
an idle rollout (last, so every other line is known before the proxy is touched).

A SKIP says why the check could not run here and does not fail the run. Exit status: 0 when no check
failed, 1 when one did, 2 for a bad argument or a config that does not load (the message names the key).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from proxy.app.loadtest import UsageError, read_bodies
from proxy.app.preflight_checks import (
    Admin,
    CheckResult,
    NextSample,
    SampleRequest,
    check_alert_rules,
    check_contract,
    check_manifest,
    check_metrics,
    check_otlp,
    check_reachable,
    check_readyz,
    check_route_sample,
    check_schemas,
    check_state_store,
    check_tls,
    rehearse_rollback,
    sample_request,
    skipped,
)
from proxy.config.load import load_config
from proxy.config.model import Config
from proxy.config.units import parse_duration
from proxy.errors import ConfigError

if TYPE_CHECKING:
    from proxy.app.loadtest import SampleBody  # the sample model's generator, as loadtest takes it

EXIT_PASS, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
SAMPLE_SEED = 7  # the sample generator's draw: the same body on every run


@dataclass(frozen=True, slots=True)
class Plan:
    config: Config
    given: SampleRequest | None  # --bodies' first line
    sample: NextSample
    tls_warn_s: float
    admin: Admin | None
    rehearse: bool
    rehearse_within_s: float
    rules: Path
    promtool: str | None


def run_preflight(args: argparse.Namespace, *, sample: SampleBody) -> int:
    """The whole command; see the module docstring for the exit status."""
    try:
        plan = _plan(args, sample)
    except UsageError as exc:
        print(f"rollguard: {exc}", file=sys.stderr)
        return EXIT_USAGE
    results = asyncio.run(run_checks(plan, _print_line))
    return _summary(results)


def _plan(args: argparse.Namespace, sample: SampleBody) -> Plan:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        raise UsageError(f"invalid config: {exc}") from exc
    rng = random.Random(SAMPLE_SEED)
    admin = None
    if args.admin:
        if not args.admin.startswith(("http://", "https://")):
            raise UsageError(f"--admin {args.admin!r}: expected an http:// or https:// URL")
        admin = Admin(args.admin.rstrip("/"), os.environ.get("ROLLGUARD_TOKEN"), _admin_verify(args.cacert))
    elif args.rehearse:
        raise UsageError("--rehearse needs --admin URL of the running proxy to rehearse on")
    return Plan(
        config=config,
        given=_first_body(Path(args.bodies)) if args.bodies else None,
        sample=lambda: sample(rng),
        tls_warn_s=_duration("--tls-warn", args.tls_warn),
        admin=admin,
        rehearse=bool(args.rehearse),
        rehearse_within_s=_duration("--rehearse-within", args.rehearse_within),
        rules=Path(args.rules),
        promtool=shutil.which("promtool"),
    )


def _duration(flag: str, text: str) -> float:
    """The config's durations (``250ms``, ``2s``, ``1m``, ``1h``), and days (``14d``) for certificates."""
    try:
        if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit():
            days = float(text[:-1])
            if days > 0:
                return days * 86400
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{flag} {exc} (or days: 14d)") from exc


def _admin_verify(cacert: str | None) -> ssl.SSLContext | bool:
    if cacert is None:
        return True
    try:
        return ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"--cacert {cacert}: {exc}") from exc


def _first_body(path: Path) -> SampleRequest:
    number, body = read_bodies(path)[0]
    return SampleRequest(body, {}, f"{path.name} line {number}")


async def run_checks(plan: Plan, emit: Callable[[CheckResult], None]) -> list[CheckResult]:
    """Every check in order; each result is emitted as soon as it is known."""
    results: list[CheckResult] = []

    def add(*found: CheckResult) -> None:
        for result in found:
            results.append(result)
            emit(result)

    config = plan.config
    upstreams = (config.baseline, config.candidate)
    add(check_schemas(config))
    for up in upstreams:
        add(await check_reachable(up))
    for route in config.routes:
        sample = sample_request(route, plan.given, plan.sample)
        whole = check_route_sample(route, sample)
        if whole is not None:
            add(whole)
            continue
        assert isinstance(sample, SampleRequest)  # a missing sample is a SKIP above
        for up in upstreams:
            add(await check_contract(route, up, sample))
    if not config.routes:
        add(skipped("contract", "no routes configured"))
    add(check_manifest(config))
    add(*check_tls(config, warn_s=plan.tls_warn_s))
    add(check_state_store(config))
    if plan.admin is None:
        add(
            skipped("admin /metrics", "no --admin URL of a running proxy"),
            skipped("admin /readyz", "no --admin URL of a running proxy"),
        )
    else:
        add(await check_metrics(plan.admin), await check_readyz(plan.admin))
    add(await check_otlp(config))
    add(await asyncio.to_thread(check_alert_rules, plan.rules, plan.promtool))  # promtool takes a while
    if plan.admin is None or not plan.rehearse:
        why = "pass --rehearse" + ("" if plan.admin else " and --admin URL") + " to rehearse a rollback"
        add(skipped("rollback rehearsal", why))
    else:
        add(await rehearse_rollback(plan.admin, within_s=plan.rehearse_within_s))
    return results


NAME_WIDTH = 28


def _print_line(result: CheckResult) -> None:
    print(f"{result.status}  {result.name:<{NAME_WIDTH}} {result.detail}", flush=True)


def _summary(results: list[CheckResult]) -> int:
    failures = [r for r in results if r.status == "FAIL"]
    skips = sum(r.status == "SKIP" for r in results)
    ran = len(results) - skips
    skipped_note = f"; {skips} skipped (a skipped check does not fail the run)" if skips else ""
    if failures:
        names = ", ".join(r.name for r in failures)
        print(f"preflight: FAIL: {len(failures)} of {ran} checks failed ({names}){skipped_note}")
        return EXIT_FAIL
    print(f"preflight: PASS: {ran} checks passed{skipped_note}")
    return EXIT_PASS
