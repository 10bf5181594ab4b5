"""Fixtures for the API server tests.

Databases: a fresh PostgreSQL database per test session (`hubtune_test_server_<random>`, migrated with
hubtune.migrate.upgrade and dropped at the end) and a migrated SQLite file; `db_url` runs a test on
both. A PostgreSQL or Redis that does not answer fails the tests that need it, never skips them
(testkit.services).

Doorbells: each app gets its own settings with the file-system Celery transport in the test's tmp
dir, so `doorbells()` can read exactly the messages that app published.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hubtune.db import engine_for
from hubtune.migrate import upgrade
from tests.server.apitest_helpers import Env, make_env, serve
from testkit import services
from testkit.services import postgres_database

REDIS_DB = 14  # tests/e2e uses 13


# --- databases --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_database("hubtune_test_server") as url:
        yield url


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'hubtune.db'}"
    upgrade(url)
    yield url
    engine_for(url).dispose()


@pytest.fixture(params=["postgres", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


# --- the app ---------------------------------------------------------------------------------------


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> Env:
    return make_env(db_url, tmp_path / "data")


@pytest.fixture
def pg_env(postgres_url: str, tmp_path: Path) -> Env:
    return make_env(postgres_url, tmp_path / "data")


@pytest.fixture
def env_factory(db_url: str, tmp_path: Path) -> Callable[..., Env]:
    def factory(**overrides) -> Env:
        return make_env(db_url, tmp_path / f"data-{secrets.token_hex(3)}", **overrides)

    return factory


# --- a real server for the openai client -------------------------------------------------------------


@pytest.fixture
def live_server(pg_env: Env) -> Iterator[tuple[Env, str]]:
    """uvicorn serving the app on 127.0.0.1:<free port> in a background thread; yields (env, base_url)."""
    with serve(pg_env.app) as url:
        yield pg_env, f"{url}/v1"


@pytest.fixture
def redis_url() -> Iterator[str]:
    """Redis database 14, flushed before and after."""
    import redis

    url = services.redis_url(REDIS_DB)
    yield url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
