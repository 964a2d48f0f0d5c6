"""``python -m proxy.demo.sample_traffic``: the demo's traffic, pointed at any rollguard in front of the
sample models, for trying a rollout by hand (README, "Your first real rollout").

Open loop at ``--rps`` (see :class:`~proxy.demo.traffic.TrafficGenerator`): sticky ``x-user-id`` users, a
small share of bodies that break the route's contract, every outcome tallied per answering version. Every
``--every`` seconds one line says what the clients saw so far; at the end (``--duration``, SIGINT or
SIGTERM) the summary. Exit 0 whatever the answers were: this drives load, it does not judge it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time

from proxy.config.units import parse_duration
from proxy.demo.traffic import TrafficGenerator, TrafficStats


def _progress(stats: TrafficStats, elapsed: float) -> str:
    per_version = ", ".join(f"{v} {n}" for v, n in sorted(stats.by_version.items())) or "none yet"
    return (
        f"{elapsed:7.0f}s  sent {stats.sent}  answered: {per_version}  rejected by contract "
        f"{stats.rejected}  errors {stats.errors}  shed {stats.shed}"
    )


async def _run(args: argparse.Namespace) -> None:
    baseline, candidate = args.versions.split(",", 1)
    stats = TrafficStats((baseline, candidate))
    traffic = TrafficGenerator(
        args.url, stats, rps=args.rps, users=args.users, invalid_share=args.invalid_share, seed=args.seed
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    start = time.monotonic()

    async def report() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.every)
            print(_progress(stats, time.monotonic() - start), flush=True)

    async def deadline() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.duration)
        stop.set()

    await asyncio.gather(traffic.run(stop), report(), deadline())
    print("\n".join(stats.summary_lines()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m proxy.demo.sample_traffic",
        description="Send the sample model's requests through rollguard at a fixed rate.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080/v1/infer", help="the route to POST to")
    parser.add_argument("--rps", type=float, default=10.0, help="requests per second (default 10)")
    parser.add_argument("--duration", type=parse_duration, default=3600.0, help="e.g. 30m (default 1h)")
    parser.add_argument("--users", type=int, default=3000, help="sticky users u-1..u-N (default 3000)")
    parser.add_argument("--invalid-share", type=float, default=0.02, help="bodies breaking the contract")
    parser.add_argument("--versions", default="v1,v2", help="baseline,candidate for the summary")
    parser.add_argument("--every", type=parse_duration, default=10.0, help="progress line period")
    parser.add_argument("--seed", type=int, default=None, help="fix the bodies and users drawn")
    args = parser.parse_args(argv)
    if "," not in args.versions:
        parser.error("--versions takes two names: baseline,candidate")
    try:
        asyncio.run(_run(args))
    except ValueError as exc:  # the generator's own checks (rps, users, share)
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
