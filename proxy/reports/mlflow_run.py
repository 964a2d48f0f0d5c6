"""The rollout's artifacts and key figures, attached to an existing MLflow run
(``rollguard report --mlflow-run RUN_ID``, extra ``rollguard[mlflow]``).

The four artifacts go under the artifact path ``rollguard/`` of the run, byte for byte as the admin API
served them. Figures read from them are logged as metrics (step 0) and the rollout's identity as tags,
under the names of :data:`SHADOW_FIGURES`, :data:`STAGING_FIGURES` and :func:`figures`. Only what an
artifact holds is logged: a figure that is absent or null (no shadow phase yet, no request to a version)
is left out and named in :attr:`Figures.skipped`, never filled in.

MLflow is imported only here, and only when a run is opened, so the proxy never loads it. The tracking
URI is ``--mlflow-uri`` or else MLflow's own ``MLFLOW_TRACKING_URI``; with neither, nothing is guessed
(MLflow's default would create a database in the working directory). A run that MLflow would accept
metrics for is accepted, finished ones included; a deleted run is refused before anything is logged (MLflow
would take its artifacts and then refuse its metrics). Logging stops at the first failure, and the
:class:`MlflowRunError` says what was logged before it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

import orjson

from proxy.content.text import printable
from proxy.reports.artifacts import ARTIFACTS, ROLLOUT_DECISION, SHADOW_EVAL, STAGING_REPORT
from proxy.reports.staging import ROLES

if TYPE_CHECKING:
    from mlflow import MlflowClient

ARTIFACT_PATH: Final = "rollguard"
INSTALL: Final = "pip install 'rollguard[mlflow]'"
PREFIX: Final = "rollguard"

FieldPath = tuple[str | int, ...]

SHADOW_FIGURES: Final[tuple[tuple[str, FieldPath], ...]] = (
    ("pairs", ("pairs_total",)),
    ("compared", ("compared",)),
    ("divergence_pp", ("decision_divergence_pp", "value")),
    ("divergence_pp.ci95_low", ("decision_divergence_pp", "ci95", 0)),
    ("divergence_pp.ci95_high", ("decision_divergence_pp", "ci95", 1)),
    ("decision_rate.baseline", ("decision_rate", "baseline")),
    ("decision_rate.candidate", ("decision_rate", "candidate")),
    ("score_delta.mean", ("score_delta", "mean")),
    ("score_delta.abs_p95", ("score_delta", "abs_p95")),
    ("psi", ("distribution_shift", "psi")),
    ("ks.statistic", ("distribution_shift", "ks", "statistic")),
    ("ks.p_value", ("distribution_shift", "ks", "p_value")),
    ("status_mismatches", ("status_mismatches",)),
    ("latency_ratio.geomean", ("latency_ratio", "geomean")),
    ("fairness.gap_change_pp", ("fairness", "gap_change_pp")),
    ("fairness.most_moved.difference_pp", ("fairness", "most_moved", "difference_pp")),
)
"""``rollguard.shadow.<route>.<name>``: each from ``shadow_eval.json`` ``routes.<route>.<path>``."""

STAGING_FIGURES: Final[tuple[tuple[str, FieldPath], ...]] = (
    ("requests", ("requests",)),
    ("latency_ms.p50", ("latency_ms", "p50")),
    ("latency_ms.p95", ("latency_ms", "p95")),
    ("latency_ms.p99", ("latency_ms", "p99")),
    ("upstream_failure_rate", ("upstream_failure_rate",)),
)
"""``rollguard.staging.<baseline|candidate>.<name>``: each from ``staging_report.json``
``totals.<role>.<path>`` (every route together; latency is client-facing, proxy included)."""

# A route name becomes part of a metric key; the config allows only these characters in one anyway.
_KEY_PART: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DATABASES: Final = ("sqlite", "postgresql", "mysql", "mssql")
_DENIED: Final = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"})

Reason = Literal["missing", "usage", "not_found", "deleted", "unreachable", "unauthorized", "failed"]


class MlflowRunError(Exception):
    """Why the run could not be used or logging stopped. ``reason``: ``missing`` (MLflow is not
    installed), ``usage`` (no or an unusable tracking URI, a malformed run id), ``not_found``,
    ``deleted``, ``unreachable`` (no answer from the tracking server), ``unauthorized``, ``failed``."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason: Reason = reason


@dataclass(frozen=True, slots=True)
class Figures:
    """What is logged besides the files: metrics by name, tags by name, and one sentence per figure (or
    group of figures) that the artifacts do not hold."""

    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def figures(files: Mapping[str, bytes]) -> Figures:
    """The metrics and tags of the artifacts in ``files`` (name -> bytes as served). Pure.

    Besides :data:`SHADOW_FIGURES` and :data:`STAGING_FIGURES`: ``rollguard.rollout.weight`` (the
    candidate's weight in percent when the report was made) and the tags ``rollguard.rollout_id``,
    ``rollguard.phase``, ``rollguard.baseline_version`` and ``rollguard.candidate_version`` from
    ``staging_report.json`` (the rollout id and versions from ``shadow_eval.json`` when only it is there);
    ``rollguard.rollout.decisions``, the number of lines of ``rollout_decision.txt``.
    """
    out = Figures()
    shadow = _document(files, SHADOW_EVAL, out.skipped)
    staging = _document(files, STAGING_REPORT, out.skipped)
    if shadow is not None:
        _shadow_figures(shadow, out)
    if staging is not None:
        for role in ROLES:
            totals = _at(staging, ("totals", role))
            for name, path in STAGING_FIGURES:
                _metric(out, f"{PREFIX}.staging.{role}.{name}", totals, path, STAGING_REPORT)
        _metric(out, f"{PREFIX}.rollout.weight", staging, ("rollout", "weight"), STAGING_REPORT)
    _tags(shadow, staging, out)
    decisions = files.get(ROLLOUT_DECISION)
    if decisions is None:
        out.skipped.append(f"{PREFIX}.rollout.decisions: {ROLLOUT_DECISION} was not available")
    else:
        lines = decisions.decode("utf-8", "replace").splitlines()
        out.metrics[f"{PREFIX}.rollout.decisions"] = float(sum(1 for line in lines if line.strip()))
    return out


def _document(files: Mapping[str, bytes], name: str, skipped: list[str]) -> dict[str, Any] | None:
    data = files.get(name)
    if data is None:
        skipped.append(f"the figures of {name}: it was not available")
        return None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        skipped.append(f"the figures of {name}: it is not JSON ({exc})")
        return None
    if not isinstance(doc, dict):
        skipped.append(f"the figures of {name}: it is not a JSON object")
        return None
    return doc


def _shadow_figures(doc: dict[str, Any], out: Figures) -> None:
    routes = doc.get("routes")
    if not isinstance(routes, dict) or not routes:
        out.skipped.append(
            f"{PREFIX}.shadow.*: {SHADOW_EVAL} has no route with mirrored pairs (no shadow yet)"
        )
        return
    for route, ev in sorted(routes.items()):
        if not _KEY_PART.match(route):
            out.skipped.append(
                f"{PREFIX}.shadow.* of route {printable(route, 80)!r}: the name cannot be in a metric key"
            )
            continue
        for name, path in SHADOW_FIGURES:
            _metric(out, f"{PREFIX}.shadow.{route}.{name}", ev, path, SHADOW_EVAL)


def _tags(shadow: dict[str, Any] | None, staging: dict[str, Any] | None, out: Figures) -> None:
    wanted: list[tuple[str, list[tuple[dict[str, Any] | None, FieldPath]]]] = [
        (f"{PREFIX}.rollout_id", [(staging, ("rollout", "id")), (shadow, ("rollout_id",))]),
        (f"{PREFIX}.phase", [(staging, ("rollout", "phase"))]),
    ]
    wanted += [
        (f"{PREFIX}.{role}_version", [(staging, ("versions", role)), (shadow, ("versions", role))])
        for role in ROLES
    ]
    for tag, sources in wanted:
        value = next((v for doc, path in sources if isinstance(v := _at(doc, path), str) and v), None)
        if value is None:
            out.skipped.append(f"tag {tag}: not in the artifacts")
        else:
            out.tags[tag] = value


def _at(doc: Any, path: FieldPath) -> Any:
    for step in path:
        if isinstance(step, int):
            doc = doc[step] if isinstance(doc, list) and -len(doc) <= step < len(doc) else None
        else:
            doc = doc.get(step) if isinstance(doc, dict) else None
        if doc is None:
            return None
    return doc


def _metric(out: Figures, key: str, doc: Any, path: FieldPath, source: str) -> None:
    value = _at(doc, path)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        why = "null" if value is None else "not a number"
        out.skipped.append(f"{key}: {why} in {source}")
        return
    out.metrics[key] = float(value)


def shown_uri(uri: str) -> str:
    """``uri`` as it may be printed: a user part (a name and password, or a token) becomes ``***``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return printable(uri, 300)
    if "@" not in parts.netloc:
        return printable(uri, 300)
    return printable(urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])), 300)


def number(value: float) -> str:
    """A metric value as printed: whole numbers without a decimal point, others in full."""
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


class MlflowRun:
    """An MLflow run that the artifacts can be logged to; :meth:`open` checks that it is one."""

    def __init__(self, client: MlflowClient, run_id: str, uri: str, experiment_id: str, status: str) -> None:
        self._client = client
        self.run_id = run_id
        self.uri = uri
        self.experiment_id = experiment_id
        self.status = status

    @classmethod
    def open(cls, run_id: str, uri: str | None) -> MlflowRun:
        """The run ``run_id`` at ``uri`` (None: ``MLFLOW_TRACKING_URI``); raises :class:`MlflowRunError`."""
        try:
            from mlflow import MlflowClient
        except ImportError as exc:
            raise MlflowRunError("missing", f"MLflow is not installed ({exc}): {INSTALL}") from exc
        uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or None
        if uri is None:
            raise MlflowRunError(
                "usage", "no MLflow tracking URI: set MLFLOW_TRACKING_URI or give --mlflow-uri"
            )
        where = shown_uri(uri)
        try:
            client = MlflowClient(tracking_uri=uri)
        except Exception as exc:  # MLflow's own checks of the URI (scheme, store kind), any type
            raise MlflowRunError(
                "usage", f"cannot use the MLflow tracking URI {where}: {_detail(exc)}{_hint(uri)}"
            ) from exc
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            subject = f"MLflow run {printable(run_id, 100)} at {where}"
            raise _translate(exc, subject, opening=True) from exc
        info = run.info
        if info.lifecycle_stage == "deleted":
            raise MlflowRunError(
                "deleted",
                f"MLflow run {info.run_id} at {where} is deleted: nothing was logged (restore the run, or "
                "give another)",
            )
        return cls(client, info.run_id, uri, str(info.experiment_id), str(info.status))

    def describe(self) -> str:
        return (
            f"MLflow run {self.run_id} at {shown_uri(self.uri)}: experiment {self.experiment_id}, "
            f"status {self.status}"
        )

    def attach(self, files: Mapping[str, Path], emit: Callable[[str], None]) -> Figures:
        """Log ``files`` (artifact name -> local file) under ``rollguard/``, then their figures in one
        batch; one ``emit`` line per thing logged and per figure left out. Stops at the first failure
        with a :class:`MlflowRunError` that names what was logged before it."""
        from mlflow.entities import Metric, RunTag

        ordered = [(name, files[name]) for name in ARTIFACTS if name in files]
        found = figures({name: path.read_bytes() for name, path in ordered})
        logged: list[str] = []
        for name, path in ordered:
            target = f"{ARTIFACT_PATH}/{name}"
            try:
                self._client.log_artifact(self.run_id, str(path), artifact_path=ARTIFACT_PATH)
            except Exception as exc:  # the tracking or artifact store failed, whatever its kind
                raise self._stopped(exc, f"logging {target}", logged) from exc
            logged.append(target)
            emit(f"logged artifact {target}")
        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, 0) for key, value in found.metrics.items()]
        tags = [RunTag(key, value) for key, value in found.tags.items()]
        if metrics or tags:
            try:
                self._client.log_batch(self.run_id, metrics=metrics, tags=tags)
            except Exception as exc:
                raise self._stopped(exc, "logging the metrics and tags", logged, batch=True) from exc
        for key, value in found.metrics.items():
            emit(f"logged metric {key} = {number(value)}")
        for key, text in found.tags.items():
            emit(f"logged tag {key} = {printable(text, 200)}")
        for line in found.skipped:
            emit(f"not logged: {line}")
        return found

    def _stopped(
        self, exc: Exception, action: str, logged: Sequence[str], *, batch: bool = False
    ) -> MlflowRunError:
        err = _translate(exc, f"MLflow run {self.run_id} at {shown_uri(self.uri)}: {action}", opening=False)
        before = ", ".join(logged) if logged else "no artifact"
        rest = "not confirmed (their batch failed)" if batch else "not logged"
        return MlflowRunError(
            err.reason, f"{err}; logged before the failure: {before}; metrics and tags: {rest}"
        )


def _translate(exc: Exception, subject: str, *, opening: bool) -> MlflowRunError:
    """An exception from MLflow (or the store below it) as a :class:`MlflowRunError` about ``subject``."""
    code = str(getattr(exc, "error_code", "") or "")
    if _no_answer(exc):
        return MlflowRunError("unreachable", f"{subject}: the tracking server did not answer: {_detail(exc)}")
    if code == "RESOURCE_DOES_NOT_EXIST":
        return MlflowRunError("not_found", f"{subject}: no such run")
    if code in _DENIED:
        return MlflowRunError("unauthorized", f"{subject}: refused: {_detail(exc)}")
    if opening and code == "INVALID_PARAMETER_VALUE":
        return MlflowRunError("usage", f"{subject}: {_detail(exc)}")
    return MlflowRunError("failed", f"{subject}: {_detail(exc)}")


def _no_answer(exc: BaseException) -> bool:
    """A connection or timeout error of the HTTP client somewhere in the chain. MLflow wraps it in an
    MlflowException without a code of its own; requests' errors are OSErrors, as are a local store's, so
    the client's module tells them apart."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and type(cur).__module__.split(".")[0] in ("requests", "urllib3"):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def _detail(exc: BaseException) -> str:
    return printable(str(exc).strip() or type(exc).__name__, 600)


def _hint(uri: str) -> str:
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in _DATABASES and importlib.util.find_spec("sqlalchemy") is None:
        return (
            " (a database store needs SQLAlchemy and Alembic beside mlflow-skinny: "
            "pip install sqlalchemy alembic)"
        )
    return ""
