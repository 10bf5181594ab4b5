"""Engine and sessions. SQLite gets WAL and a busy timeout so the server and a worker can share it."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from hubtune.settings import get_settings


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _json_text(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (valid JSON, not UTF-8): escaped, as before
        return json.dumps(value)
    return text


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # JSON as UTF-8, not \u escapes: SQLite's JSON paths match an object's keys as written, so a job's
        # metadata key "équipe" is only found by spec -> metadata -> équipe when stored unescaped.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               json_serializer=_json_text)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pre_ping: a restarted PostgreSQL must not hand out dead pooled connections.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    with _engines_lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
        return _engines[url]


def _forget_inherited_connections() -> None:
    # A forked process (a Celery task process, a replacement for one, a distributed rank) must never use
    # its parent's pooled connections: two processes on one PostgreSQL socket corrupt the protocol
    # ("prepared statement already exists"). dispose(close=False) drops them here without closing them
    # under the parent; this process opens its own. The lock is new too: a fork copies it in whatever
    # state another thread of the parent left it.
    global _engines_lock
    _engines_lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)


@lru_cache(maxsize=8)
def _factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=engine_for(url), expire_on_commit=False)


def new_session() -> Session:
    return _factory(get_settings().resolved_database_url)()


# session.info key: the session's transactions may not sit idle longer than the lease margin (below).
BOUND_IDLE = "hubtune_bound_idle"


def idle_transaction_limit_ms() -> int:
    """How long a session_scope() transaction may sit idle between statements before PostgreSQL ends it:
    the margin in which a lease is surely still its holder's (worker/lease.py), in milliseconds."""
    settings = get_settings()
    return int(max(settings.lease_seconds - settings.heartbeat_seconds, settings.lease_seconds / 2) * 1000)


@event.listens_for(Session, "after_begin")
def _bound_idle_transaction(session: Session, _transaction, connection) -> None:
    # A process frozen (SIGSTOP, a stalled VM) inside a transaction keeps its row locks while it is
    # frozen: a worker's job row, after the fenced UPDATE of a heartbeat, a metrics flush or a checkpoint.
    # The sweeper's re-queue of that job then waited on the lock for ever, and so did the takeover
    # (RELIABILITY.md, "Rerun on a quiet machine"). session_scope()'s transactions are a few statements
    # long, so PostgreSQL may end one left idle for longer than the lease's margin: its writes roll back
    # (a live holder retries them, a stale one finds its lease lost) and the lock is released before the
    # lease can expire. Set when the transaction really begins (its first statement), so that it opens
    # no earlier than before; API request sessions (server/deps.py) are not bounded.
    if session.info.get(BOUND_IDLE) and connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SET LOCAL idle_in_transaction_session_timeout = {idle_transaction_limit_ms()}")


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on error (and, on PostgreSQL, is
    ended by the server if it sits idle past the lease margin: _bound_idle_transaction)."""
    session = new_session()
    session.info[BOUND_IDLE] = True
    try:
        with session.begin():
            yield session
    finally:
        session.close()
