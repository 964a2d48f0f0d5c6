"""The configuration document's primitives: the shipped JSON Schema, key paths, listen addresses, secrets.

Kept apart from ``config.py`` (which builds the frozen :class:`Config`) so the section builders
(``config_edge``, ``config_tls``, ``config_tracing``) can use them without importing the whole builder.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from proxy.config.model import Listen
from proxy.errors import ConfigError

__all__ = [
    "config_path",
    "finite_numbers",
    "key_path",
    "parse_listen",
    "parse_yaml",
    "resolve_secret",
    "validate_document",
]


def _schema() -> dict[str, Any]:
    text = resources.files("proxy.config").joinpath("schema.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


_VALIDATOR = Draft202012Validator(_schema())


def key_path(parts: Any) -> str:
    """``["canary", "steps", 2]`` -> ``canary.steps[2]``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_SECRET = _schema()["$defs"]["secret"]
# Key names whose value is (or may be) a credential, wherever they stand: their value is never echoed.
_SECRET_WORDS = ("token", "secret", "password", "passwd", "credential", "authorization", "api_key", "apikey")


def _holds_secret(err: ValidationError) -> bool:
    """Whether the value that failed is, or sits where, a secret goes: it must not appear in a message."""
    node: Any = err
    while node is not None:
        if node.schema == _SECRET:
            return True
        node = node.parent
    last = err.absolute_path[-1] if err.absolute_path else ""
    return isinstance(last, str) and any(w in last.lower() for w in _SECRET_WORDS)


def _explain(err: ValidationError) -> ConfigError:
    path = key_path(err.absolute_path)
    if _holds_secret(err):
        # The key path and the rule, never the value: the message reaches stderr, the reload API's 422,
        # the decision log and the audit log.
        rule = _SECRET["description"] if err.validator == "pattern" else err.validator
        return ConfigError(path, f"the value given is not accepted ({rule}); it is not shown")
    if err.validator == "additionalProperties":
        return ConfigError(path, err.message.replace("Additional properties are not allowed", "unknown key"))
    if err.validator in ("pattern", "anyOf", "type"):
        # A regex or a failed alternative says nothing to a reader: use the schema's description of
        # what is expected, from the failing schema or the anyOf that contains it.
        node: Any = err  # ValidationError; .parent is typed loosely in the stubs
        while node is not None:
            desc = node.schema.get("description") if isinstance(node.schema, dict) else None
            if desc:
                return ConfigError(
                    path, f"{node.instance!r} is not valid: expected {desc[0].lower()}{desc[1:]}"
                )
            node = node.parent
    return ConfigError(path, err.message)


def validate_document(doc: Any) -> None:
    """Raise the most relevant schema error, naming its key path."""
    err = best_match(_VALIDATOR.iter_errors(doc))
    if err is not None:
        raise _explain(err)


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error: YAML itself keeps
    the last one silently, so ``listen:`` written twice would serve on whichever came second."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the key {str(key)[:64]!a} is given twice in one mapping",
                key_node.start_mark,
            )
        seen[key] = True
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node, deep=deep))


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_yaml(raw: bytes, file: Path) -> Any:
    """The document in ``raw``: UTF-8 YAML with unique keys. ConfigError (whole file) otherwise."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError("", f"{file} is not UTF-8 text (byte {exc.start} cannot be decoded)") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError("", f"{file} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc


def finite_numbers(doc: Any, at: list[str | int] | None = None) -> None:
    """Refuse NaN and infinities anywhere (YAML's ``.nan``, ``.inf``, ``1e400``): no setting means them,
    and one that slips through breaks arithmetic far from the file (a timeout of inf, a weight of NaN)."""
    at = at or []
    if isinstance(doc, float) and not math.isfinite(doc):
        raise ConfigError(key_path(at), f"{doc} is not a finite number")
    if isinstance(doc, dict):
        for k, v in doc.items():
            finite_numbers(v, [*at, str(k)])
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            finite_numbers(v, [*at, i])


def config_path(base: Path, value: str, at: str) -> Path:
    """A file named in the config, absolute (relative to the config's folder); a path that cannot be
    resolved (a symlink loop) is a ConfigError at ``at``, not a traceback."""
    try:
        return (base / value).resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: a symlink loop, on Python before 3.13
        raise ConfigError(at, f"cannot resolve the path {value[:200]!a}: {exc}") from exc


def parse_listen(value: str, path: str) -> Listen:
    host, _, port = value.rpartition(":")
    port_n = int(port)
    if port_n > 65535:
        raise ConfigError(path, f"port {port_n} is greater than 65535")
    return Listen(host=host.strip("[]"), port=port_n)


def resolve_secret(value: str, path: str, base: Path) -> str:
    """``env:NAME`` or ``file:PATH`` (relative to the config's folder) -> the secret's text."""
    kind, _, ref = value.partition(":")
    if kind == "env":
        secret = os.environ.get(ref)
        if not secret:
            raise ConfigError(path, f"environment variable {ref} is not set or empty")
        return secret
    file = config_path(base, ref, path)
    try:
        secret = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(path, f"cannot read secret file {file}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(path, f"secret file {file} is not UTF-8 text") from exc
    if not secret:
        raise ConfigError(path, f"secret file {file} is empty")
    return secret
