"""The load driver's own ceiling: the highest rate ``rollguard loadtest`` holds against a target that is
never the bottleneck.

    .venv/bin/python benchmarks/bench_loadtest.py [--rates 1000,2000,4000,...] [--duration 5s] [--out FILE]

The target is the static nginx "model server" of the other benchmarks (a fixed ~110-byte JSON answer,
tens of thousands of req/s on one core), pinned to CPU 1; the driver runs as a user runs it,
``rollguard loadtest --target ... --rate R --duration D --out DIR``, pinned to CPU 0, with the sample
model's bodies. Each rate is one row: what the driver sent against what it offered, the lag of its schedule
at the end, its own CPU, the client-side p50/p99 and the rate check. The ceiling is the highest rate whose
rate check passed: above it the verdicts would be the driver's, which is what ``loadtest`` then says.
With fewer than 2 CPUs the run is unpinned and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import nginx_conf  # noqa: E402 - benchmarks/, beside this script
import procs  # noqa: E402

DEFAULT_RATES = "1000,2000,3000,4000,5000,6000,8000"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rates", default=DEFAULT_RATES, help=f"requests per second to try (default {DEFAULT_RATES})"
    )
    ap.add_argument("--duration", default="5s", help="per rate (default 5s)")
    ap.add_argument("--out", type=Path, help="write the rows and the machine to this JSON file")
    args = ap.parse_args()
    pinned = (os.cpu_count() or 1) >= 2
    driver_cpu, target_cpu = (0, 1) if pinned else (None, None)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rollguard-bench-loadtest-") as tmp:
        root = Path(tmp)
        port, spare = procs.free_ports(2)
        prefix = root / "nginx"
        nginx_conf.write_prefix(prefix, nginx_conf.upstream_conf(prefix, port, spare))
        server = procs.start("nginx", procs.pin(target_cpu) + nginx_conf.nginx_cmd(prefix), root)
        try:
            procs.wait_until(lambda: procs.accepts(port), [server], 10.0, "nginx accepts")
            for rate in (float(r) for r in args.rates.split(",")):
                rows.append(_row(rate, args.duration, port, driver_cpu, root / f"r{int(rate)}", server))
        finally:
            procs.stop(server)
    print(
        f"\n{'rate':>8} {'sent':>8} {'achieved':>10} {'lag end ms':>10} {'driver cpu':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8}  rate check"
    )
    for r in rows:
        print(
            f"{r['rate']:>8,.0f} {r['sent']:>8,} {r['achieved_rps']:>10,.0f} {r['final_lag_ms']:>10.1f} "
            f"{r['driver_cpu_cores']:>10.0%} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}  "
            f"{'held' if r['held'] else 'NOT held'}"
        )
    held = [r["rate"] for r in rows if r["held"]]
    ceiling = max(held) if held else None
    where = "driver on CPU 0, nginx on CPU 1" if pinned else "unpinned (fewer than 2 CPUs)"
    print(f"\nceiling: {ceiling:,.0f} req/s held ({where})" if ceiling else f"\nno rate held ({where})")
    if args.out is not None:
        import machine  # benchmarks/machine.py

        machine.write_result(
            args.out,
            REPO,
            [{"name": "loadtest_ceiling", "ceiling_rps": ceiling, "pinned": pinned, "rows": rows}],
        )
    return 0


def _row(
    rate: float, duration: str, port: int, cpu: int | None, out: Path, server: procs.Server
) -> dict[str, Any]:
    cmd = [
        *procs.pin(cpu),
        str(REPO / ".venv" / "bin" / "python"),
        "-m",
        "proxy",
        "loadtest",
        "--target",
        f"http://{procs.HOST}:{port}/v1/infer",
        "--rate",
        f"{rate:g}",
        "--duration",
        duration,
        "--slo",
        "p99=1s,errors=1%",
        "--pid",
        str(server.popen.pid),
        "--plain",
        "--out",
        str(out),
    ]
    with contextlib.suppress(subprocess.CalledProcessError):
        subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120, check=False)
    load = json.loads((out / "staging_report.json").read_text())["load"]
    lat = load["all"]["latency_ms"]
    return {
        "rate": rate,
        "offered": load["offered"],
        "sent": load["sent"],
        "dropped": load["throughput"]["dropped"],
        "achieved_rps": load["throughput"]["achieved_rps"],
        "final_lag_ms": load["schedule_lag_ms"]["final"] or 0.0,
        "driver_cpu_cores": load["resources"]["driver"]["cpu_cores"] or 0.0,
        "target_cpu_cores": (load["resources"]["target"] or {}).get("cpu_cores"),
        "p50_ms": lat["p50"] or 0.0,
        "p99_ms": lat["p99"] or 0.0,
        "held": load["throughput"]["passed"],
    }


if __name__ == "__main__":
    sys.exit(main())
