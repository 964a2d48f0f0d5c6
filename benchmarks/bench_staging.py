"""Staging-report micro-benchmark: what ``staging_report.json``'s evidence costs per request.

    .venv/bin/python benchmarks/bench_staging.py [--out FILE]

The forwarder calls :meth:`StagingBook.attempt` once per upstream attempt and :meth:`StagingBook.request`
once per answered request. Rows: each hook in steady state (a route with a request contract whose sample
reservoirs are long full, so almost no request is rendered; a route without a contract), the rare request
that takes a sample slot (masking and rendering it), and a whole report (read on demand, not per request).
Timed with ``timeit`` (loop count from ``autorange``, ~0.1 s a run), best of 5, microseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The repo root goes on sys.path first.
from micro import best_us, finish  # noqa: E402 - benchmarks/micro.py, beside this script

from proxy.config.load import build_config
from proxy.content.contracts import Violation
from proxy.content.pii import Masker, MaskerConfig
from proxy.observe.exchange import Exchange
from proxy.observe.metrics import ProxyMetrics
from proxy.reports.staging import StagingBook
from proxy.rollout.manifest import ManifestVerdict
from proxy.rollout.state import initial
from proxy.rollout.store import FileStateStore
from proxy.upstream.attempt import Attempt
from proxy.upstream.body import Body
from proxy.upstream.pool import UpstreamPool

BODY = orjson.dumps(
    {
        "features": {"amount": 42.5, "tenure_months": 12, "txn_24h": 1, "region": "br-se"},
        "user_id": "maria.silva@exemplo.com.br",
    }
)
SCOPE = {"method": "POST", "query_string": b"lang=pt-BR&cpf=123.456.789-09"}


def build(tmp: Path, rand: Callable[[], float] | None = None) -> tuple[StagingBook, Attempt]:
    schema = REPO / "config" / "schemas" / "infer_request.json"
    doc = {
        "listen": "127.0.0.1:0",
        "state": {"url": f"file:{tmp / 'state.json'}"},
        "upstreams": {
            "baseline": {"url": "http://127.0.0.1:9001", "version": "v1"},
            "candidate": {"url": "http://127.0.0.1:9002", "version": "v2"},
        },
        "routes": [
            {"name": "infer", "path": "/v1/infer", "methods": ["POST"], "request_schema": str(schema)},
            {"name": "plain", "path": "/v1/plain", "methods": ["POST"]},
        ],
    }
    config = build_config(doc, tmp, None)
    store = FileStateStore(config.state.path)
    asyncio.run(store.load(lambda: initial("v2", 0, "2026-01-01T00:00:00.000Z")))
    metrics = ProxyMetrics(CollectorRegistry())
    masker = Masker(MaskerConfig(key=b"bench-key-0123456789abcdef"))
    book = StagingBook(
        config, metrics, masker=masker, store=store, candidate=ManifestVerdict(ok=True, reason="-"), rand=rand
    )
    answered = Attempt(pool=UpstreamPool(config.baseline), started=0.0, status=200, elapsed=0.004)
    return book, answered


def exchange(
    route: str, status: int, answered: Attempt | None, body: Body, breach: Violation | None
) -> Exchange:
    """A finished request as the data plane hands it to the observers: one attempt, answered or not."""
    ex = Exchange(request_id="r", method="POST", path="/v1/infer", route_name=route, route=None, scope=SCOPE)
    ex.body, ex.breach, ex.status, ex.elapsed = body, breach, status, 0.005
    if answered is not None:
        ex.attempts.append(answered)
        ex.answered = answered
    return ex


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        book, answered = build(Path(folder))
        body = Body(data=BODY)
        breach = Violation("/features/region", "'mars' is not one of 'br-se', 'br-ne' or 3 other candidates")
        plain = exchange("plain", 200, answered, body, None)
        valid = exchange("infer", 200, answered, body, None)
        # Steady state: 100,000 requests seen, so a new one takes a sample slot with p = 5 / 1e5.
        for _ in range(100_000):
            book.on_exchange(valid)
        warm = book.report()["routes"]["infer"]["samples"]["valid"]
        assert warm and "maria" not in json.dumps(warm)  # samples were rendered, and masked
        # A draw of 0 puts every request in slot 0: each one is masked and rendered, the rare path.
        always, _ = build(Path(folder) / "always", rand=lambda: 0.0)
        invalid = exchange("infer", 400, None, body, breach)
        rows: list[tuple[str, Callable[[], object]]] = [
            ("exchange, no contract", lambda: book.on_exchange(plain)),
            ("exchange, contract, steady state", lambda: book.on_exchange(valid)),
            ("exchange taking a sample (invalid)", lambda: always.on_exchange(invalid)),
            ("report() (on demand)", book.report),
        ]
        results: list[dict[str, Any]] = []
        print(f"{'what':<36} {'µs/call':>9} {'loops':>9}")
        print("-" * 56)
        for name, fn in rows:
            us, number = best_us(fn)
            results.append({"what": name, "us_per_call": round(us, 3), "loops": number})
            print(f"{name:<36} {us:>9.2f} {number:>9}")
        finish(args.out, REPO, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
