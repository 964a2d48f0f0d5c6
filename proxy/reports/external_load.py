"""An external load run's client-side figures, read from the files k6 and Locust write, for the report.

Pure: bytes or text in, an :class:`ExternalRun` out, and its section of ``staging_report.json`` in the
shape of the ``load`` section that ``rollguard loadtest`` writes (requests, errors, error rate, rate,
latency quantiles in milliseconds), so one reader serves both. Judged by the same SLOs
(:mod:`proxy.reports.load_spec`), on the tool's total over every request.

- **k6**: the end-of-test summary, either ``k6 run --summary-export FILE`` (a metric's figures at its
  top level, a threshold as ``expression: true`` when it was *crossed*, k6's long-standing inversion) or
  the ``handleSummary()`` data (figures under ``values``, a threshold as ``{"ok": bool}``). Requests are
  ``http_reqs``'s count, errors ``http_req_failed``'s passes (a request counts in ``passes`` when it
  failed), latency ``http_req_duration`` (ms). k6 exports only the quantiles in its
  ``summaryTrendStats`` (p90 and p95 by default): the others are reported missing, never estimated, and
  an SLO on a missing quantile fails, since nothing shows it was met.
- **Locust**: ``PREFIX_stats.csv`` from ``locust --csv PREFIX``: the ``Aggregated`` row is the total,
  every other row one request name (per method), each with its percentile columns (``50%`` .. ``99.99%``;
  ``100%`` is the max).

:class:`ExternalLoadError` says what is wrong with a file without naming it; the caller adds the name.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from proxy.reports.load import QUANTILES
from proxy.reports.load_spec import ScopeFigures, Slo, SloVerdict, judge

K6: Final = "k6"
LOCUST: Final = "locust"
SECTION: Final = {K6: "load_k6", LOCUST: "load_locust"}
"""The report's key for each source's section, beside ``load`` (``rollguard loadtest``'s own run)."""

LOCUST_TOTAL: Final = "Aggregated"
LOCUST_REQUIRED: Final = (
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Requests/s",
)
K6_TREND_HINT: Final = "--summary-trend-stats 'avg,min,med,max,p(90),p(95),p(99)'"

_K6_QUANTILE = re.compile(r"^p\((\d{1,2}(?:\.\d+)?)\)$")
_LOCUST_QUANTILE = re.compile(r"^(\d{1,3}(?:\.\d+)?)%$")


class ExternalLoadError(ValueError):
    """A file that is not what its flag says, or is damaged; the message says what is wrong in it."""


@dataclass(frozen=True, slots=True)
class Row:
    """One scope of an external run: every request (the tool's total), or one Locust request name."""

    requests: int
    failures: int | None  # None: the tool did not count failures (a k6 run without http_req_failed)
    rps: float | None
    quantiles_ms: Mapping[float, float]  # only those the tool exported: quantile -> milliseconds
    min_ms: float | None = None
    avg_ms: float | None = None
    max_ms: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def figures(self) -> ScopeFigures:
        return ScopeFigures(
            requests=self.requests,
            errors=self.failures or 0,
            latency_s={q: ms / 1000 for q, ms in self.quantiles_ms.items()},
        )

    def to_json(self) -> dict[str, Any]:
        """The keys of a ``load`` scope, where the tool gives them: a quantile of :data:`QUANTILES`
        the tool did not export is None; any other it exported is added."""
        standard = {_name(q): self.quantiles_ms.get(q) for q in QUANTILES}
        others = {_name(q): ms for q, ms in sorted(self.quantiles_ms.items()) if q not in QUANTILES}
        out = {
            "requests": self.requests,
            "rps": self.rps,
            "errors": self.failures,
            "error_rate": (
                round(self.failures / self.requests, 6)
                if self.failures is not None and self.requests
                else None
            ),
            "latency_ms": {**standard, **others, "min": self.min_ms, "avg": self.avg_ms, "max": self.max_ms},
        }
        return {**out, **self.extra}


@dataclass(frozen=True, slots=True)
class Threshold:
    """A k6 threshold as its summary recorded it."""

    metric: str  # as k6 names it, submetrics included: http_req_duration{name:checkout}
    expression: str  # p(95)<120
    passed: bool

    def line(self) -> str:
        return f"k6 threshold {self.metric}: {self.expression} {'ok' if self.passed else 'crossed'}"

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "threshold": self.expression, "passed": self.passed}


@dataclass(frozen=True, slots=True)
class ExternalRun:
    """What one k6 or Locust run measured on its clients."""

    source: str  # K6 or LOCUST
    shape: str  # which of the tool's files it came from
    total: Row
    names: Mapping[str, Row] = field(default_factory=dict)  # Locust: "POST /v1/infer" -> its row
    thresholds: tuple[Threshold, ...] = ()
    duration_s: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def missing(self, slos: Sequence[Slo] = ()) -> list[str]:
        """The quantiles of :data:`QUANTILES` and of ``slos`` this run has no figure for, by name."""
        wanted = set(QUANTILES) | {s.quantile for s in slos if s.quantile is not None}
        return [_name(q) for q in sorted(wanted) if q not in self.total.quantiles_ms]

    def judge(self, slos: Sequence[Slo]) -> list[SloVerdict]:
        """Each SLO on the tool's total, scope named by the source (``k6 18.9 ms (n=5000)``). An error SLO
        on a run that did not count failures fails with no value: nothing shows it was met."""
        scope = {self.source: self.total.figures()}
        out = []
        for slo in slos:
            if slo.quantile is None and self.total.failures is None:
                out.append(SloVerdict(slo, {self.source: None}, {self.source: self.total.requests}, False))
            else:
                out.extend(judge([slo], scope))
        return out

    def notes(self, slos: Sequence[Slo]) -> list[str]:
        """Why an SLO could not be judged on this run, one line each, with how to get the figure."""
        out = []
        exported = ", ".join(_name(q) for q in sorted(self.total.quantiles_ms)) or "none"
        for slo in slos:
            if slo.quantile is not None and slo.quantile not in self.total.quantiles_ms:
                hint = f"; add it with {K6_TREND_HINT}" if self.source == K6 else ""
                out.append(
                    f"note: {self.source} exported no {_name(slo.quantile)} (only {exported}), so {slo.name} "
                    f"cannot be judged{hint}"
                )
            elif slo.quantile is None and self.total.failures is None:
                out.append(
                    f"note: {self.source}'s summary has no http_req_failed metric (k6 before v0.31), so "
                    f"{slo.name} cannot be judged"
                )
        return out

    def section(self, *, file: str, slo_source: str, verdicts: Sequence[SloVerdict]) -> dict[str, Any]:
        """This run's section of ``staging_report.json``."""
        slos = [v.slo for v in verdicts]
        out: dict[str, Any] = {
            "source": self.source,
            "file": file,
            "shape": self.shape,
            "duration_s": self.duration_s,
            **self.extra,
            "all": self.total.to_json(),
            "latency_missing": self.missing(slos),
        }
        if self.source == LOCUST:
            out["names"] = {name: row.to_json() for name, row in self.names.items()}
        if self.source == K6:
            out["thresholds"] = [t.to_json() for t in self.thresholds]
        out["slo_source"] = slo_source
        out["slo"] = [v.to_json() for v in verdicts]
        out["passed"] = all(v.passed for v in verdicts)
        return out


def _name(q: float) -> str:
    """0.95 -> ``p95``, 0.999 -> ``p99.9``: the names the ``load`` section uses."""
    return f"p{round(q * 100, 4):g}"


# -- k6 ---------------------------------------------------------------------------------------------------


def parse_k6_summary(raw: bytes) -> ExternalRun:
    """k6's end-of-test summary in either shape (see the module docstring)."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ExternalLoadError(f"not JSON ({exc})") from exc
    metrics = doc.get("metrics") if isinstance(doc, dict) else None
    if not isinstance(metrics, dict):
        raise ExternalLoadError(
            'no "metrics" object: not a k6 summary (k6 run --summary-export FILE, or handleSummary\'s data)'
        )
    for name, metric in metrics.items():
        if not isinstance(metric, dict):
            raise ExternalLoadError(f"metrics.{name} is not an object")
    handle_summary = any("values" in m for m in metrics.values())
    figures = {name: _k6_values(name, m, handle_summary) for name, m in metrics.items()}
    reqs, failed = figures.get("http_reqs"), figures.get("http_req_failed")
    duration = figures.get("http_req_duration")
    if reqs is None and duration is None:
        raise ExternalLoadError(
            "no http_reqs or http_req_duration metric: the run made no HTTP requests, "
            "or this is not k6's summary"
        )
    failures = None if failed is None else _count(failed, "passes", "http_req_failed")
    if reqs is not None:
        requests = _count(reqs, "count", "http_reqs")
    elif failed is not None and failures is not None:
        requests = failures + _count(failed, "fails", "http_req_failed")
    else:
        raise ExternalLoadError("no http_reqs metric: the number of requests is unknown")
    if failures is not None and failures > requests:
        raise ExternalLoadError(f"http_req_failed counts {failures} failures in {requests} requests")
    latency = duration or {}
    quantiles: dict[float, float] = {}
    for key, value in latency.items():
        q = 0.5 if key == "med" else _k6_quantile(key)
        if q is not None:
            quantiles[q] = _ms(value, f"http_req_duration {key}")
    total = Row(
        requests=requests,
        failures=failures,
        rps=None if reqs is None or "rate" not in reqs else round(_number(reqs["rate"], "http_reqs rate"), 3),
        quantiles_ms=quantiles,
        min_ms=_optional_ms(latency, "min"),
        avg_ms=_optional_ms(latency, "avg"),
        max_ms=_optional_ms(latency, "max"),
    )
    state = doc.get("state")
    run_ms = state.get("testRunDurationMs") if isinstance(state, dict) else None
    return ExternalRun(
        source=K6,
        shape="handleSummary" if handle_summary else "summary-export",
        total=total,
        thresholds=tuple(t for name, m in metrics.items() for t in _k6_thresholds(name, m, handle_summary)),
        duration_s=None if run_ms is None else round(_number(run_ms, "state.testRunDurationMs") / 1000, 3),
        extra=_k6_extra(figures),
    )


def _k6_values(name: str, metric: dict[str, Any], handle_summary: bool) -> dict[str, Any]:
    if not handle_summary:
        return {k: v for k, v in metric.items() if k != "thresholds"}
    values = metric.get("values")
    if not isinstance(values, dict):
        raise ExternalLoadError(f'metrics.{name} has no "values" object, unlike the other metrics')
    return values


def _k6_quantile(key: str) -> float | None:
    m = _K6_QUANTILE.match(key)
    if m is None or not 0 < float(m.group(1)) < 100:
        return None
    return round(float(m.group(1)) / 100, 6)


def _k6_thresholds(name: str, metric: dict[str, Any], handle_summary: bool) -> list[Threshold]:
    given = metric.get("thresholds")
    if given is None:
        return []
    if not isinstance(given, dict):
        raise ExternalLoadError(f"metrics.{name}.thresholds is not an object")
    out = []
    for expression, result in given.items():
        if handle_summary:
            ok = result.get("ok") if isinstance(result, dict) else None
            if not isinstance(ok, bool):
                raise ExternalLoadError(f'metrics.{name}.thresholds["{expression}"] has no boolean "ok"')
            out.append(Threshold(name, expression, ok))
        else:
            if not isinstance(result, bool):
                raise ExternalLoadError(f'metrics.{name}.thresholds["{expression}"] is not true or false')
            out.append(Threshold(name, expression, not result))  # summary-export: true means crossed
    return out


def _k6_extra(figures: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    """Iterations, the most VUs and the bytes moved, where the summary has them."""
    out: dict[str, Any] = {}
    for key, metric, field_name in (
        ("iterations", "iterations", "count"),
        ("vus_max", "vus_max", "max"),
        ("data_received_bytes", "data_received", "count"),
        ("data_sent_bytes", "data_sent", "count"),
    ):
        values = figures.get(metric)
        if values is not None and field_name in values:
            out[key] = _number(values[field_name], f"{metric} {field_name}")
    return out


def _count(values: Mapping[str, Any], key: str, metric: str) -> int:
    if key not in values:
        raise ExternalLoadError(f'{metric} has no "{key}"')
    n = _number(values[key], f"{metric} {key}")
    if n < 0 or n != int(n):
        raise ExternalLoadError(f"{metric} {key} is {values[key]!r}, not a count")
    return int(n)


def _optional_ms(values: Mapping[str, Any], key: str) -> float | None:
    return _ms(values[key], f"http_req_duration {key}") if key in values else None


def _ms(value: Any, what: str) -> float:
    ms = _number(value, what)
    if ms < 0:
        raise ExternalLoadError(f"{what} is {value!r}: a duration cannot be negative")
    return round(ms, 3)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ExternalLoadError(f"{what} is {value!r}, not a number")
    return float(value)


# -- Locust -----------------------------------------------------------------------------------------------


def parse_locust_stats(text: str) -> ExternalRun:
    """Locust's ``PREFIX_stats.csv`` (see the module docstring)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or not any(cell.strip() for cell in header):
        raise ExternalLoadError("empty: no header row")
    header = [cell.strip() for cell in header]
    if "Timestamp" in header:
        raise ExternalLoadError(
            "this is Locust's stats history (PREFIX_stats_history.csv); give PREFIX_stats.csv"
        )
    if "Occurrences" in header:
        raise ExternalLoadError("this is Locust's failures file (PREFIX_failures.csv); give PREFIX_stats.csv")
    missing = [c for c in LOCUST_REQUIRED if c not in header]
    if missing:
        raise ExternalLoadError(
            f"no {', '.join(repr(c) for c in missing)} column: "
            "not Locust's PREFIX_stats.csv (Locust 1.0 or later)"
        )
    percentiles = {c: _locust_quantile(c) for c in header if _LOCUST_QUANTILE.match(c)}
    total: Row | None = None
    names: dict[str, Row] = {}
    for number, cells in enumerate(reader, 2):
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(header):
            raise ExternalLoadError(f"line {number}: {len(cells)} fields, the header has {len(header)}")
        row = dict(zip(header, (c.strip() for c in cells), strict=True))
        parsed = _locust_row(row, percentiles, number)
        if row["Name"] == LOCUST_TOTAL and row["Type"] in ("", "None"):
            total = parsed
            continue
        key = f"{row['Type']} {row['Name']}".strip()
        if key in names:
            raise ExternalLoadError(f"line {number}: {key!r} appears twice")
        names[key] = parsed
    if total is None:
        raise ExternalLoadError(f"no {LOCUST_TOTAL!r} row: the file is cut short, or not Locust's stats")
    return ExternalRun(source=LOCUST, shape="stats.csv", total=total, names=names)


def _locust_quantile(column: str) -> float | None:
    """``95%`` -> 0.95; ``100%`` is the max, not a quantile."""
    m = _LOCUST_QUANTILE.match(column)
    if m is None or not 0 < float(m.group(1)) < 100:
        return None
    return round(float(m.group(1)) / 100, 6)


def _locust_row(row: Mapping[str, str], percentiles: Mapping[str, float | None], line: int) -> Row:
    def number(column: str) -> float | None:
        text = row.get(column, "")
        if text in ("", "N/A"):  # Locust writes N/A where a row has no requests to measure
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ExternalLoadError(f"line {line} ({row['Name']!r}): {column} is {text!r}, not a number")
        return value

    def count(column: str) -> int:
        value = number(column)
        if value is None or value != int(value):
            raise ExternalLoadError(
                f"line {line} ({row['Name']!r}): {column} is {row[column]!r}, not a count"
            )
        return int(value)

    requests, failures = count("Request Count"), count("Failure Count")
    if failures > requests:
        raise ExternalLoadError(f"line {line} ({row['Name']!r}): {failures} failures in {requests} requests")
    quantiles = {}
    for column, q in percentiles.items():
        value = number(column)
        if q is not None and value is not None:
            quantiles[q] = round(value, 3)
    if 0.5 not in quantiles and (median := number("Median Response Time")) is not None:
        quantiles[0.5] = round(median, 3)
    extra: dict[str, Any] = {}
    if (fails_per_s := number("Failures/s")) is not None:
        extra["failures_per_s"] = round(fails_per_s, 3)
    if (size := number("Average Content Size")) is not None:
        extra["avg_content_bytes"] = round(size, 3)
    rps = number("Requests/s")
    return Row(
        requests=requests,
        failures=failures,
        rps=None if rps is None else round(rps, 3),
        quantiles_ms=quantiles,
        min_ms=number("Min Response Time"),
        avg_ms=None if (avg := number("Average Response Time")) is None else round(avg, 3),
        max_ms=number("Max Response Time"),  # exact, where 100% is rounded like the percentiles
        extra=extra,
    )
