"""The API server's fixtures (databases, apps) for the security tests."""

from tests.server.conftest import db_url, env, env_factory, live_server, pg_env, postgres_url, sqlite_url  # noqa: F401
