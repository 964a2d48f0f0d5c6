"""``rollguard report --mlflow-run``: a real proxy with the sample models, real traffic, a local MLflow file
store, the CLI as an operator runs it, and the run read back through MLflow; then each way it can fail."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy.demo.sample_model import ModelBehavior, features_generator
from proxy.reports.artifacts import ARTIFACTS, CANARY_PLAN, ROLLOUT_DECISION, SHADOW_EVAL, STAGING_REPORT
from proxy.reports.mlflow_run import figures, shown_uri
from tests.helpers.faulty_upstream import refused_url
from tests.helpers.mlflow_store import STORE_ENV, create_run, mlflow_missing, read_run, store_uri
from tests.helpers.models import Models
from tests.helpers.proxy_runner import RunningProxy
from tests.helpers.tokens import OPERATOR_TOKEN, VIEWER_TOKEN

needs_mlflow = pytest.mark.skipif(mlflow_missing() is not None, reason=str(mlflow_missing()))
SHADOW_ALL = {"sample": 1.0, "timeout": "2s", "noise_sample": 0.0}
BOUND = 60  # seconds one command may take
NOWHERE_RUN = "0123456789abcdef0123456789abcdef"


def _report(
    admin: str,
    *args: str,
    env: dict[str, str] | None = None,
    python: tuple[str, ...] = ("-m", "proxy"),
) -> subprocess.CompletedProcess[str]:
    """``rollguard report ARGS --admin ADMIN`` with a viewer token and MLflow's file store allowed; no
    tracking URI comes from the outside environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ROLLGUARD_", "MLFLOW_"))}
    return subprocess.run(
        [sys.executable, *python, "report", *args, "--admin", admin],
        capture_output=True,
        text=True,
        env={**base, "ROLLGUARD_TOKEN": VIEWER_TOKEN, **STORE_ENV, **(env or {})},
        timeout=BOUND,
    )


async def _run(admin: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(_report, admin, *args, **kw)


async def _traffic(proxy: RunningProxy, n: int) -> int:
    """``n`` valid requests with sticky users; waits until every one the baseline answered has been
    compared in the shadow. Returns that count."""
    rng = random.Random(5)
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=10) as client:

        async def one(body: dict[str, Any]) -> bool:
            async with gate:
                r = await client.post("/v1/infer", json=body, headers={"x-user-id": str(body["user_id"])})
            assert r.status_code == 200, r.text
            return r.headers["x-rollguard-version"] == "v1"

        baseline = sum(await asyncio.gather(*(one(features_generator(rng)) for _ in range(n))))
    async with proxy.admin_client(VIEWER_TOKEN) as admin, asyncio.timeout(20):
        while True:
            routes = (await admin.get(f"/reports/{SHADOW_EVAL}")).json()["routes"]
            if routes.get("infer", {}).get("compared", 0) >= baseline:
                return baseline
            await asyncio.sleep(0.05)


def _clean(out: str, err: str) -> None:
    assert "Traceback" not in out + err, out + err


def _lines(out: str, prefix: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(prefix)]


@needs_mlflow
async def test_the_four_artifacts_their_figures_and_tags_land_in_the_run(
    proxy_factory: Any, models: Models, tmp_path: Path
) -> None:
    # A candidate that scores higher: its decisions diverge, so no figure is zero by coincidence.
    models.candidate.model.set_behavior(ModelBehavior(version="v2", drift=0.3))
    proxy = await proxy_factory(shadow=SHADOW_ALL)
    async with proxy.admin_client(OPERATOR_TOKEN) as ops:
        assert (await ops.put("/weights", json={"canary": 50, "reason": "half"})).status_code == 200
    compared = await _traffic(proxy, 400)
    assert compared >= 120  # enough scores per version for PSI and KS (100)
    uri = store_uri(tmp_path / "mlruns")
    run = create_run(uri)
    out = tmp_path / "artifacts"

    res = await _run(proxy.admin_url, "--out", str(out), "--mlflow-run", run.id, "--mlflow-uri", uri)

    assert res.returncode == 0, res.stderr
    _clean(res.stdout, res.stderr)
    got = read_run(uri, run.id)
    # The files: all four under rollguard/, byte for byte what the command fetched into --out.
    assert set(got["artifacts"]) == {f"rollguard/{name}" for name in ARTIFACTS}
    for name in ARTIFACTS:
        assert got["artifacts"][f"rollguard/{name}"] == (out / name).read_bytes(), name
    # ... and what /reports serves: the plan and the decisions as they are; the two reports are made
    # anew at each request, so their time stamps and the process figures differ, nothing else.
    async with proxy.admin_client(VIEWER_TOKEN) as admin:
        live = {name: (await admin.get(f"/reports/{name}")).content for name in ARTIFACTS}
        status = (await admin.get("/status")).json()
    for name in (CANARY_PLAN, ROLLOUT_DECISION):
        assert got["artifacts"][f"rollguard/{name}"] == live[name], name
    shadow = json.loads(got["artifacts"][f"rollguard/{SHADOW_EVAL}"])
    staging = json.loads(got["artifacts"][f"rollguard/{STAGING_REPORT}"])
    live_shadow, live_staging = json.loads(live[SHADOW_EVAL]), json.loads(live[STAGING_REPORT])
    assert shadow["routes"]["infer"]["segments"] == live_shadow["routes"]["infer"]["segments"]
    assert shadow["routes"]["infer"]["compared"] == live_shadow["routes"]["infer"]["compared"] == compared
    for key in ("rollout", "versions", "totals", "routes"):
        assert staging[key] == live_staging[key], key

    # The figures, each from its place in the artifacts.
    ev, totals = shadow["routes"]["infer"], staging["totals"]
    expected: dict[str, Any] = {
        "rollguard.shadow.infer.pairs": ev["pairs_total"],
        "rollguard.shadow.infer.compared": compared,
        "rollguard.shadow.infer.divergence_pp": ev["decision_divergence_pp"]["value"],
        "rollguard.shadow.infer.divergence_pp.ci95_low": ev["decision_divergence_pp"]["ci95"][0],
        "rollguard.shadow.infer.divergence_pp.ci95_high": ev["decision_divergence_pp"]["ci95"][1],
        "rollguard.shadow.infer.decision_rate.baseline": ev["decision_rate"]["baseline"],
        "rollguard.shadow.infer.decision_rate.candidate": ev["decision_rate"]["candidate"],
        "rollguard.shadow.infer.score_delta.mean": ev["score_delta"]["mean"],
        "rollguard.shadow.infer.score_delta.abs_p95": ev["score_delta"]["abs_p95"],
        "rollguard.shadow.infer.psi": ev["distribution_shift"]["psi"],
        "rollguard.shadow.infer.ks.statistic": ev["distribution_shift"]["ks"]["statistic"],
        "rollguard.shadow.infer.ks.p_value": ev["distribution_shift"]["ks"]["p_value"],
        "rollguard.shadow.infer.status_mismatches": 0,
        "rollguard.shadow.infer.latency_ratio.geomean": ev["latency_ratio"]["geomean"],
        "rollguard.rollout.weight": 50,
        "rollguard.rollout.decisions": 1,  # the weight set by hand
    }
    for role in ("baseline", "candidate"):
        figures_of = totals[role]
        assert figures_of["requests"] > 0
        expected |= {
            f"rollguard.staging.{role}.requests": figures_of["requests"],
            f"rollguard.staging.{role}.latency_ms.p50": figures_of["latency_ms"]["p50"],
            f"rollguard.staging.{role}.latency_ms.p95": figures_of["latency_ms"]["p95"],
            f"rollguard.staging.{role}.latency_ms.p99": figures_of["latency_ms"]["p99"],
            f"rollguard.staging.{role}.upstream_failure_rate": 0,
        }
    fairness = ev["fairness"]
    if fairness["most_moved"] is not None:  # with enough pairs in two segments or more
        expected["rollguard.shadow.infer.fairness.gap_change_pp"] = fairness["gap_change_pp"]
        expected["rollguard.shadow.infer.fairness.most_moved.difference_pp"] = fairness["most_moved"][
            "difference_pp"
        ]
    assert None not in expected.values()
    assert expected["rollguard.shadow.infer.divergence_pp"] > 0 and expected["rollguard.shadow.infer.psi"] > 0
    assert got["metrics"] == expected
    assert got["tags"] == {
        "rollguard.rollout_id": status["rollout"]["rollout_id"],
        "rollguard.phase": "paused",
        "rollguard.baseline_version": "v1",
        "rollguard.candidate_version": "v2",
    }
    # One line per thing logged.
    assert len(_lines(res.stdout, "wrote ")) == 4
    assert _lines(res.stdout, "logged artifact ") == [f"logged artifact rollguard/{n}" for n in ARTIFACTS]
    assert len(_lines(res.stdout, "logged metric ")) == len(expected)
    assert "logged metric rollguard.rollout.decisions = 1" in res.stdout
    assert "logged tag rollguard.phase = paused" in res.stdout
    assert _lines(res.stdout, "not logged") == []
    experiment = run.artifacts.parent.parent.name  # <store>/<experiment id>/<run id>/artifacts
    first = res.stdout.splitlines()[0]
    assert first == f"MLflow run {run.id} at {uri}: experiment {experiment}, status RUNNING"


@needs_mlflow
async def test_without_out_or_shadow_into_a_finished_run_named_by_the_environment(
    proxy_factory: Any, tmp_path: Path
) -> None:
    proxy = await proxy_factory()  # no shadow: every request to the baseline, nothing mirrored
    async with httpx.AsyncClient(base_url=proxy.data_url, timeout=10) as client:
        for body in (features_generator(random.Random(i)) for i in range(20)):
            assert (await client.post("/v1/infer", json=body)).status_code == 200
    uri = store_uri(tmp_path / "mlruns")
    run = create_run(uri, end="FINISHED")  # MLflow takes metrics for a finished run: so do we

    res = await _run(proxy.admin_url, "--mlflow-run", run.id, env={"MLFLOW_TRACKING_URI": uri})

    assert res.returncode == 0, res.stderr
    _clean(res.stdout, res.stderr)
    got = read_run(uri, run.id)
    assert got["status"] == "FINISHED"
    async with proxy.admin_client(VIEWER_TOKEN) as admin:
        plan = (await admin.get(f"/reports/{CANARY_PLAN}")).content
    assert set(got["artifacts"]) == {f"rollguard/{name}" for name in ARTIFACTS}
    assert got["artifacts"][f"rollguard/{CANARY_PLAN}"] == plan
    assert json.loads(got["artifacts"][f"rollguard/{SHADOW_EVAL}"])["routes"] == {}
    assert got["artifacts"][f"rollguard/{ROLLOUT_DECISION}"] == b""
    metrics = got["metrics"]
    assert not [k for k in metrics if k.startswith("rollguard.shadow.")]
    assert metrics["rollguard.staging.baseline.requests"] == 20
    assert metrics["rollguard.staging.candidate.requests"] == 0
    assert "rollguard.staging.candidate.latency_ms.p50" not in metrics  # no candidate request: null
    assert metrics["rollguard.rollout.decisions"] == 0 and metrics["rollguard.rollout.weight"] == 0
    assert got["tags"]["rollguard.phase"] == "idle"
    skipped = _lines(res.stdout, "not logged: ")
    assert any("rollguard.shadow.*" in line and "no route with mirrored pairs" in line for line in skipped)
    assert "not logged: rollguard.staging.candidate.latency_ms.p99: null in staging_report.json" in skipped
    assert _lines(res.stdout, "wrote ") == []  # the temporary folder is nobody's business
    assert len(_lines(res.stdout, "logged metric ")) == len(metrics)


@needs_mlflow
async def test_an_unknown_run_is_exit_1_before_the_proxy_is_asked(tmp_path: Path) -> None:
    uri = store_uri(tmp_path / "mlruns")
    create_run(uri)  # the store exists; the run does not
    out = tmp_path / "artifacts"
    res = await _run(refused_url(), "--out", str(out), "--mlflow-run", NOWHERE_RUN, "--mlflow-uri", uri)
    assert res.returncode == 1, res.stderr
    assert f"MLflow run {NOWHERE_RUN} at {uri}: no such run" in res.stderr
    _clean(res.stdout, res.stderr)
    assert not out.exists()  # an unreachable admin would have been exit 3


@needs_mlflow
async def test_a_deleted_run_is_refused_with_nothing_logged(proxy: RunningProxy, tmp_path: Path) -> None:
    uri = store_uri(tmp_path / "mlruns")
    run = create_run(uri, delete=True)
    res = await _run(proxy.admin_url, "--mlflow-run", run.id, "--mlflow-uri", uri)
    assert res.returncode == 5, res.stderr
    assert f"MLflow run {run.id} at {uri} is deleted: nothing was logged" in res.stderr
    _clean(res.stdout, res.stderr)
    got = read_run(uri, run.id)
    assert got["lifecycle_stage"] == "deleted" and got["artifacts"] == {} and got["metrics"] == {}


@needs_mlflow
async def test_an_unreachable_admin_api_is_exit_3_and_the_run_stays_empty(tmp_path: Path) -> None:
    uri = store_uri(tmp_path / "mlruns")
    run = create_run(uri)
    admin = refused_url()
    res = await _run(admin, "--mlflow-run", run.id, "--mlflow-uri", uri)
    assert res.returncode == 3, res.stderr
    assert f"cannot reach the admin API at {admin}" in res.stderr
    _clean(res.stdout, res.stderr)
    got = read_run(uri, run.id)
    assert got["artifacts"] == {} and got["metrics"] == {} and got["tags"] == {}


@needs_mlflow
async def test_an_unreachable_tracking_server_is_exit_3_naming_it() -> None:
    server = refused_url()
    res = await _run(
        refused_url(),
        "--mlflow-run",
        NOWHERE_RUN,
        "--mlflow-uri",
        server,
        env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},  # MLflow's own retries take minutes by default
    )
    assert res.returncode == 3, res.stderr
    assert f"MLflow run {NOWHERE_RUN} at {server}: the tracking server did not answer" in res.stderr
    _clean(res.stdout, res.stderr)


@needs_mlflow
async def test_a_failure_midway_says_what_was_logged_before_it(proxy: RunningProxy, tmp_path: Path) -> None:
    uri = store_uri(tmp_path / "mlruns")
    run = create_run(uri)
    # The second file cannot be written into the store: its place is a link into a folder that is not there.
    blocked = run.artifacts / "rollguard" / STAGING_REPORT
    blocked.parent.mkdir(parents=True)
    blocked.symlink_to(tmp_path / "missing" / STAGING_REPORT)

    res = await _run(proxy.admin_url, "--mlflow-run", run.id, "--mlflow-uri", uri)

    assert res.returncode == 1, res.stderr
    _clean(res.stdout, res.stderr)
    assert _lines(res.stdout, "logged ") == [f"logged artifact rollguard/{SHADOW_EVAL}"]
    assert f"MLflow run {run.id} at {uri}: logging rollguard/{STAGING_REPORT}: " in res.stderr
    assert f"logged before the failure: rollguard/{SHADOW_EVAL}; metrics and tags: not logged" in res.stderr
    blocked.unlink()
    got = read_run(uri, run.id)
    assert set(got["artifacts"]) == {f"rollguard/{SHADOW_EVAL}"} and got["metrics"] == {}


@needs_mlflow
async def test_no_tracking_uri_at_all_is_a_usage_error(tmp_path: Path) -> None:
    res = await _run(refused_url(), "--mlflow-run", NOWHERE_RUN)
    assert res.returncode == 2, res.stderr
    assert "no MLflow tracking URI: set MLFLOW_TRACKING_URI or give --mlflow-uri" in res.stderr
    _clean(res.stdout, res.stderr)


async def test_without_mlflow_installed_the_message_names_the_extra(tmp_path: Path) -> None:
    hidden = ("-c", "import sys; sys.modules['mlflow'] = None; from proxy.cli import main; sys.exit(main())")
    res = await _run(
        refused_url(),
        "--mlflow-run",
        NOWHERE_RUN,
        "--mlflow-uri",
        store_uri(tmp_path),
        python=hidden,
    )
    assert res.returncode == 2, res.stderr
    assert "MLflow is not installed" in res.stderr and "pip install 'rollguard[mlflow]'" in res.stderr
    _clean(res.stdout, res.stderr)


async def test_report_needs_a_destination() -> None:
    res = await _run(refused_url())
    assert res.returncode == 2 and "report needs --out DIR, --mlflow-run RUN_ID, or both" in res.stderr


def test_the_proxy_and_the_cli_never_import_mlflow_by_themselves() -> None:
    probe = (
        "import sys, proxy.cli, proxy.app.serve, proxy.reports.mlflow_run; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=BOUND)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


# -- the figures, from hand-made artifacts ----------------------------------------------------------------


def _files(shadow: Any, staging: Any, decisions: bytes = b"") -> dict[str, bytes]:
    return {
        SHADOW_EVAL: json.dumps(shadow).encode(),
        STAGING_REPORT: json.dumps(staging).encode(),
        ROLLOUT_DECISION: decisions,
    }


def test_null_missing_and_non_numeric_figures_are_named_not_logged() -> None:
    shadow = {
        "rollout_id": "r1",
        "versions": {"baseline": "v1", "candidate": "v2"},
        "routes": {
            "infer": {
                "pairs_total": 3,
                "compared": 2,
                "decision_divergence_pp": {"value": None, "ci95": [0.0]},
                "distribution_shift": {"psi": True, "ks": {"statistic": "0.1"}},
            },
            "Bad Route!": {"compared": 9},
        },
    }
    staging = {"rollout": {"phase": "shadow", "weight": 0}, "totals": {"baseline": {"requests": 4}}}
    got = figures(_files(shadow, staging, b"a\n\nb\n"))
    assert got.metrics == {
        "rollguard.shadow.infer.pairs": 3.0,
        "rollguard.shadow.infer.compared": 2.0,
        "rollguard.shadow.infer.divergence_pp.ci95_low": 0.0,
        "rollguard.staging.baseline.requests": 4.0,
        "rollguard.rollout.weight": 0.0,
        "rollguard.rollout.decisions": 2.0,
    }
    # The rollout id and the versions come from the shadow evaluation when the staging report lacks them.
    assert got.tags == {
        "rollguard.rollout_id": "r1",
        "rollguard.phase": "shadow",
        "rollguard.baseline_version": "v1",
        "rollguard.candidate_version": "v2",
    }
    assert "rollguard.shadow.infer.divergence_pp: null in shadow_eval.json" in got.skipped
    assert "rollguard.shadow.infer.divergence_pp.ci95_high: null in shadow_eval.json" in got.skipped
    assert "rollguard.shadow.infer.psi: not a number in shadow_eval.json" in got.skipped
    assert "rollguard.shadow.infer.ks.statistic: not a number in shadow_eval.json" in got.skipped
    assert "rollguard.staging.candidate.requests: null in staging_report.json" in got.skipped
    assert any("'Bad Route!'" in line for line in got.skipped)
    assert not [k for k in got.metrics if "Bad" in k]


def test_artifacts_that_were_not_served_give_no_figures() -> None:
    got = figures({STAGING_REPORT: b"not json"})
    assert got.metrics == {} and got.tags == {}
    assert "the figures of shadow_eval.json: it was not available" in got.skipped
    assert any(line.startswith("the figures of staging_report.json: it is not JSON") for line in got.skipped)
    assert "rollguard.rollout.decisions: rollout_decision.txt was not available" in got.skipped


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("file:///tmp/mlruns", "file:///tmp/mlruns"),
        ("sqlite:////var/lib/mlflow.db", "sqlite:////var/lib/mlflow.db"),
        ("postgresql://ml:pw@db:5432/mlflow", "postgresql://***@db:5432/mlflow"),
        ("https://mlflow.example:5000", "https://mlflow.example:5000"),
        ("https://ops:s3cret@mlflow.example/", "https://***@mlflow.example/"),
        ("https://tok3n@mlflow.example", "https://***@mlflow.example"),
        ("databricks", "databricks"),
    ],
)
def test_a_uri_is_printed_without_its_credentials(uri: str, shown: str) -> None:
    assert shown_uri(uri) == shown
