"""The ``tracing:`` section of a config file -> :class:`TracingConfig` (after the schema has passed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from proxy.config.document import resolve_secret
from proxy.config.model import TracingConfig
from proxy.config.units import parse_duration


def tracing_config(raw: dict[str, Any], base: Path) -> TracingConfig:
    """Defaults for absent keys; header values are secrets (``env:NAME`` / ``file:PATH``), resolved here so
    a missing one fails at start-up (naming its key path), not at the first export."""
    d = TracingConfig()
    headers = tuple(
        (name.lower(), resolve_secret(value, f"tracing.headers.{name}", base))
        for name, value in raw.get("headers", {}).items()
    )
    return TracingConfig(
        exporter=raw.get("exporter", d.exporter),
        endpoint=raw.get("endpoint", d.endpoint),
        sample_ratio=float(raw.get("sample_ratio", d.sample_ratio)),
        service_name=raw.get("service_name", d.service_name),
        headers=headers,
        timeout=parse_duration(raw.get("timeout", d.timeout)),
        queue_size=int(raw.get("queue_size", d.queue_size)),
    )
