"""The package version, in one place (read by pyproject's dynamic version and the admin API)."""

__version__ = "0.1.0"
