"""The staging report (``staging_report.json``): what a reviewer reads before promoting.

Per route and version: requests and their status codes, client-facing and upstream latency quantiles,
upstream failures by kind, request and response contract breaches (and the candidate's breaches of the
route's ``compat_schemas``), the proxy's own answers and the fallbacks; the proxy process's resources;
the candidate's manifest verdict; and a few valid and invalid request samples per route, PII masked.
Figures cover the proxy's lifetime, like its Prometheus counters.

Counts come from the :class:`ProxyMetrics` counters (the numbers ``/metrics`` shows, not a second set);
this book adds only what they cannot give: quantile sketches per (route, version) and the samples.

Hot path, per request (:meth:`StagingBook.on_exchange`, an exchange observer): one sketch add per
upstream attempt and one per answer, plus, on a route with a request contract, a counter and a
reservoir draw. Only a request that takes a sample slot is masked and rendered: the first ``samples``
of each kind, then each with probability ``samples / seen`` (Algorithm R), so the rendering cost fades
as traffic grows. Memory is fixed by the config: two sketches per (route, version) and at most
``2 x samples`` short masked samples per route. A sample whose masking fails is dropped, never
kept raw, and counted (``observer_errors``); any other failure is the observers' guard's to count.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any, Final

import orjson
from prometheus_client import Counter

from proxy.clock import utc_now
from proxy.config.model import Config
from proxy.content.contracts import InvalidJSON, parse_json
from proxy.content.pii import Masker
from proxy.observe.exchange import Exchange
from proxy.observe.metrics import ProxyMetrics
from proxy.reports.resources import process_figures
from proxy.rollout.manifest import ManifestVerdict
from proxy.rollout.store import StateStore
from proxy.stats.sketches import LogHistogram
from proxy.upstream.body import Body

log = logging.getLogger("rollguard.staging")

FORMAT: Final = 1  # bumped when a field changes meaning or goes away; new fields do not bump it
ROLES: Final = ("baseline", "candidate")
EXCERPT_CHARS: Final = 512  # masked body excerpt shown per sample
MASK_INPUT_CHARS: Final = 4096  # raw text masked for an excerpt: far beyond what is shown
JSON_MASK_MAX_BYTES: Final = 16 * 1024  # bodies up to this are masked as JSON (json_fields apply)
MESSAGE_CHARS: Final = 200
QUERY_CHARS: Final = 256
_BOUNDARIES: Final = frozenset('",&\n{}[] ')


class SampleSlots:
    """A uniform sample of at most ``limit`` items from a stream (Algorithm R), rendered lazily.

    ``slot(draw)`` counts one item and says where to keep it (None: not kept); the caller renders the
    item only then and ``put``s it. ``draw`` returns a float in [0, 1).
    """

    __slots__ = ("kept", "limit", "seen")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0
        self.kept: list[dict[str, Any]] = []

    def slot(self, draw: Callable[[], float]) -> int | None:
        self.seen += 1
        n = len(self.kept)
        if n < self.limit:
            return n
        j = int(draw() * self.seen)
        return j if j < self.limit else None

    def put(self, slot: int, item: dict[str, Any]) -> None:
        if slot >= len(self.kept):
            self.kept.append(item)
        else:
            self.kept[slot] = item


class _RouteBook:
    __slots__ = ("contracted", "invalid", "latency", "upstream", "valid")

    def __init__(self, contracted: bool, samples: int) -> None:
        self.contracted = contracted
        self.latency = {role: LogHistogram() for role in ROLES}  # client-facing, by answering version
        self.upstream = {role: LogHistogram() for role in ROLES}  # per upstream attempt, failed included
        self.valid = SampleSlots(samples)
        self.invalid = SampleSlots(samples)


class StagingBook:
    """Evidence for ``staging_report.json``, fed by the forwarder; ``report()`` renders the document."""

    def __init__(
        self,
        config: Config,
        metrics: ProxyMetrics,
        *,
        masker: Masker,
        store: StateStore,
        candidate: ManifestVerdict,
        rand: Callable[[], float] | None = None,
    ) -> None:
        """``rand`` draws the reservoir's slots (floats in [0, 1)); default: a private ``random.Random``."""
        self.config = config
        self.metrics = metrics
        self.masker = masker
        self.store = store
        self.candidate = candidate
        self.started_at = utc_now()
        self.started = time.monotonic()
        self.observer_errors = 0
        self._draw = rand if rand is not None else random.Random().random
        self._routes: dict[str, _RouteBook] = {"unmatched": _RouteBook(False, 0)}
        self.reconfigure(config, candidate)

    def reconfigure(self, config: Config, candidate: ManifestVerdict) -> None:
        """A reloaded config: books for new routes; a route whose contract or sample size changed keeps its
        latency but starts its samples afresh; removed routes are kept (their figures stay true for the
        proxy's lifetime)."""
        self.config = config
        self.candidate = candidate
        samples = config.reports.samples
        routes = dict(self._routes)
        for r in config.routes:
            book = routes.get(r.name)
            contracted = r.request_schema is not None
            if book is None or book.contracted != contracted or book.valid.limit != samples:
                fresh = _RouteBook(contracted, samples)
                if book is not None:  # latency stays; samples judged by another contract do not
                    fresh.latency, fresh.upstream = book.latency, book.upstream
                routes[r.name] = fresh
        self._routes = routes  # one assignment: the hot path never sees a half-built table

    # -- hot path -----------------------------------------------------------------------------------

    def on_exchange(self, ex: Exchange) -> None:
        """One client request, once over: each upstream attempt's latency (a failed one a fallback or retry
        replaced included), the answer's latency by the version that answered, and a masked sample of a
        body the route's contract judged (valid or not, by ``ex.breach``)."""
        book = self._routes.get(ex.route_name)
        if book is None:
            return
        for att in ex.attempts:
            book.upstream[att.pool.role].add(att.elapsed)
        answered = ex.answered
        if answered is not None:
            book.latency[answered.pool.role].add(ex.elapsed)
        body = ex.body
        # Only a body the contract actually judged is a valid or an invalid sample.
        if not book.contracted or body is None or not body.held or ex.status == 499:
            return
        slots = book.valid if ex.breach is None else book.invalid
        slot = slots.slot(self._draw)
        if slot is not None:
            sample = self._sample(ex, body)
            if sample is not None:
                slots.put(slot, sample)

    # -- samples ------------------------------------------------------------------------------------

    def _sample(self, ex: Exchange, body: Body) -> dict[str, Any] | None:
        """One masked, size-capped sample of ``ex`` (whose held ``body`` it is); None when masking fails
        (dropped, never raw)."""
        m = self.masker
        scope, status, answered, breach, rid = ex.scope, ex.status, ex.answered, ex.breach, ex.request_id
        try:
            query: bytes = scope.get("query_string") or b""
            return {
                "ts": utc_now(),
                "request_id": _cap(m.mask_text(rid[:128]), 128),
                "method": str(scope.get("method", "?")),
                "status": status,
                "role": None if answered is None else answered.pool.role,
                "version": None if answered is None else answered.pool.version,
                "query": _cap(m.mask_query(_safe_cut(query.decode("latin-1"), MASK_INPUT_CHARS)), QUERY_CHARS)
                if query
                else None,
                "violation": None
                if breach is None
                else {
                    "path": _cap(m.mask_text(breach.path[:MASK_INPUT_CHARS]), MESSAGE_CHARS),
                    "message": _cap(m.mask_text(_safe_cut(breach.message, MASK_INPUT_CHARS)), MESSAGE_CHARS),
                },
                "body_bytes": len(body.data),
                "body": self._excerpt(body.data),
            }
        except Exception:
            self.observer_errors += 1
            return None

    def _excerpt(self, data: bytes) -> str:
        """The masked body, capped: as JSON when small and valid (so ``logging.pii.json_fields`` apply),
        else as text cut at a token boundary before masking, far beyond what is shown."""
        if not data:
            return ""
        if len(data) <= JSON_MASK_MAX_BYTES:
            try:
                doc = parse_json(data)
            except InvalidJSON:
                pass
            else:
                return _cap(orjson.dumps(self.masker.mask_json(doc)).decode(), EXCERPT_CHARS)
        text = _safe_cut(data[: MASK_INPUT_CHARS * 4].decode("utf-8", "replace"), MASK_INPUT_CHARS)
        return _cap(self.masker.mask_text(text), EXCERPT_CHARS)

    # -- the document -------------------------------------------------------------------------------

    def report(self, now: str | None = None) -> dict[str, Any]:
        """``staging_report.json``. JSON-serialisable; reads the counters once."""
        now = now or utc_now()
        m = self.metrics
        requests = _index(m.requests, "code")
        errors = _index(m.upstream_errors, "kind")
        schema = _index(m.schema_violations, "direction")
        local = _by_route(m.local_responses, "code")
        fallbacks = _by_route(m.fallbacks, "reason")
        mirrored = _by_route(m.shadow_requests, "outcome")
        compat = _by_route(m.compat_violations, "schema")
        versions = {role: self.config.upstream(role).version for role in ROLES}
        routes: dict[str, Any] = {}
        for name, book in self._routes.items():
            per_version = {}
            for role, version in versions.items():
                key = (name, role, version)
                codes = requests.get(key, {})
                kinds = errors.get(key, {})
                upstream = book.upstream[role]
                failures = int(sum(kinds.values()))
                per_version[role] = {
                    "version": version,
                    "requests": int(sum(codes.values())),
                    "status": {c: int(n) for c, n in sorted(codes.items()) if n},
                    "latency_ms": _latency(book.latency[role]),
                    "upstream": {
                        "attempts": upstream.count,
                        "failures": failures,
                        "failure_rate": _rate(failures, upstream.count),
                        "errors": {k: int(n) for k, n in sorted(kinds.items()) if n},
                        "latency_ms": _latency(upstream),
                    },
                    "schema_violations": {
                        d: int(schema.get(key, {}).get(d, 0)) for d in ("request", "response")
                    },
                }
                if role == "candidate":
                    # Breaches of routes[].compat_schemas, by schema: the candidate's answers only (served and
                    # mirrored alike); the baseline's are not checked, so it has no such figure.
                    per_version[role]["compat_violations"] = {
                        s: int(n) for s, n in sorted(compat.get(name, {}).items())
                    }
            routes[name] = {
                "versions": per_version,
                "local_responses": {c: int(n) for c, n in sorted(local.get(name, {}).items()) if n},
                "fallbacks": {r: int(n) for r, n in sorted(fallbacks.get(name, {}).items()) if n},
                # Mirrors to the candidate; their comparison is shadow_eval.json.
                "shadow": {
                    **{
                        o: int(mirrored.get(name, {}).get(o, 0))
                        for o in ("sent", "failed", "dropped", "skipped")
                    },
                    "errors": {
                        k: int(n)
                        for k, n in sorted(errors.get((name, "shadow", versions["candidate"]), {}).items())
                        if n
                    },
                },
                **self._contract(name, book),
            }
        state = self.store.current
        return {
            "format": FORMAT,
            "generated_at": now,
            "since": self.started_at,
            "rollout": {"id": state.rollout_id, "phase": state.phase.value, "weight": state.weight},
            "versions": versions,
            "candidate_manifest": {
                **self.candidate.to_json(),
                "enforced": self.config.security.require_signed_candidate,
            },
            "totals": _totals(routes, self._routes),
            "process": process_figures(self.started),
            "routes": routes,
            "observer_errors": self.observer_errors,
        }

    def _contract(self, name: str, book: _RouteBook) -> dict[str, Any]:
        route = next((r for r in self.config.routes if r.name == name), None)
        if route is None:
            return {}
        return {
            "contract": {
                "request_schema": route.request_schema is not None,
                "response_schema": route.response_schema is not None,
                "mode": route.mode,
                "checked": book.valid.seen + book.invalid.seen,
                "valid": book.valid.seen,
                "invalid": book.invalid.seen,
            },
            "samples": {
                "limit": book.valid.limit,
                "valid": list(book.valid.kept),
                "invalid": list(book.invalid.kept),
            },
        }


def _index(counter: Counter, last: str) -> dict[tuple[str, str, str], dict[str, float]]:
    """A (route, role, version)-labelled counter as {(route, role, version): {<last label>: value}}."""
    out: dict[tuple[str, str, str], dict[str, float]] = {}
    for labels, value in _rows(counter):
        key = (labels["route"], labels["role"], labels["version"])
        table = out.setdefault(key, {})
        table[labels[last]] = table.get(labels[last], 0.0) + value
    return out


def _by_route(counter: Counter, last: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for labels, value in _rows(counter):
        table = out.setdefault(labels["route"], {})
        table[labels[last]] = table.get(labels[last], 0.0) + value
    return out


def _rows(counter: Counter) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value) for fam in counter.collect() for s in fam.samples if s.name.endswith("_total")
    ]


def _latency(h: LogHistogram) -> dict[str, Any]:
    def ms(q: float) -> float | None:
        v = h.quantile(q)
        return None if v is None else round(1000 * v, 3)

    peak = h.max
    return {
        "count": h.count,
        "p50": ms(0.5),
        "p95": ms(0.95),
        "p99": ms(0.99),
        "max": None if peak is None else round(1000 * peak, 3),
    }


def _rate(k: int, n: int) -> float | None:
    return round(k / n, 6) if n else None


def _totals(routes: dict[str, Any], books: dict[str, _RouteBook]) -> dict[str, Any]:
    """Per version over every route: requests, upstream attempts and failures, merged latency sketches."""
    out: dict[str, Any] = {}
    for role in ROLES:
        latency, upstream = LogHistogram(), LogHistogram()
        for book in books.values():
            latency.merge(book.latency[role])
            upstream.merge(book.upstream[role])
        figures = [r["versions"][role] for r in routes.values()]
        failures = sum(f["upstream"]["failures"] for f in figures)
        out[role] = {
            "requests": sum(f["requests"] for f in figures),
            "latency_ms": _latency(latency),
            "upstream_attempts": upstream.count,
            "upstream_failures": failures,
            "upstream_failure_rate": _rate(failures, upstream.count),
            "upstream_latency_ms": _latency(upstream),
            "schema_violations": {
                d: sum(f["schema_violations"][d] for f in figures) for d in ("request", "response")
            },
        }
        if role == "candidate":
            breaches: dict[str, int] = {}
            for f in figures:
                for schema, n in f.get("compat_violations", {}).items():
                    breaches[schema] = breaches.get(schema, 0) + n
            out[role]["compat_violations"] = dict(sorted(breaches.items()))
    return out


def _safe_cut(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a token boundary (quote, comma, ``&``, space,
    bracket), so no half of a personal value is left for the masker to miss."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    for i in range(len(head) - 1, limit // 2, -1):
        if head[i] in _BOUNDARIES:
            return head[:i]
    return ""  # no boundary in the second half: nothing is safe to show


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
