"""Where things are in the repository, for tests that read its files (configs, schemas, rules)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository root (the folder holding ``proxy/`` and ``tests/``)."""

SCHEMAS = ROOT / "config" / "schemas"
