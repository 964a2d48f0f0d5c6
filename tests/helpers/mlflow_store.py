"""A local MLflow tracking store for tests (a file store in a folder), driven from a child process.

MLflow is never imported into the test process: it loads about a thousand modules (OpenTelemetry's SDK
among them) that the rest of the suite must not inherit. Each call below runs
``python -m tests.helpers.mlflow_store ...`` and reads its JSON answer. MLflow 3 refuses a file store
unless ``MLFLOW_ALLOW_FILE_STORE=true`` (:data:`STORE_ENV`, which the CLI under test needs too).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.helpers.paths import ROOT

STORE_ENV = {"MLFLOW_ALLOW_FILE_STORE": "true"}
BOUND = 60  # seconds one call may take (importing MLflow alone takes one or two)


def mlflow_missing() -> str | None:
    """Why the MLflow tests cannot run here, or None."""
    if importlib.util.find_spec("mlflow") is None:
        return "mlflow-skinny is not installed (make venv installs the mlflow extra)"
    return None


def store_uri(folder: Path) -> str:
    return folder.resolve().as_uri()


def _call(*args: str) -> Any:
    res = subprocess.run(
        [sys.executable, "-m", "tests.helpers.mlflow_store", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **STORE_ENV},
        timeout=BOUND,
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.splitlines()[-1])


@dataclass(frozen=True)
class Run:
    id: str
    artifacts: Path  # the run's artifact folder in the file store


def create_run(uri: str, *, end: str | None = None, delete: bool = False) -> Run:
    """A new run in a new experiment; ended with status ``end`` (``FINISHED``, ...) and/or deleted."""
    flags = [*(["--end", end] if end else []), *(["--delete"] if delete else [])]
    doc = _call("create", uri, *flags)
    return Run(id=doc["run_id"], artifacts=Path(urlsplit(doc["artifact_uri"]).path))


def read_run(uri: str, run_id: str) -> dict[str, Any]:
    """The run as MLflow gives it back: status, lifecycle_stage, metrics, tags, and every artifact's
    path with its bytes."""
    doc: dict[str, Any] = _call("read", uri, run_id)
    doc["artifacts"] = {path: base64.b64decode(data) for path, data in doc["artifacts"].items()}
    return doc


def _main(argv: list[str]) -> None:
    import tempfile
    import uuid

    from mlflow import MlflowClient

    command, uri, *rest = argv
    client = MlflowClient(tracking_uri=uri)
    if command == "create":
        experiment = client.create_experiment(f"rollguard-test-{uuid.uuid4().hex}")
        info = client.create_run(experiment).info
        run_id = info.run_id
        if "--end" in rest:
            client.set_terminated(run_id, status=rest[rest.index("--end") + 1])
        if "--delete" in rest:
            client.delete_run(run_id)
        print(json.dumps({"run_id": run_id, "artifact_uri": info.artifact_uri}))
        return
    (run_id,) = rest
    run = client.get_run(run_id)
    artifacts: dict[str, str] = {}
    pending = [""]
    with tempfile.TemporaryDirectory() as tmp:
        while pending:
            for entry in client.list_artifacts(run_id, pending.pop() or None):
                if entry.is_dir:
                    pending.append(entry.path)
                else:
                    local = client.download_artifacts(run_id, entry.path, tmp)
                    artifacts[entry.path] = base64.b64encode(Path(local).read_bytes()).decode()
    print(
        json.dumps(
            {
                "status": run.info.status,
                "lifecycle_stage": run.info.lifecycle_stage,
                "metrics": run.data.metrics,
                "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
                "artifacts": artifacts,
            }
        )
    )


if __name__ == "__main__":
    _main(sys.argv[1:])
