"""One typed settings object, read once from HUBTUNE_* environment variables (and a .env file)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUBTUNE_", env_file=".env", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Path(".hubtune")
    # Empty means the embedded defaults under data_dir: SQLite and the file-system queue.
    database_url: str = ""
    broker_url: str = ""

    hub_backend: Literal["local", "hf"] = "local"
    hub_endpoint: str | None = None
    hub_token: SecretStr | None = None
    hub_dir: Path | None = None
    # The namespace a job's repo lands in when the request names no hub.repo_id.
    hub_namespace: str | None = None

    host: str = "127.0.0.1"
    port: int = 8000

    # Worker behaviour.
    worker_concurrency: int = 1
    lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    # GPU workers recycle their process after each job so that CUDA memory is always returned.
    worker_max_tasks_per_child: int | None = None

    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'hubtune.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def queue_dir(self) -> Path:
        return (self.data_dir / "queue").resolve()

    @property
    def storage_dir(self) -> Path:
        return (self.data_dir / "storage").resolve()

    @property
    def resolved_hub_dir(self) -> Path:
        return (self.hub_dir or self.data_dir / "hub").resolve()

    @property
    def hub_cache_dir(self) -> Path:
        return (self.data_dir / "hub-cache").resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
