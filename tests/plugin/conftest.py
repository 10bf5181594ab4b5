"""Fixtures for the hub plugin tests; `hub_server` is reusable from any test folder:

    from testkit.hubserver import HubServer      # or: pytest_plugins = ["tests.plugin.conftest"]
"""

from __future__ import annotations

import os

import pytest

# Uploads must go through the test server's inline "regular" mode, never Xet (unreachable here).
# huggingface_hub reads this at import time, so set it before anything imports it.
os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from testkit.hubserver import HubServer  # noqa: E402


@pytest.fixture
def hub_server(tmp_path):
    """A running hub-compatible HTTP server on 127.0.0.1 (open: no token required), stopped after the test."""
    with HubServer(tmp_path / "hub-server") as server:
        yield server


@pytest.fixture(autouse=True)
def _isolated_hf_client(tmp_path, monkeypatch):
    # Never use a developer's saved HF token, and never try Xet even if huggingface_hub was imported
    # before this file set HF_HUB_DISABLE_XET (its constants are read at import time).
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
