"""Config loading: the shipped example, one table of bad files, units, paths, secrets."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.config.load import load_config
from proxy.config.model import Config
from proxy.config.units import parse_duration, parse_size
from proxy.errors import ConfigError
from proxy.rollout.state import weight_to_bp
from tests.helpers.config import config_doc, write_config
from tests.helpers.paths import ROOT
from tests.helpers.tokens import OPERATOR_TOKEN, VIEWER_TOKEN

EXAMPLE = ROOT / "config" / "rollguard.yaml"
EXAMPLE_TOKENS = {
    "ROLLGUARD_OPERATOR_TOKEN": "example-operator-token-4f1c9a",
    "ROLLGUARD_VIEWER_TOKEN": "example-viewer-token-77b2e0",
    "ROLLGUARD_PII_KEY": "example-pii-key-0123456789abcdef",
}


def _check_config(file: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", "check-config", str(file)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def _base(tmp_path: Path) -> dict[str, Any]:
    return config_doc(tmp_path, "http://127.0.0.1:9001", "http://127.0.0.1:9002")


# -- the shipped example ----------------------------------------------------------------------------


def test_shipped_example_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in EXAMPLE_TOKENS.items():
        monkeypatch.setenv(name, value)
    config = load_config(EXAMPLE)
    assert config.source == EXAMPLE.resolve()
    assert (config.baseline.version, config.candidate.version) == ("v1", "v2")
    assert {t.name: t.token for t in config.admin.tokens} == {
        "ops": EXAMPLE_TOKENS["ROLLGUARD_OPERATOR_TOKEN"],
        "grafana": EXAMPLE_TOKENS["ROLLGUARD_VIEWER_TOKEN"],
    }
    # Relative paths are relative to config/, not to the working directory.
    assert config.state.path == ROOT / "var" / "rollguard-state.json"
    (route,) = config.routes
    assert route.request_schema == ROOT / "config" / "schemas" / "infer_request.json"
    assert route.sticky_key is not None and str(route.sticky_key) == "header:x-user-id"
    assert config.limits.max_body_bytes == 10 * 2**20
    assert config.canary.weight == 0


def test_check_config_accepts_the_shipped_example() -> None:
    done = _check_config(EXAMPLE, EXAMPLE_TOKENS)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout


def test_check_config_rejects_a_bad_file_with_exit_2_and_the_key_path(tmp_path: Path) -> None:
    doc = _base(tmp_path)
    doc["canary"] = {"weight": 120}
    done = _check_config(write_config(tmp_path, doc))
    assert done.returncode == 2
    assert "canary.weight: 120 is greater than the maximum of 100" in done.stderr
    assert done.stdout == ""


def test_check_config_starts_nothing(tmp_path: Path) -> None:
    doc = _base(tmp_path)
    done = _check_config(write_config(tmp_path, doc))
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "state").exists()  # no state file, no decision log


# -- bad files: one table -------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any], Path], None]


def _set(*keys: str | int, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any], tmp_path: Path) -> None:
        node: Any = doc
        for k in keys[:-1]:
            node = node.setdefault(k, {}) if isinstance(k, str) else node[k]
        node[keys[-1]] = value

    return mutate


def _two_routes_same_name(doc: dict[str, Any], tmp_path: Path) -> None:
    doc["routes"].append({"name": "infer", "path": "/v2/infer"})


def _bad_json_schema(doc: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "bad_schema.json"
    bad.write_text(json.dumps({"type": 12}), encoding="utf-8")
    doc["routes"][0]["request_schema"] = "bad_schema.json"


def _not_json_schema_file(doc: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    doc["routes"][0]["response_schema"] = "broken.json"


def _listen_pair(data: str, admin: str) -> Mutation:
    def mutate(doc: dict[str, Any], tmp_path: Path) -> None:
        doc["listen"] = data
        doc["admin"]["listen"] = admin

    return mutate


BAD: list[tuple[str, Mutation, str, list[str]]] = [
    # id, change to a valid document, expected key path, words the message must contain
    (
        "weight-over-100",
        _set("canary", "weight", value=120),
        "canary.weight",
        ["120 is greater than the maximum of 100"],
    ),
    ("weight-negative", _set("canary", "weight", value=-1), "canary.weight", ["minimum of 0"]),
    ("weight-3-decimals", _set("canary", "weight", value=12.345), "canary.weight", ["12.345", "0.01"]),
    ("weight-a-string", _set("canary", "weight", value="5"), "canary.weight", ["number"]),
    ("unknown-top-level-key", _set("canery", value={"weight": 5}), "", ["unknown key", "'canery'"]),
    (
        "unknown-nested-key",
        _set("upstreams", "baseline", "tmeout", value="2s"),
        "upstreams.baseline",
        ["unknown key", "'tmeout'"],
    ),
    (
        "bad-duration",
        _set("upstreams", "baseline", "timeout", value="2 seconds"),
        "upstreams.baseline.timeout",
        ["'2 seconds'", "duration"],
    ),
    (
        "zero-duration",
        _set("upstreams", "candidate", "timeout", value=0),
        "upstreams.candidate.timeout",
        ["minimum of 0"],
    ),
    (
        "bad-size",
        _set("limits", "max_body_bytes", value="10 MiB"),
        "limits.max_body_bytes",
        ["'10 MiB'", "size"],
    ),
    (
        "inline-secret",
        _set("admin", "tokens", 0, "token", value="hunter2-inline"),
        "admin.tokens[0].token",
        ["env:NAME", "file:PATH"],
    ),
    (
        "env-secret-not-set",
        _set("admin", "tokens", 0, "token", value="env:RG_TEST_SURELY_NOT_SET"),
        "admin.tokens[0].token",
        ["RG_TEST_SURELY_NOT_SET", "not set"],
    ),
    (
        "file-secret-missing",
        _set("admin", "tokens", 1, "token", value="file:secrets/nope.txt"),
        "admin.tokens[1].token",
        ["nope.txt", "cannot read"],
    ),
    (
        "bad-role",
        _set("admin", "tokens", 0, "role", value="admin"),
        "admin.tokens[0].role",
        ["'admin'", "viewer", "operator"],
    ),
    ("duplicate-route-names", _two_routes_same_name, "routes[1].name", ["'infer'", "earlier route"]),
    (
        "bad-sticky-key",
        _set("routes", 0, "sticky_key", value="query:uid"),
        "routes[0].sticky_key",
        ["'query:uid'", "header:", "cookie:", "json:"],
    ),
    (
        "url-with-a-path",
        _set("upstreams", "baseline", "url", value="http://127.0.0.1:9001/v1"),
        "upstreams.baseline.url",
        ["'http://127.0.0.1:9001/v1'"],
    ),
    (
        "same-version-twice",
        _set("upstreams", "candidate", "version", value="v1"),
        "upstreams.candidate.version",
        ["differ", "'v1'"],
    ),
    (
        "missing-request-schema",
        _set("routes", 0, "request_schema", value="schemas/missing.json"),
        "routes[0].request_schema",
        ["missing.json", "cannot read"],
    ),
    ("invalid-json-schema", _bad_json_schema, "routes[0].request_schema", ["not a valid JSON Schema"]),
    ("schema-not-json", _not_json_schema_file, "routes[0].response_schema", ["not valid JSON"]),
    ("port-over-65535", _set("listen", value="127.0.0.1:65536"), "listen", ["65536", "65535"]),
    (
        "admin-port-over-65535",
        _set("admin", "listen", value="127.0.0.1:99999"),
        "admin.listen",
        ["99999", "65535"],
    ),
    (
        "admin-listen-equals-listen",
        _listen_pair("127.0.0.1:8080", "127.0.0.1:8080"),
        "admin.listen",
        ["must differ from listen"],
    ),
    (
        # Binding 127.0.0.1:8080 next to 0.0.0.0:8080 fails at start: check-config must say so first.
        "admin-listen-inside-wildcard-listen",
        _listen_pair("0.0.0.0:8080", "127.0.0.1:8080"),
        "admin.listen",
        ["must differ from listen"],
    ),
    (
        "replay-over-max-body",
        _set("limits", value={"max_body_bytes": "1MiB", "replay_body_bytes": "2MiB"}),
        "limits.replay_body_bytes",
        ["limits.max_body_bytes"],
    ),
    (
        "bad-trusted-network",
        _set("forwarded", "trusted", value=["127.0.0.1/32", "10.0.0.0/33"]),
        "forwarded.trusted[1]",
        ["'10.0.0.0/33'", "not an IP network"],
    ),
    (
        "bad-method",
        _set("routes", 0, "methods", value=["FETCH"]),
        "routes[0].methods[0]",
        ["'FETCH'", "POST"],
    ),
    (
        "missing-candidate",
        lambda doc, _: doc["upstreams"].pop("candidate"),
        "upstreams",
        ["'candidate'", "required"],
    ),
]


@pytest.mark.parametrize(("mutate", "path", "words"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_config_is_rejected_naming_the_key_path(
    tmp_path: Path, mutate: Mutation, path: str, words: list[str]
) -> None:
    doc = copy.deepcopy(_base(tmp_path))
    mutate(doc, tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, doc))
    err = info.value
    assert err.path == path, str(err)
    assert str(err).startswith(f"{path}: " if path else ""), str(err)
    for word in words:
        assert word in err.message, f"{word!r} not in {err.message!r}"


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    file = tmp_path / "rollguard.yaml"
    file.write_text('listen: "127.0.0.1:0"\nupstreams:\n  baseline: x\n   bad: indent\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(file)
    assert info.value.path == ""
    assert "not valid YAML" in str(info.value)
    assert "line 4" in str(info.value)


def test_yaml_list_instead_of_mapping(tmp_path: Path) -> None:
    file = tmp_path / "rollguard.yaml"
    file.write_text("- listen: 127.0.0.1:0\n- upstreams: {}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a mapping of keys, not list"):
        load_config(file)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


# -- units -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("0.5m", 30.0),
        (3, 3.0),
        (0.75, 0.75),
    ],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["2 s", "2sec", "s", "", "-1s", "1d", "2S"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        (512, 512),
        ("512B", 512),
        ("64KiB", 65_536),
        ("10MiB", 10_485_760),
        ("1GiB", 2**30),
        ("100KB", 100_000),
        ("1MB", 1_000_000),
        ("0", 0),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["10 MiB", "1.5MiB", "10mib", "MiB", "", "-1"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_units_reach_the_config(tmp_path: Path) -> None:
    doc = _base(tmp_path)
    doc["upstreams"]["baseline"].update(timeout="250ms", connect_timeout=0.1, read_timeout="1m")
    doc["limits"] = {"max_body_bytes": "10MiB", "replay_body_bytes": "64KiB", "inspect_body_bytes": 4096}
    config = load_config(write_config(tmp_path, doc))
    assert config.baseline.timeout == pytest.approx(0.25)
    assert config.baseline.connect_timeout == pytest.approx(0.1)
    assert config.baseline.read_timeout == pytest.approx(60.0)
    assert (config.limits.max_body_bytes, config.limits.replay_body_bytes) == (10 * 2**20, 64 * 1024)
    assert config.limits.inspect_body_bytes == 4096
    # The route's deadline defaults to the two upstream timeouts added.
    assert config.routes[0].deadline == pytest.approx(0.25 + 2.0)


# -- paths and secrets -----------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc" / "rollguard"
    (folder / "schemas").mkdir(parents=True)
    for name in ("infer_request.json", "infer_response.json"):
        (folder / "schemas" / name).write_text((ROOT / "config" / "schemas" / name).read_text())
    (folder / "secrets").mkdir()
    (folder / "secrets" / "viewer.txt").write_text("viewer-from-file-token\n", encoding="utf-8")
    doc = _base(tmp_path)
    doc["state"] = {"url": "file:../var/state.json"}
    doc["routes"][0]["request_schema"] = "schemas/infer_request.json"
    doc["routes"][0]["response_schema"] = "./schemas/infer_response.json"
    doc["admin"]["tokens"][1]["token"] = "file:secrets/viewer.txt"
    doc["logging"] = {"access_log": "logs/access.jsonl"}
    file = write_config(folder, doc)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)

    config = load_config(file)

    assert config.state.path == tmp_path / "etc" / "var" / "state.json"
    assert config.routes[0].request_schema == folder / "schemas" / "infer_request.json"
    assert config.routes[0].response_schema == folder / "schemas" / "infer_response.json"
    assert config.logging.access_log == str(folder / "logs" / "access.jsonl")
    assert config.admin.tokens[1].token == "viewer-from-file-token"  # stripped of its newline


def test_config_relative_path_given_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = _base(tmp_path)
    doc["state"] = {"url": "file:state.json"}
    (tmp_path / "conf").mkdir()
    write_config(tmp_path / "conf", doc)
    monkeypatch.chdir(tmp_path)
    config = load_config("conf/rollguard.yaml")
    assert config.state.path == tmp_path / "conf" / "state.json"
    assert config.source == tmp_path / "conf" / "rollguard.yaml"


def _loaded(tmp_path: Path) -> Config:
    (tmp_path / "token.txt").write_text("file-secret-token-xyz\n", encoding="utf-8")
    doc = _base(tmp_path)
    doc["admin"]["tokens"].append({"name": "ci", "role": "operator", "token": "file:token.txt"})
    return load_config(write_config(tmp_path, doc))


def test_repr_never_shows_a_token(tmp_path: Path) -> None:
    config = _loaded(tmp_path)
    secrets = [OPERATOR_TOKEN, VIEWER_TOKEN, "file-secret-token-xyz"]
    assert sorted(t.token for t in config.admin.tokens) == sorted(secrets)
    for text in (repr(config), str(config), repr(config.admin), repr(config.admin.tokens[0])):
        for secret in secrets:
            assert secret not in text
    assert "ops" in repr(config.admin)  # the name stays: it is who, not the secret


def test_config_is_immutable(tmp_path: Path) -> None:
    config = _loaded(tmp_path)
    with pytest.raises(AttributeError):
        config.canary = config.canary  # type: ignore[misc]


def test_same_token_twice_is_rejected_without_echoing_it(tmp_path: Path) -> None:
    doc = _base(tmp_path)
    doc["admin"]["tokens"][1]["token"] = "env:RG_TEST_OPERATOR_TOKEN"
    with pytest.raises(ConfigError) as info:
        load_config(write_config(tmp_path, doc))
    assert info.value.path == "admin.tokens[1].token"
    assert OPERATOR_TOKEN not in str(info.value)


@pytest.mark.parametrize(
    ("sticky", "source", "name"),
    [
        ("header:X-User-Id", "header", "x-user-id"),
        ("cookie:SessionId", "cookie", "SessionId"),
        ("json:/user/id", "json", "/user/id"),
    ],
)
def test_sticky_key_forms(tmp_path: Path, sticky: str, source: str, name: str) -> None:
    doc = _base(tmp_path)
    doc["routes"][0]["sticky_key"] = sticky
    key = load_config(write_config(tmp_path, doc)).routes[0].sticky_key
    assert key is not None and (key.source, key.name) == (source, name)


@pytest.mark.parametrize(("weight", "bp"), [(0, 0), (0.01, 1), (12.34, 1234), (37.5, 3750), (100, 10_000)])
def test_weight_with_two_decimals_is_accepted(tmp_path: Path, weight: float, bp: int) -> None:
    doc = _base(tmp_path)
    doc["canary"] = {"weight": weight}
    assert weight_to_bp(load_config(write_config(tmp_path, doc)).canary.weight) == bp


def test_ipv6_listen(tmp_path: Path) -> None:
    doc = _base(tmp_path)
    doc["listen"] = "[::1]:8080"
    config = load_config(write_config(tmp_path, doc))
    assert (config.listen.host, config.listen.port) == ("::1", 8080)
    assert str(config.listen) == "[::1]:8080"
