"""The configuration document's primitives: the shipped JSON Schema, key paths, listen addresses, secrets.

Kept apart from ``config.py`` (which builds the frozen :class:`Config`) so the section builders
(``config_edge``, ``config_tls``, ``config_tracing``) can use them without importing the whole builder.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from proxy.config.model import Listen
from proxy.errors import ConfigError

__all__ = ["key_path", "parse_listen", "resolve_secret", "validate_document"]


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


def _explain(err: ValidationError) -> ConfigError:
    path = key_path(err.absolute_path)
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
    file = (base / ref).resolve()
    try:
        secret = file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(path, f"cannot read secret file {file}: {exc.strerror}") from exc
    if not secret:
        raise ConfigError(path, f"secret file {file} is empty")
    return secret
