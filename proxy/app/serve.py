"""Running the proxy: bind both listeners, serve them with uvicorn until a stop signal, drain, exit.

SIGTERM/SIGINT stop (no new connections, in-flight requests drain); SIGHUP reloads the config and the
listeners' TLS material (``app/reload.py``).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import uvicorn

from proxy.app.build import build
from proxy.config.model import Config, LimitsConfig, Listen
from proxy.config.tls_contexts import ServerTls
from proxy.edge.listener import ListenerGuard, ListenerLimits, OnReject
from proxy.observe.metrics import ListenerName

log = logging.getLogger("rollguard")


def bind(listen: Listen) -> socket.socket:
    """Bind the listening socket ourselves: a clear error on a taken port, and port 0 works."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    try:
        sock = socket.create_server((listen.host, listen.port), family=family, backlog=2048)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {listen}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def bound(sock: socket.socket) -> Listen:
    host, port = sock.getsockname()[:2]
    return Listen(host=host, port=port)


def _uvicorn(
    app: Any,
    *,
    graceful: int,
    limits: LimitsConfig,
    name: str,
    on_reject: OnReject | None = None,
    tls: ServerTls | None = None,
) -> uvicorn.Server:
    """One listener's server: uvicorn's httptools protocol with rollguard's head and concurrency limits.

    ``on_reject(status, reason)`` counts what the listener answers itself (431, 408, 400, 501, 505, 503),
    below the app: those never reach the forwarder and count against no model version. With ``tls`` the
    listener serves HTTPS with that context, which uvicorn passes to ``loop.create_server(ssl=...)``.
    """
    guard = ListenerGuard(
        ListenerLimits.from_config(limits),
        on_reject=on_reject,
        name=name,
    )
    cfg = uvicorn.Config(
        app,
        interface="asgi3",  # not guessed: the data plane's app is a function that returns a coroutine
        http=guard.protocol,
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=graceful,
        # uvicorn's hook for a context built elsewhere: ours, kept for the listener's life (reloads
        # switch certificates inside it, see tls.ServerTls).
        ssl_context_factory=(lambda _cfg, _default: tls.context) if tls is not None else None,
    )
    cfg.load()
    server = uvicorn.Server(cfg)
    server.lifespan = cfg.lifespan_class(cfg)
    return server


async def serve(
    config: Config,
    *,
    on_ready: Callable[[Listen, Listen], None] | None = None,
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
) -> None:
    """Run the data plane and the admin listener until SIGTERM/SIGINT (or ``stop`` is set); SIGHUP
    reloads the config (``reload.py``) and the listeners' TLS material.

    ``handle_signals=False`` leaves signal handling to the caller (an embedding process, the demo, tests).
    """
    stop = stop or asyncio.Event()
    async with AsyncExitStack() as sockets:
        # Bound before anything is built, closed on every way out (a failed build included).
        data_sock = sockets.enter_context(bind(config.listen))
        admin_sock = sockets.enter_context(bind(config.admin.listen))
        # Contexts first: a certificate that cannot be loaded stops the start before anything is built.
        data_tls = ServerTls(config.tls) if config.tls is not None else None
        admin_tls = ServerTls(config.admin.tls) if config.admin.tls is not None else None
        async with build(config) as rt:
            rt.reloader.attach_tls(data=data_tls, admin=admin_tls)
            limits = config.limits  # listener-level: a reload leaves these as they started
            servers = [
                _uvicorn(
                    rt.data,
                    graceful=10,
                    limits=limits,
                    name="data",
                    on_reject=lambda code, why: rt.metrics.rejected(ListenerName.DATA, code, why),
                    tls=data_tls,
                ),
                _uvicorn(
                    rt.admin,
                    graceful=2,
                    limits=limits,
                    name="admin",
                    on_reject=lambda code, why: rt.metrics.rejected(ListenerName.ADMIN, code, why),
                    tls=admin_tls,
                ),
            ]
            loop = asyncio.get_running_loop()
            signals = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP) if handle_signals else ()
            for sig in signals[:2]:
                loop.add_signal_handler(sig, stop.set)
            if handle_signals:
                loop.add_signal_handler(signal.SIGHUP, rt.reloader.on_signal)
            try:
                await servers[0].startup(sockets=[data_sock])
                await servers[1].startup(sockets=[admin_sock])
                tune_gc()
                if on_ready is not None:
                    on_ready(bound(data_sock), bound(admin_sock))
                await stop.wait()
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)
                log.info("stopping: no new connections; draining in-flight requests")
                for server in servers:
                    server.should_exit = True
                await asyncio.gather(
                    *(
                        s.shutdown(sockets=[sock])
                        for s, sock in zip(servers, (data_sock, admin_sock), strict=True)
                        if getattr(s, "servers", None) is not None
                    )
                )


def tune_gc() -> None:
    """Move everything built at start-up out of the collector's way, and collect young objects less often.

    Every request allocates a few dozen short-lived objects; with the default gen-0 threshold (700) the
    collector runs every few requests and re-walks the long-lived start-up objects each time. Measured
    on the benchmark's small JSON POST: about 8% more requests per second with this.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def announcer(config: Config) -> Callable[[Listen, Listen], None]:
    """The start-up line operators (and tests) read to learn the bound ports and schemes."""
    data_scheme = "https" if config.tls is not None else "http"
    admin_scheme = "https" if config.admin.tls is not None else "http"

    def announce(data: Listen, admin: Listen) -> None:
        line = f"rollguard listening data={data_scheme}://{data} admin={admin_scheme}://{admin}"
        print(line, file=sys.stderr, flush=True)

    return announce


def run(config: Config) -> None:
    """Blocking entry point for ``rollguard serve``: uvloop when available."""
    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config, on_ready=announcer(config)))
