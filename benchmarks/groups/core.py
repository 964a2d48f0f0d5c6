"""The core rows: rollguard against its anchors, the same job for each: a 90/10 split to the two static
upstreams. Their numbers are the common table's (report.py); the group has nothing of its own to judge."""

from __future__ import annotations

import contextlib

import harness
import nginx_conf
import procs
from harness import Row, RunContext, Target

from groups import Group


def start_direct(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
    assert ctx.upstreams is not None
    return Target(ctx.upstreams.baseline_port, extra={"note": "wrk straight to the baseline upstream"})


def start_nginx_split(ctx: RunContext, stack: contextlib.ExitStack) -> Target:
    assert ctx.upstreams is not None
    [port], prefix = procs.free_ports(1), ctx.tmp / "nginx-split"
    conf = nginx_conf.split_conf(
        prefix, port, ctx.upstreams.baseline_port, ctx.upstreams.candidate_port, harness.CANARY_WEIGHT
    )
    nginx_conf.write_prefix(prefix, conf)
    cmd = procs.pin(ctx.pinning.proxy_cpu) + nginx_conf.nginx_cmd(prefix)
    server = harness.serve(ctx, stack, "nginx-split", cmd)
    harness.wait_for_proxy(ctx, server, port)
    return Target(port, cmd, {"nginx_conf": conf}, proxy=server)


GROUP = Group(
    "core",
    (
        Row("direct", "wrk straight to the static nginx upstream (the ceiling)", start_direct),
        Row(
            "nginx_split",
            "nginx reverse proxy, split_clients 90/10, keep-alive upstreams (the anchor)",
            start_nginx_split,
        ),
        Row(
            "minimal_asgi",
            "raw ASGI on uvicorn+uvloop+httptools, one aiohttp session (the Python floor)",
            harness.python_anchor("minimal_asgi_proxy.py"),
            also_in=("shadow", "contracts"),  # the ratio anchor of the shadow and contracts rows too
        ),
        Row(
            "starlette_httpx",
            "Starlette catch-all route + shared httpx.AsyncClient (what people write first)",
            harness.python_anchor("starlette_httpx_proxy.py"),
        ),
        # The defaults of start_rollguard are this row: canary 10, no shadow section.
        Row("rollguard", "`rollguard serve --config <generated>`, the real proxy", harness.start_rollguard),
    ),
)
