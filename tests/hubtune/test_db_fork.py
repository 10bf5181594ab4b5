"""A forked process (Celery's task processes and their replacements) never uses its parent's pooled
PostgreSQL connections: sharing one socket corrupts both sides' sessions."""

from __future__ import annotations

import os

import pytest
from sqlalchemy import text

from hubtune.db import engine_for
from testkit.services import postgres_database


@pytest.fixture(scope="module")
def pg_url():
    with postgres_database("hubtune_fork") as url:
        yield url


def _backend_pid(url: str) -> int:
    with engine_for(url).connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_forked_child_opens_its_own_connection_and_leaves_the_parents_alone(pg_url):
    parent_pid = _backend_pid(pg_url)  # one connection, now idle in the parent's pool
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report its backend pid, or -1 if anything failed
        try:
            os.write(write, str(_backend_pid(pg_url)).encode())
        except BaseException:
            os.write(write, b"-1")
        finally:
            os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    child_pid = int(os.read(read, 64).decode())
    os.close(read)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_pid > 0 and child_pid != parent_pid  # not the parent's socket
    # The parent's pooled connection survived the child (nobody closed it from under the parent).
    assert _backend_pid(pg_url) == parent_pid
    for _ in range(20):  # and it still speaks the protocol: prepared statements included
        assert _backend_pid(pg_url) == parent_pid
