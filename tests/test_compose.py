"""docker-compose.yml as Compose itself reads it (Debian's ``docker-compose config``, no Docker engine).

What broke for a user before: the sample models inherited the image's HEALTHCHECK on a port they do not
serve, and the config baked into the image meant a SIGHUP could never see an edit on the host.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.helpers.paths import ROOT

ENV = {
    "ROLLGUARD_OPERATOR_TOKEN": "op",
    "ROLLGUARD_VIEWER_TOKEN": "viewer",
    "ROLLGUARD_PII_KEY": "pii-key",
    "GRAFANA_ADMIN_PASSWORD": "grafana",
}


def compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must validate docker-compose.yml: Debian's docker-compose is missing")
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    clean = {k: v for k, v in os.environ.items() if k not in ENV}
    return subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), "config"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    res = compose_config(**ENV)
    assert res.returncode == 0, res.stderr
    doc: dict[str, Any] = yaml.safe_load(res.stdout)
    return dict(doc["services"])


def test_every_sample_model_is_probed_on_the_port_it_serves(services: dict[str, Any]) -> None:
    for name, port in (("baseline", "9001"), ("candidate", "9002")):
        probe = " ".join(services[name]["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/healthz" in probe, (name, probe)
        assert port in services[name]["command"]
    # ...so the proxy can wait for them to be healthy, not merely started.
    assert services["rollguard"]["depends_on"] == {
        "baseline": {"condition": "service_healthy"},
        "candidate": {"condition": "service_healthy"},
    }


def test_the_proxy_reads_the_hosts_config_folder(services: dict[str, Any]) -> None:
    volumes = services["rollguard"]["volumes"]
    mounts = {v["target"]: v for v in volumes} if isinstance(volumes[0], dict) else {}
    if not mounts:  # compose v1 prints "source:target:mode" strings
        mounts = {
            v.split(":")[1]: {"source": v.split(":")[0], "read_only": v.endswith(":ro")} for v in volumes
        }
    config = mounts["/app/config"]
    assert config["source"] == str(ROOT / "config") and config["read_only"] is True, config
    # The image's default command reads exactly that folder's file.
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert '"--config", "/app/config/docker.yaml"' in dockerfile
    assert (ROOT / "config" / "docker.yaml").is_file()


@pytest.mark.parametrize("missing", sorted(ENV))
def test_every_secret_the_stack_needs_is_asked_for_by_name(missing: str) -> None:
    res = compose_config(**{k: v for k, v in ENV.items() if k != missing})
    assert res.returncode != 0
    assert missing in res.stderr, res.stderr


def test_the_image_is_built_on_a_base_pinned_by_digest() -> None:
    # A tag moves under a rebuild; a digest is the same bytes until someone changes it here.
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim@sha256:[0-9a-f]{64}$", dockerfile, re.M)
    assert [line for line in dockerfile.splitlines() if line.startswith("FROM ")] == ["FROM ${PYTHON_IMAGE}"]
