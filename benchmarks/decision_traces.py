"""Synthetic backtest traces for the decision benchmark: what *both* versions would have answered to every
request, so a replay can route each request by the weight of the moment and observe one of them.

    .venv/bin/python benchmarks/decision_traces.py --scenario p95_up_20 --windows 40 --seed 7 --out t.jsonl
    .venv/bin/python benchmarks/decision_traces.py --list

Conditions (the decision benchmark's), unless a scenario says otherwise:

- Poisson arrivals at 4,000 requests per minute (``--rps`` overrides the scenario's rate); ``windows`` x
  ``window_s`` seconds of traffic. The window length is only the trace's length unit: the replay's
  ``canary.interval`` decides where its windows fall.
- Latency lognormal, median 30 ms, sigma 1.0 (p95 155 ms, p99 307 ms), drawn independently for each
  version: two servers answer the same request in different times.
- Independent errors 1% per version (status 500, a normal latency).
- One score per request from Beta(2, 3), the same for both versions (the same model behaviour); a failed
  answer has none. ``contract_ok`` is left at its default, true.
- Sticky keys ``u-<n>`` from 20,000 users with Zipf (s = 1) activity: the busiest user sends ~9.5% of
  the requests, the median one a few per hour, so a sticky split clusters. ``--users 0`` writes no
  keys: the replay then routes each request by a seeded draw (random routing).

Shared incidents hit both versions at the same moments, each version still drawing its own outcome:
3 s error bursts (both fail 30-60% of requests with 503), 2-minute brownouts (latency x3, 5% of requests
time out: status 0 at the 2 s upstream timeout), and a drift of the latency median by +-20% (a sine with
a 30-minute period and a random phase). Incident times are drawn from the seed, before any request.

Every trace is a pure function of (scenario, windows, window_s, rps, users, seed): the benchmark
regenerates a trace instead of storing it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxy.rollout.trace import Outcome, TracedRequest

MEDIAN_MS = 30.0
SIGMA = 1.0
PARETO_ALPHA = 1.7  # finite mean, infinite variance; p99 ~300 ms at a 30 ms median, like the lognormal's
ERROR = 0.01
PER_MINUTE = 4000.0
USERS = 20_000
ZIPF_S = 1.0
SCORE_BETA = (2.0, 3.0)  # mean 0.4, 31% of scores >= 0.5 (positive decisions at the default threshold)

BURST_S = 3.0
BURST_FAILURE = (0.30, 0.60)  # each burst's failure share, uniform in this range
BROWNOUT_S = 120.0
BROWNOUT_LATENCY = 3.0
BROWNOUT_ERROR = 0.05
TIMEOUT_MS = 2000.0  # a timed-out attempt's latency: the upstreams' timeout
DRIFT_PERIOD_S = 1800.0
FAST_FAIL_MS = 2.0  # a candidate that fails every request answers 503 at once


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One version's behaviour outside the shared incidents."""

    error: float = ERROR
    scale: float = 1.0  # every latency multiplied by this
    slow_share: float = 0.0  # share of requests that take a slow path ...
    slow_factor: float = 1.0  # ... this many times slower
    always_fail: bool = False


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    note: str
    baseline: Behaviour = field(default_factory=Behaviour)
    candidate: Behaviour = field(default_factory=Behaviour)
    per_minute: float = PER_MINUTE
    pareto: bool = False  # heavy-tailed latency instead of lognormal
    bursts_per_minute: float = 0.0
    brownouts_per_minute: float = 0.0
    drift: float = 0.0  # amplitude of the latency median's drift, as a share

    @property
    def aa(self) -> bool:
        """The candidate behaves as the baseline: any rollback is a false one."""
        return self.baseline == self.candidate


def slow_factor_for(p99_ratio: float, share: float, sigma: float = SIGMA) -> float:
    """The slow path's factor that multiplies a lognormal's p99 by ``p99_ratio`` when ``share`` of the
    requests take it: solves (1 - share) S(x) + share S(x / k) = 1% at x = ratio x p99 for k."""
    z99 = NormalDist().inv_cdf(0.99)
    x = math.log(p99_ratio) + sigma * z99  # log(x / median)
    fast_tail = 1.0 - NormalDist().cdf(x / sigma)
    slow_tail = (0.01 - (1.0 - share) * fast_tail) / share
    if not 0.0 < slow_tail < 1.0:
        raise ValueError(f"a {share:.1%} slow path cannot make p99 x{p99_ratio}")
    return math.exp(x - sigma * NormalDist().inv_cdf(1.0 - slow_tail))


TAIL_SHARE = 0.02
TAIL_FACTOR = slow_factor_for(2.0, TAIL_SHARE)  # ~17.5: a 525 ms median slow path

_healthy = Behaviour(error=0.0)
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("aa_independent", "A/A, independent errors 1% both"),
        Scenario(
            "aa_shared_bursts",
            "A/A, ~3 shared 3 s bursts a minute: both fail 30-60% during a burst",
            bursts_per_minute=3.0,
        ),
        Scenario(
            "aa_drift_brownout",
            "A/A, median drifting +-20% and a 2-min brownout (latency x3, 5% timeouts) every ~10 min",
            drift=0.20,
            brownouts_per_minute=0.1,
        ),
        Scenario("aa_low_traffic", "A/A at 20 requests a minute", per_minute=20.0),
        Scenario("aa_high_traffic", "A/A at 20,000 requests a minute", per_minute=20_000.0),
        Scenario("aa_pareto", f"A/A, Pareto latency (alpha {PARETO_ALPHA}, median 30 ms)", pareto=True),
        Scenario("aa_zero_errors", "A/A, neither version ever fails", _healthy, _healthy),
        Scenario("p95_up_20", "candidate latency x1.2 (p95 +20%)", candidate=Behaviour(scale=1.2)),
        Scenario("p95_up_50", "candidate latency x1.5 (p95 +50%)", candidate=Behaviour(scale=1.5)),
        Scenario(
            "tail_only_p99x2",
            f"{TAIL_SHARE:.0%} of candidate requests {TAIL_FACTOR:.1f}x slower: p99 x2, p50 +3%, p95 +22%",
            candidate=Behaviour(slow_share=TAIL_SHARE, slow_factor=TAIL_FACTOR),
        ),
        Scenario("errors_1_to_2", "candidate errors 1% -> 2%", candidate=Behaviour(error=0.02)),
        Scenario("errors_1_to_5", "candidate errors 1% -> 5%", candidate=Behaviour(error=0.05)),
        Scenario("errors_0_to_1", "baseline never fails, candidate 1%", _healthy, Behaviour(error=0.01)),
        Scenario(
            "all_fail", "candidate answers every request 503 at once", candidate=Behaviour(always_fail=True)
        ),
    )
}


@dataclass(frozen=True, slots=True)
class Incidents:
    """When the shared incidents happen: (start, end, failure share) bursts, (start, end) brownouts."""

    bursts: tuple[tuple[float, float, float], ...]
    brownouts: tuple[tuple[float, float], ...]
    drift: float
    drift_phase: float

    def latency_factor(self, t: float, brownout: bool) -> float:
        factor = 1.0 + self.drift * math.sin(2.0 * math.pi * t / DRIFT_PERIOD_S + self.drift_phase)
        return factor * BROWNOUT_LATENCY if brownout else factor


def incidents(sc: Scenario, duration_s: float, rng: random.Random) -> Incidents:
    """Poisson numbers of bursts and brownouts, each at a uniform time in the trace, sorted by start."""

    def count(per_minute: float) -> int:
        # Poisson by counting exponential gaps: the expected count is a handful, so this is cheap.
        n, t, rate = 0, rng.expovariate(1.0), per_minute * duration_s / 60.0
        while rate > 0 and t < rate:
            n += 1
            t += rng.expovariate(1.0)
        return n

    bursts = sorted(
        (s, s + BURST_S, rng.uniform(*BURST_FAILURE))
        for s in (rng.uniform(0.0, duration_s) for _ in range(count(sc.bursts_per_minute)))
    )
    brownouts = sorted(
        (s, s + BROWNOUT_S)
        for s in (rng.uniform(-BROWNOUT_S, duration_s) for _ in range(count(sc.brownouts_per_minute)))
    )
    return Incidents(tuple(bursts), tuple(brownouts), sc.drift, rng.uniform(0.0, 2.0 * math.pi))


_ZIPF: dict[tuple[int, float], tuple[list[str], list[float]]] = {}


def _users(n: int, s: float) -> tuple[list[str], list[float]]:
    """Key names and cumulative Zipf weights, built once per process."""
    if (n, s) not in _ZIPF:
        keys = [f"u-{i}" for i in range(1, n + 1)]
        _ZIPF[n, s] = keys, list(itertools.accumulate(i**-s for i in range(1, n + 1)))
    return _ZIPF[n, s]


def _keys(rng: random.Random, users: int) -> Iterator[str]:
    keys, cum = _users(users, ZIPF_S)
    while True:
        yield from rng.choices(keys, cum_weights=cum, k=4096)


def requests(
    sc: Scenario,
    *,
    windows: int,
    seed: int,
    window_s: float = 60.0,
    rps: float | None = None,
    users: int = USERS,
) -> Iterator[TracedRequest]:
    """The trace, in time order. ``rps`` overrides the scenario's rate; ``users=0`` writes no keys."""
    duration = windows * window_s
    # String seeds draw streams unrelated to ``random.Random(seed)``, which the replays route with.
    rng = random.Random(f"requests/{seed}")
    inc = incidents(sc, duration, random.Random(f"incidents/{seed}"))
    keys = _keys(random.Random(f"keys/{seed}"), users) if users > 0 else None
    rate = rps if rps is not None else sc.per_minute / 60.0
    expo, gauss, rand, beta = rng.expovariate, rng.gauss, rng.random, rng.betavariate
    pareto = rng.paretovariate
    x_m = MEDIAN_MS / 2.0 ** (1.0 / PARETO_ALPHA)  # the Pareto scale giving a 30 ms median
    mu = math.log(MEDIAN_MS)
    bursts, brownouts = inc.bursts, inc.brownouts
    bi = oi = 0

    def answer(v: Behaviour, factor: float, burst: float, brownout: bool, score: float) -> Outcome:
        if v.always_fail:
            return Outcome(503, FAST_FAIL_MS)
        lat = (x_m * pareto(PARETO_ALPHA) if sc.pareto else math.exp(mu + SIGMA * gauss(0.0, 1.0))) * factor
        if v.slow_share and rand() < v.slow_share:
            lat *= v.slow_factor
        lat = round(lat * v.scale, 3)
        if rand() < v.error:
            return Outcome(500, lat)
        if burst and rand() < burst:
            return Outcome(503, lat)
        if brownout and rand() < BROWNOUT_ERROR:
            return Outcome(0, TIMEOUT_MS)
        return Outcome(200, lat, score)

    t = 0.0
    while True:
        t += expo(rate)
        if t >= duration:
            return
        while bi < len(bursts) and bursts[bi][1] <= t:
            bi += 1
        while oi < len(brownouts) and brownouts[oi][1] <= t:
            oi += 1
        burst = bursts[bi][2] if bi < len(bursts) and bursts[bi][0] <= t else 0.0
        brownout = oi < len(brownouts) and brownouts[oi][0] <= t
        factor = inc.latency_factor(t, brownout)
        score = round(beta(*SCORE_BETA), 4)
        yield TracedRequest(
            round(t, 4),
            next(keys) if keys is not None else None,
            None,
            answer(sc.baseline, factor, burst, brownout, score),
            answer(sc.candidate, factor, burst, brownout, score),
        )


def write(out: BinaryIO, trace: Iterator[TracedRequest]) -> int:
    """JSONL as ``rollguard backtest`` reads it; the number of lines written."""
    n = 0
    for req in trace:
        out.write(req.to_line())
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--windows", type=int, default=40, help="trace length in windows (default 40)")
    ap.add_argument("--window-s", type=float, default=60.0, help="window length in seconds (default 60)")
    ap.add_argument("--rps", type=float, help="requests per second (default: the scenario's)")
    ap.add_argument(
        "--users", type=int, default=USERS, help=f"sticky-key population (default {USERS}; 0: none)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="-", help="JSONL file, - for stdout (default)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args(argv)
    if args.list or args.scenario is None:
        for sc in SCENARIOS.values():
            print(f"{sc.name:<18} {'A/A' if sc.aa else 'regression':<10} {sc.note}")
        return 0
    trace = requests(
        SCENARIOS[args.scenario],
        windows=args.windows,
        seed=args.seed,
        window_s=args.window_s,
        rps=args.rps,
        users=args.users,
    )
    if args.out == "-":
        n = write(sys.stdout.buffer, trace)
    else:
        with open(args.out, "wb") as f:
            n = write(f, trace)
    print(f"{n} requests", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
