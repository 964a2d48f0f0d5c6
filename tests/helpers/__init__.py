"""Shared test helpers: tests import them from here (``tests.helpers.<module>``), never from conftest.py."""
