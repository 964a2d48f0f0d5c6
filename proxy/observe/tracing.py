"""OpenTelemetry setup and span helpers for the data path, the mirror and the admin app.

Off (``tracing.exporter: none``, the default) nothing here is built: the forwarder and the mirror hold
``None`` and pay one ``is None`` check per request. On, ``app.build`` makes one :class:`Tracing` with its
own ``TracerProvider`` (never the process-global one) and shuts it down, flushing, in the lifespan.

Spans of one client request::

    SERVER "POST infer"                 parent: the client's traceparent, when it sent one
      CLIENT "POST infer baseline"      one per upstream attempt (each retry, the fallback); its span id
                                        is the traceparent the upstream receives
    CLIENT "POST infer shadow"          a mirror: the root of its own trace with a link to the SERVER span,
                                        recorded only when the client's request is (same decision)

Sampling: a new trace is recorded with probability ``sample_ratio``, drawn in ``Tracing.begin`` (an
unsampled one never reaches the SDK); an incoming traceparent's decision is honoured, sampled or not
(``ParentBased``). Unsampled requests still get a trace id (for the access log) and propagate a
not-sampled traceparent; they record nothing.

Attributes are treated like log fields: configured route names and path patterns, statuses,
versions, error kinds, a request id (masked unless rollguard minted it); never the raw path, the query
string, headers or bodies. Spans are exported by the SDK's BatchSpanProcessor thread through a bounded
queue: a slow or unreachable collector loses spans (the SDK logs it), never a request's time or answer.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from random import getrandbits, random
from typing import Any

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    set_span_in_context,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import Attributes

from proxy._version import __version__
from proxy.config.model import TracingConfig
from proxy.observe.exchange import Exchange
from proxy.upstream.attempt import Attempt
from proxy.upstream.pool import UpstreamPool

RawHeaders = Sequence[tuple[bytes, bytes]]
Headers = list[tuple[str, str]]

_TRACE_HEADERS = frozenset({"traceparent", "tracestate"})
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})
_OWN_ID = re.compile(r"[0-9a-f]{32}")
_MIRROR_LINK = "rollguard.mirror_of"  # marks the link a mirror's sampling decision follows
_ROOT_SAMPLED = "rollguard.root_sampled"  # marks a root span whose decision Tracing.begin already drew
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_ADMIN_QUIET = "/metrics$,/healthz$,/readyz$"  # scrapes and probes: spans nobody reads
_CLIENT_ADDRESS_KEYS = ("client.address", "net.peer.ip", "http.client_ip", "net.sock.peer.addr")
_PROPAGATOR = TraceContextTextMapPropagator()


class _AsgiHeaders(Getter[RawHeaders]):
    """Reads ASGI's raw header pairs (names already lower-case) for the propagator."""

    def get(self, carrier: RawHeaders, key: str) -> list[str] | None:
        name = key.encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier if k == name]
        return values or None

    def keys(self, carrier: RawHeaders) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier]


_GETTER = _AsgiHeaders()


class MirrorFollowingSampler(Sampler):
    """Ratio sampling for new traces, except a mirror's: a root span carrying the mirror link takes the
    decision of the span it links to, so a shadow request is recorded exactly when its client's was."""

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if attributes and _ROOT_SAMPLED in attributes:
            # Tracing.begin already drew this root's decision (its fast path): honour it, drop the mark.
            kept = {k: v for k, v in attributes.items() if k != _ROOT_SAMPLED}
            return SamplingResult(Decision.RECORD_AND_SAMPLE, kept)
        for link in links or ():
            if link.attributes and _MIRROR_LINK in link.attributes:
                sampled = link.context.trace_flags.sampled
                return SamplingResult(Decision.RECORD_AND_SAMPLE if sampled else Decision.DROP, attributes)
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"MirrorFollowing{{{self._ratio.get_description()}}}"

    def set_ratio(self, ratio: float) -> None:
        """A reloaded ``tracing.sample_ratio``: one assignment, so a span never sees half a change."""
        self._ratio = TraceIdRatioBased(ratio)


def with_traceparent(headers: Headers, span: Span) -> Headers:
    """``headers`` with the client's traceparent/tracestate replaced by ``span``'s."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=set_span_in_context(span))
    out = [(k, v) for k, v in headers if k not in _TRACE_HEADERS]
    out.extend(carrier.items())
    return out


def _span_method(method: str) -> str:
    return method if method in _METHODS else "_OTHER"  # bounded span names: no client-invented methods


def _attempt_outcome(span: Span, att: Attempt | None, error: str | None) -> None:
    if att is not None and att.resp is not None:
        span.set_attribute("http.response.status_code", att.upstream_status)
    kind = att.failure_kind if att is not None else error
    if kind is not None:
        span.set_attribute("error.type", kind)
        span.set_status(Status(StatusCode.ERROR, kind))


class Tracing:
    """The provider, its tracer and exporter; ``begin`` a request, ``mirror`` a shadow, ``close`` at exit."""

    def __init__(self, cfg: TracingConfig, *, mask: Callable[[str], str] | None = None) -> None:
        self.cfg = cfg
        self.mask = mask  # the PII masker's mask_text, for values a client chose (request ids, addresses)
        self._sampler = MirrorFollowingSampler(cfg.sample_ratio)
        self.provider = TracerProvider(
            sampler=ParentBased(root=self._sampler),
            resource=Resource.create({SERVICE_NAME: cfg.service_name, SERVICE_VERSION: __version__}),
            shutdown_on_exit=False,  # the lifespan shuts it down; no process-global atexit hook
        )
        exporter = OTLPSpanExporter(endpoint=cfg.endpoint, headers=dict(cfg.headers), timeout=cfg.timeout)
        self.provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=cfg.queue_size,
                max_export_batch_size=min(512, cfg.queue_size),
                export_timeout_millis=cfg.timeout * 1000,
            )
        )
        self.tracer = self.provider.get_tracer("rollguard", __version__)

    def __repr__(self) -> str:
        return f"<Tracing {self.cfg.exporter} {self.cfg.endpoint} sample_ratio={self.cfg.sample_ratio}>"

    def set_sample_ratio(self, ratio: float) -> None:
        """Apply a reloaded ``tracing.sample_ratio`` to new traces (the exporter stays as started)."""
        self._sampler.set_ratio(ratio)
        self.cfg = replace(self.cfg, sample_ratio=ratio)

    def on_exchange(self, ex: Exchange) -> None:
        """The request is over: end its spans."""
        if ex.trace is not None:
            ex.trace.end(ex)

    async def close(self) -> None:
        """Flush what is queued (bounded by ``tracing.timeout``) off the event loop, then stop."""
        await asyncio.to_thread(self.provider.shutdown)

    def begin(self, ex: Exchange) -> None:
        """Open the SERVER span of one client request as ``ex.trace``, continuing the client's trace when
        it sent one; ``ex.trace_id`` is set whether or not the request is sampled."""
        ex.trace = self._begin(ex)

    def _begin(self, ex: Exchange) -> RequestTrace:
        headers: RawHeaders = ex.scope["headers"]
        method = ex.method
        route = ex.route.route if ex.route is not None else None
        rid = ex.request_id
        name = f"{_span_method(method)} {ex.route_name}"
        if not any(k == b"traceparent" for k, _ in headers):
            # A new trace (the common case): draw the decision here. Unsampled, the request gets an id
            # and a non-recording span without the SDK's sampler, id generator and context machinery:
            # that path is what every request pays at a small ratio (benchmarks/bench_tracing.py).
            if random() >= self.cfg.sample_ratio:
                ctx = SpanContext(getrandbits(128) or 1, getrandbits(64) or 1, False, _NOT_SAMPLED)
                ex.trace_id = format(ctx.trace_id, "032x")
                return RequestTrace(self, NonRecordingSpan(ctx), name, _span_method(method))
            span = self.tracer.start_span(
                name, context=Context(), kind=SpanKind.SERVER, attributes={_ROOT_SAMPLED: True}
            )
        else:
            parent = _PROPAGATOR.extract(headers, getter=_GETTER)
            span = self.tracer.start_span(name, context=parent, kind=SpanKind.SERVER)
        ex.trace_id = format(span.get_span_context().trace_id, "032x")
        if span.is_recording():
            attrs: dict[str, str] = {
                "http.request.method": _span_method(method),
                "rollguard.route": ex.route_name,
            }
            if route is not None:
                attrs["http.route"] = route.path  # the configured pattern, not the request's path
            if _OWN_ID.fullmatch(rid):
                attrs["rollguard.request_id"] = rid
            elif self.mask is not None:
                attrs["rollguard.request_id"] = self.mask(rid)  # the client's own id may carry anything
            span.set_attributes(attrs)
        return RequestTrace(self, span, name, _span_method(method))

    def mirror(self, link: SpanContext, method: str, route: str, version: str) -> MirrorTrace:
        """The span of one shadow request: a new trace, linked to the client's SERVER span."""
        span = self.tracer.start_span(
            f"{_span_method(method)} {route} shadow",
            context=Context(),  # a root, whatever the task's context holds
            kind=SpanKind.CLIENT,
            links=[Link(link, {_MIRROR_LINK: True})],
            attributes={"rollguard.route": route, "rollguard.role": "shadow", "rollguard.version": version},
        )
        return MirrorTrace(span)

    def instrument_admin(self, app: Any) -> Any:
        """The admin app wrapped by OpenTelemetry's ASGI middleware, on this provider; scrapes and
        probes are not traced, and the caller's address is masked like in the logs."""
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        return OpenTelemetryMiddleware(
            app,
            excluded_urls=_ADMIN_QUIET,
            tracer_provider=self.provider,
            meter_provider=NoOpMeterProvider(),
            exclude_spans=["receive", "send"],
            server_request_hook=self._mask_client if self.mask is not None else None,
        )

    def _mask_client(self, span: Span, scope: Mapping[str, Any]) -> None:
        attrs = getattr(span, "attributes", None) or {}
        assert self.mask is not None
        for key in _CLIENT_ADDRESS_KEYS:
            value = attrs.get(key)
            if isinstance(value, str):
                span.set_attribute(key, self.mask(value))


class _Upstream:
    """One attempt's CLIENT span, ended with the request at the attempt's own end."""

    __slots__ = ("span", "start")

    def __init__(self, span: Span, start: int) -> None:
        self.span = span
        self.start = start

    def end(self, att: Attempt | None, error: str | None) -> None:
        """``att`` the attempt it covered; None when the attempt raised instead (``error``)."""
        if self.span.is_recording():
            _attempt_outcome(self.span, att, error)
        # att.elapsed is final only once the answer has been relayed: hence ending here, at the
        # attempt's true end rather than now.
        self.span.end(end_time=self.start + int(att.elapsed * 1e9) if att is not None else None)


class RequestTrace:
    """The spans of one client request: ``stamp`` opens one per upstream attempt, ``end`` closes all."""

    __slots__ = ("tracing", "span", "name", "method", "context", "upstreams", "retries")

    def __init__(self, tracing: Tracing, span: Span, name: str, method: str) -> None:
        self.tracing = tracing
        self.span = span
        self.name = name
        self.method = method
        # Only recorded requests start CLIENT spans under it (see open_attempt).
        self.context = set_span_in_context(span) if span.is_recording() else None
        self.upstreams: list[_Upstream] = []
        self.retries = 0

    @property
    def span_context(self) -> SpanContext:
        return self.span.get_span_context()

    def stamp(self, resend: int, pool: UpstreamPool, headers: Headers) -> Headers:
        """Start an attempt's CLIENT span (ended by :meth:`end`); the headers to send, with its id.

        An unrecorded request's attempts would be unrecorded spans as well (the sampler follows the
        parent): then no span is made, only the not-sampled traceparent with a fresh span id, as the SDK
        would send, for a fraction of the cost (measured in benchmarks/bench_tracing.py).
        """
        if resend:
            self.retries += 1
        ctx = self.span.get_span_context()
        if not self.span.is_recording():
            parent = f"00-{ctx.trace_id:032x}-{getrandbits(64) or 1:016x}-{int(ctx.trace_flags):02x}"
            out = [(k, v) for k, v in headers if k not in _TRACE_HEADERS]
            out.append(("traceparent", parent))
            if ctx.trace_state:
                out.append(("tracestate", ctx.trace_state.to_header()))
            return out
        start = time.time_ns()
        attrs: dict[str, str | int] = {
            "rollguard.role": pool.role,
            "rollguard.version": pool.version,
            "http.request.method": self.method,
        }
        if resend:
            attrs["http.request.resend_count"] = resend
        span = self.tracing.tracer.start_span(
            f"{self.name} {pool.role}",
            context=self.context,
            kind=SpanKind.CLIENT,
            attributes=attrs,
            start_time=start,
        )
        self.upstreams.append(_Upstream(span, start))
        return with_traceparent(headers, span)

    def end(self, ex: Exchange) -> None:
        """End the attempts' spans, then the SERVER span with what the exchange says happened."""
        # One span per attempt, opened in the order the attempts were sent; a span without an attempt
        # is the one whose attempt raised (the client left, or the request was cancelled).
        attempts = ex.attempts
        gone = "ClientGone" if ex.status == 499 else "CancelledError"
        for i, up in enumerate(self.upstreams):
            up.end(attempts[i] if i < len(attempts) else None, gone)
        span = self.span
        if span.is_recording():
            status = ex.status
            answered = ex.answered
            attrs: dict[str, str | int | bool] = {
                "http.response.status_code": status,
                "rollguard.retries": self.retries,
                "rollguard.fallback": ex.fallback is not None,
            }
            if answered is not None:
                attrs["rollguard.role"] = answered.role
                attrs["rollguard.version"] = answered.pool.version
            if ex.fallback is not None:
                attrs["rollguard.fallback_reason"] = ex.fallback
            if ex.shadow is not None:
                attrs["rollguard.shadow"] = ex.shadow
            span.set_attributes(attrs)
            if status >= 500:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR))
        span.end()


class MirrorTrace:
    """The span of one shadow request; its traceparent goes to the candidate (and the noise baseline)."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def headers(self, headers: Headers) -> Headers:
        return with_traceparent(headers, self.span)

    def end(self, att: Attempt | None) -> None:
        if self.span.is_recording():
            _attempt_outcome(self.span, att, None if att is not None else "cancelled")
        self.span.end()
