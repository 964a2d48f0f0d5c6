"""The admin tokens every test config names; the autouse ``_tokens`` fixture puts them in the environment."""

from __future__ import annotations

OPERATOR_TOKEN = "op-token-for-tests-0123456789"
VIEWER_TOKEN = "viewer-token-for-tests-012345"
OPERATOR_TOKEN_ENV = "RG_TEST_OPERATOR_TOKEN"
VIEWER_TOKEN_ENV = "RG_TEST_VIEWER_TOKEN"
