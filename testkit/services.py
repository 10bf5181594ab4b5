"""Real PostgreSQL and Redis for tests. A missing service fails the tests that need it, never skips them."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN_DSN = os.environ.get("HUBTUNE_TEST_PG", "host=127.0.0.1 port=5432 dbname=test user=postgres")
PG_URL_BASE = os.environ.get("HUBTUNE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
# A private redis-server (HUBTUNE_TEST_REDIS_PORT) keeps parallel test runs from flushing each other's queues.
REDIS_HOST, REDIS_PORT = "127.0.0.1", int(os.environ.get("HUBTUNE_TEST_REDIS_PORT", "6379"))


def missing(service: str, exc: Exception) -> None:
    pytest.fail(f"{service} is not reachable: {exc} (the README's test command needs it running)")


def _admin():
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        missing("PostgreSQL", exc)


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database; dropped afterwards.

    No admin connection stays open meanwhile: the server's max_connections (100 by default) is then all
    the caller's, which bench/claim_sim.py's 100 claimers need, one connection each."""
    from hubtune.migrate import upgrade

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_URL_BASE}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        from hubtune.db import engine_for

        engine_for(url).dispose()
        with _admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def redis_url(db: int) -> str:
    """A Redis database number of its own, emptied first."""
    import redis

    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db, socket_connect_timeout=3)
    try:
        client.flushdb()
    except redis.ConnectionError as exc:
        missing("Redis", exc)
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
