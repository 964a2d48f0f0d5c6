"""PII masker micro-benchmark: what masking costs per log line, query string, header set and JSON body.

    .venv/bin/python benchmarks/bench_pii.py [--out FILE]

Each row is timed with ``timeit`` (loop count from ``autorange``, ~0.1 s a run), best of 5, and
reported in microseconds per call. Inputs are fixed and realistic: an access-log-like line of ~300
characters with and without personal data, a ~100-character query string, a typical request's headers
and a small JSON body. Runs in a few seconds; nothing is asserted about speed here.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from micro import best_us, finish  # noqa: E402 - benchmarks/micro.py, beside this script

from proxy.content.pii import Masker, MaskerConfig

LINE = (
    "2026-11-26T10:52:09.343Z INFO rollguard.access request_id=a25ded7a6e30326d4d854e408656cc41 "
    "route=infer method=POST path=/v1/infer status=200 role=candidate version=v1.2.3 latency_ms=12.5 "
    'upstream_ms=10.9 shadow=ok fallback=false client=checkout-svc order=1234567 price="R$ 1.234,56" '
    "ua=curl/8.5.0"
)
LINE_PII = LINE.replace("client=checkout-svc", "client=203.0.113.7").replace(
    "order=1234567", "user=maria.silva@exemplo.com.br"
)
QUERY = (
    "model=fraud-v2&threshold=0.85&page=2&per_page=50&sort=-created_at&fields=id,score,label&lang=pt-BR&v=2"
)
QUERY_PII = (
    "model=fraud-v2&email=maria.silva%40exemplo.com.br&cpf=123.456.789-09&page=2&lang=pt-BR&sort=-created"
)
HEADERS = [
    ("host", "api.example.com"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0.0.0 Safari/537.36"),
    ("accept", "application/json"),
    ("content-type", "application/json"),
    ("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"),
    ("x-request-id", "a25ded7a6e30326d4d854e408656cc41"),
    ("x-forwarded-for", "203.0.113.7, 10.0.0.12"),
    ("x-user-id", "u-20394"),
]
BODY = {
    "model": "fraud-v2",
    "inputs": {"amount": 1234.56, "currency": "BRL", "merchant": "loja-42", "installments": 3},
    "customer": {"id": "c-991", "email": "maria.silva@exemplo.com.br", "document": "123.456.789-09"},
    "items": [{"sku": "A-99812", "qty": 1, "price": 99.9}, {"sku": "B-12003", "qty": 2, "price": 567.33}],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()

    masker = Masker(MaskerConfig(key=b"bench-key-0123456789abcdef", json_fields=("/customer/id",)))
    # The numbers mean nothing if the masked inputs were not masked: check before timing.
    assert masker.mask_text(LINE) == LINE
    assert "maria" not in masker.mask_text(LINE_PII) and "203.0.113.7" not in masker.mask_text(LINE_PII)
    assert masker.mask_query(QUERY) == QUERY and "789-09" not in masker.mask_query(QUERY_PII)

    rows: list[tuple[str, int, Callable[[], object]]] = [
        ("mask_text, no PII", len(LINE), lambda: masker.mask_text(LINE)),
        ("mask_text, 2 PII (ip, email)", len(LINE_PII), lambda: masker.mask_text(LINE_PII)),
        ("mask_query, no PII", len(QUERY), lambda: masker.mask_query(QUERY)),
        ("mask_query, 2 PII (email, cpf)", len(QUERY_PII), lambda: masker.mask_query(QUERY_PII)),
        (
            "mask_headers, 8 headers",
            sum(len(k) + len(v) for k, v in HEADERS),
            lambda: masker.mask_headers(HEADERS),
        ),
        ("mask_json, small body", len(json.dumps(BODY)), lambda: masker.mask_json(BODY)),
        ("pseudonym (HMAC-SHA256)", 14, lambda: masker.pseudonym("cpf", "123.456.789-09")),
    ]
    results: list[dict[str, Any]] = []
    print(f"{'what':<34} {'chars':>6} {'µs/call':>9} {'loops':>8}")
    print("-" * 60)
    for name, chars, fn in rows:
        us, number = best_us(fn)
        results.append({"what": name, "chars": chars, "us_per_call": round(us, 3), "loops": number})
        print(f"{name:<34} {chars:>6} {us:>9.2f} {number:>8}")
    finish(args.out, REPO, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
