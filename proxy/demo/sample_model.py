"""A small deterministic transaction-risk model served over HTTP, for `rollguard demo`, tests and benchmarks.

Contract of the served API (schemas in ``proxy/schemas/infer_*.json``):

- ``POST /v1/infer``: a request valid against ``infer_request.json`` gets 200 and a body valid against
  ``infer_response.json``; ``score = sigmoid(w . f + b + drift)`` is a pure function of the features and
  ``drift`` (see :func:`score_features`), ``decision = score >= 0.5``. Invalid JSON or schema: 400 JSON.
  Other methods: 405.
- ``GET /healthz``: 200.
- ``/echo`` (any method): 200 JSON with the method, the decoded path, the raw request target (``raw_path``),
  the raw query string, every request header in arrival order and case, and the body's length and sha256.
- ``GET /bytes?n=N&chunk=C``: exactly N bytes of :func:`pattern_bytes`, chunked transfer, C bytes per write
  (``&framing=length`` sends a Content-Length instead).
- ``GET /sse?n=N&interval_ms=M``: N server-sent events, M ms apart.
- ``GET|PUT /_control/behavior``: read or change the :class:`ModelBehavior` (PUT takes the fields to change).
- Anything else: 200 JSON echo ``{"path", "method", "version"}``.
- Every response, errors included, carries ``x-model-version``.

The behaviour knobs (latency, injected 500s, schema breaks) act on ``/v1/infer`` only, so the test endpoints
stay fast and exact. This is a test and demo server: it has no authentication and must not be exposed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import importlib.resources
import math
import random
import signal
import ssl
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from jsonschema import Draft202012Validator  # type: ignore[import-untyped,unused-ignore]
from jsonschema.exceptions import best_match  # type: ignore[import-untyped,unused-ignore]

REGIONS: tuple[str, ...] = ("br-se", "br-ne", "br-s", "us-east", "eu-west")
# Traffic share of each region in generated requests: a Brazil-heavy book with some foreign accounts.
_REGION_MIX: tuple[float, ...] = (0.40, 0.15, 0.15, 0.18, 0.12)
_REGION_WEIGHT = {"br-se": 0.0, "br-ne": 0.35, "br-s": -0.15, "us-east": -0.25, "eu-west": 0.20}
# Centred so the bias alone sets the base rate: about 23% positive decisions on features_generator traffic.
_BIAS = -1.0
_W_LOG_AMOUNT, _AMOUNT_REF = 0.8, math.log1p(60.0)
_W_TXN_24H, _TXN_REF = 0.18, 2.0
_W_TENURE, _TENURE_REF = -0.03, 30.0

_MAX_BYTES = 1 << 30
_MAX_CHUNK = 4 << 20
_MAX_EVENTS = 100_000
_SHUTDOWN_TIMEOUT_S = 1.0
_BOUNDS = (
    ("drift", -50.0, 50.0),
    ("latency_ms", 0.0, 3_600_000.0),
    ("latency_jitter_ms", 0.0, 3_600_000.0),
    ("error_rate", 0.0, 1.0),
    ("schema_break_rate", 0.0, 1.0),
)


_REQUEST_VALIDATOR = Draft202012Validator(
    orjson.loads((importlib.resources.files("proxy") / "schemas" / "infer_request.json").read_bytes())
)


@dataclasses.dataclass(frozen=True, slots=True)
class ModelBehavior:
    """How a :class:`SampleModel` behaves; every field can be changed at run time.

    - ``version``: reported as ``model_version`` and in ``x-model-version``.
    - ``drift``: added to the logit, so ``drift > 0`` raises every score and the positive-decision rate
      (about +8 pp at 0.3 on generated traffic), ``drift < 0`` lowers them.
    - ``latency_ms`` / ``latency_jitter_ms``: each infer waits ``latency_ms + U(-jitter, +jitter)`` ms,
      floored at 0 (the mean stays ``latency_ms`` while ``jitter <= latency_ms``).
    - ``error_rate``: share of infers answered 500 JSON (after validation: invalid input is always 400).
    - ``schema_break_rate``: share of successful infers whose body breaks ``infer_response.json`` (half a
      score of 1.7, half no ``score`` at all).
    - ``seed``: seeds the model's own ``random.Random`` for the latency, error and break draws.
    - ``region_drift``: extra drift for the requests of some regions only (``{"br-ne": 0.8}``), a candidate
      that moves one group's decision rate and leaves the others alone.
    """

    version: str
    drift: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    schema_break_rate: float = 0.0
    seed: int | None = None
    region_drift: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.version, str) or not self.version:
            raise ValueError("version must be a non-empty string")
        for name, low, high in _BOUNDS:
            value = getattr(self, name)
            # The chained comparison is False for NaN, so non-finite values are rejected too.
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                raise ValueError(f"{name} must be a number in [{low}, {high}], got {value!r}")
        if not isinstance(self.region_drift, dict):
            raise ValueError("region_drift must be an object of region -> drift")
        for region, value in self.region_drift.items():
            if region not in REGIONS:
                raise ValueError(f"region_drift: unknown region {region!r} (one of {', '.join(REGIONS)})")
            if isinstance(value, bool) or not isinstance(value, int | float) or not -50.0 <= value <= 50.0:
                raise ValueError(f"region_drift.{region} must be a number in [-50.0, 50.0], got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError("seed must be an integer or null")


def score_features(features: dict[str, Any], drift: float = 0.0) -> float:
    """The model: ``sigmoid(w . f + b + drift)`` over schema-valid features; pure and deterministic."""
    logit = (
        _BIAS
        + drift
        + _W_LOG_AMOUNT * (math.log1p(float(features["amount"])) - _AMOUNT_REF)
        + _W_TXN_24H * (float(features["txn_24h"]) - _TXN_REF)
        + _W_TENURE * (float(features["tenure_months"]) - _TENURE_REF)
        + _REGION_WEIGHT[features["region"]]
    )
    # The two branches keep exp() from overflowing for extreme logits.
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    z = math.exp(logit)
    return z / (1.0 + z)


def features_generator(rng: random.Random) -> dict[str, Any]:
    """A random request body valid against ``infer_request.json``, drawn only from ``rng``.

    Amounts are log-normal (median 60), tenure and 24h transaction counts exponential (means 30 and 2.5),
    regions follow a Brazil-heavy mix, and ``user_id`` is ``u-<n>`` from a pool of 100,000 users.
    """
    return {
        "features": {
            "amount": round(rng.lognormvariate(math.log(60.0), 1.1), 2),
            "tenure_months": min(int(rng.expovariate(1 / 30)), 1200),
            "txn_24h": min(int(rng.expovariate(1 / 2.5)), 100_000),
            "region": rng.choices(REGIONS, weights=_REGION_MIX)[0],
        },
        "user_id": f"u-{rng.randrange(1, 100_001)}",
    }


def pattern_bytes(n: int, offset: int = 0) -> bytes:
    """``n`` bytes of the ``/bytes`` pattern starting at stream position ``offset``: byte i is ``i % 256``."""
    start = offset % 256
    return (bytes(range(256)) * ((start + n) // 256 + 1))[start : start + n]


def _json(status: int, doc: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), content_type="application/json")


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    try:
        value = default if raw is None else int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise web.HTTPBadRequest(
            text=orjson.dumps({"error": f"{name} must be an integer in [{low}, {high}]"}).decode(),
            content_type="application/json",
        )
    return value


@web.middleware
async def _client_gone(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ConnectionError:
        # The client left mid-exchange, as proxy tests make it do on purpose. That is no server error: answer
        # into the void, which aiohttp then drops as a premature disconnection instead of logging a traceback.
        return web.Response(status=499, reason="Client Closed Request")


class SampleModel:
    """One model server's state: the current :class:`ModelBehavior` and the random stream it draws from."""

    def __init__(self, behavior: ModelBehavior) -> None:
        self._behavior = behavior
        self._rng = random.Random(behavior.seed)

    @property
    def behavior(self) -> ModelBehavior:
        return self._behavior

    def set_behavior(self, behavior: ModelBehavior) -> None:
        """Switch behaviour for every later request; a new, different seed restarts the random stream."""
        if behavior.seed is not None and behavior.seed != self._behavior.seed:
            self._rng = random.Random(behavior.seed)
        self._behavior = behavior

    def make_app(self) -> web.Application:
        """The aiohttp application serving this model (see the module docstring for the routes)."""
        app = web.Application(client_max_size=1 << 20, middlewares=[_client_gone])
        app.on_response_prepare.append(self._stamp_version)
        app.router.add_route("*", "/v1/infer", self._infer)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_route("*", "/echo", self._echo)
        app.router.add_get("/bytes", self._bytes)
        app.router.add_get("/sse", self._sse)
        app.router.add_route("*", "/_control/behavior", self._control)
        app.router.add_route("*", "/{tail:.*}", self._fallback)
        return app

    async def _stamp_version(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-model-version"] = self._behavior.version

    async def _infer(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        b = self._behavior
        delay_ms = b.latency_ms
        if b.latency_jitter_ms:
            delay_ms += self._rng.uniform(-b.latency_jitter_ms, b.latency_jitter_ms)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        try:
            doc = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _json(400, {"error": "invalid JSON", "detail": str(exc)})
        error = best_match(_REQUEST_VALIDATOR.iter_errors(doc))
        if error is not None:
            where = "".join(f"/{p}" for p in error.absolute_path) or "body"
            detail = f"{where}: {error.message}"
            return _json(400, {"error": "request does not match the schema", "detail": detail})
        # Draws happen in a fixed order per valid request, so a seeded run is reproducible when sequential.
        if self._rng.random() < b.error_rate:
            return _json(500, {"error": "injected failure", "model_version": b.version})
        drift = b.drift + b.region_drift.get(doc["features"]["region"], 0.0)
        score = round(score_features(doc["features"], drift), 6)
        body: dict[str, Any] = {
            "score": score,
            "decision": score >= 0.5,
            "model_version": b.version,
            "prediction_id": uuid.uuid4().hex,
            "served_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        if self._rng.random() < b.schema_break_rate:
            if self._rng.random() < 0.5:
                body["score"] = 1.7
            else:
                del body["score"]
        return _json(200, body)

    async def _healthz(self, request: web.Request) -> web.Response:
        return _json(200, {"status": "ok", "version": self._behavior.version})

    async def _echo(self, request: web.Request) -> web.Response:
        digest, length = hashlib.sha256(), 0
        # Streamed, so bodies far above client_max_size can be checked for integrity.
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            length += len(chunk)
        return _json(
            200,
            {
                "method": request.method,
                "path": request.path,
                "raw_path": request.raw_path,
                "query_string": request.rel_url.raw_query_string,
                "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
                "body_length": length,
                "body_sha256": digest.hexdigest(),
                "version": self._behavior.version,
            },
        )

    async def _bytes(self, request: web.Request) -> web.StreamResponse:
        n = _int_param(request, "n", 1024, 0, _MAX_BYTES)
        chunk = _int_param(request, "chunk", 65536, 1, _MAX_CHUNK)
        response = web.StreamResponse(headers={"content-type": "application/octet-stream"})
        if request.query.get("framing") == "length":
            response.content_length = n
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        # One pattern block of chunk + 256 bytes holds every chunk-sized window of the pattern.
        block = memoryview(pattern_bytes(chunk + 256))
        sent = 0
        while sent < n:
            size = min(chunk, n - sent)
            await response.write(block[sent % 256 : sent % 256 + size])
            sent += size
        await response.write_eof()
        return response

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        n = _int_param(request, "n", 5, 0, _MAX_EVENTS)
        interval_ms = _int_param(request, "interval_ms", 10, 0, 60_000)
        response = web.StreamResponse(
            headers={"content-type": "text/event-stream", "cache-control": "no-cache"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(n):
            if i and interval_ms:
                await asyncio.sleep(interval_ms / 1000)
            data = orjson.dumps({"i": i, "version": self._behavior.version}).decode()
            await response.write(f"id: {i}\nevent: tick\ndata: {data}\n\n".encode())
        await response.write_eof()
        return response

    async def _control(self, request: web.Request) -> web.Response:
        if request.method == "PUT":
            try:
                changes = orjson.loads(await request.read())
                if not isinstance(changes, dict):
                    raise TypeError("body must be a JSON object")
                unknown = set(changes) - {f.name for f in dataclasses.fields(ModelBehavior)}
                if unknown:
                    raise TypeError(f"unknown fields: {sorted(unknown)}")
                self.set_behavior(dataclasses.replace(self._behavior, **changes))
            except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                return _json(400, {"error": str(exc)})
        elif request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT"])
        return _json(200, dataclasses.asdict(self._behavior))

    async def _fallback(self, request: web.Request) -> web.Response:
        return _json(200, {"path": request.path, "method": request.method, "version": self._behavior.version})


@dataclasses.dataclass(slots=True)
class RunningModel:
    """A :class:`SampleModel` listening on a loopback socket; close it (or use ``async with``) when done."""

    url: str
    port: int
    model: SampleModel
    runner: web.AppRunner

    async def close(self) -> None:
        """Stop listening; requests still in flight get up to one second to finish."""
        await self.runner.cleanup()

    async def __aenter__(self) -> RunningModel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_sample_model(
    behavior: ModelBehavior,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> RunningModel:
    """Serve a new :class:`SampleModel` on ``host:port`` (0 picks a free port), access log off;
    over HTTPS with ``ssl_context``."""
    model = SampleModel(behavior)
    runner = web.AppRunner(model.make_app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, ssl_context=ssl_context).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    url_host = f"[{host}]" if ":" in host else host
    scheme = "https" if ssl_context is not None else "http"
    return RunningModel(
        url=f"{scheme}://{url_host}:{bound_port}", port=bound_port, model=model, runner=runner
    )


async def _serve(behavior: ModelBehavior, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = await start_sample_model(behavior, host, port)
    print(f"sample model {behavior.version} listening on {running.url}", file=sys.stderr, flush=True)
    try:
        await stop.wait()
    finally:
        await running.close()


def _region_drift(text: str) -> tuple[str, float]:
    region, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return region.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected REGION=DRIFT, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m proxy.demo.sample_model --port 9001 --version v1 [...]``: serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m proxy.demo.sample_model",
        description="Serve the sample model until SIGINT or SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--version", default="v1")
    for field in dataclasses.fields(ModelBehavior)[1:]:
        if field.name == "region_drift":
            parser.add_argument(
                "--region-drift",
                type=_region_drift,
                action="append",
                default=[],
                metavar="REGION=DRIFT",
                help="extra drift for one region's requests (repeatable), e.g. br-ne=0.8",
            )
            continue
        kind = int if field.name == "seed" else float
        parser.add_argument("--" + field.name.replace("_", "-"), type=kind, default=field.default)
    args = vars(parser.parse_args(argv))
    args["region_drift"] = dict(args["region_drift"])
    host, port = args.pop("host"), args.pop("port")
    try:
        behavior = ModelBehavior(**args)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(_serve(behavior, host, port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
