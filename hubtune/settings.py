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

    # Artifact storage (uploaded files, checkpoints, artifacts): empty keeps them in <data_dir>/storage
    # (one machine); s3://bucket/prefix puts them in S3-compatible object storage, for workers on other
    # machines (credentials and endpoint from the standard AWS_* variables). Each process then keeps a
    # local cache under data_dir of at most cache_max_bytes, and waits out a storage outage for up to
    # storage_retry_seconds per request before the work is put back to be retried.
    storage_url: str = ""
    cache_max_bytes: int = Field(default=20 * 1024**3, gt=0)
    storage_retry_seconds: float = Field(default=300.0, gt=0)

    hub_backend: Literal["local", "hf"] = "local"
    hub_endpoint: str | None = None
    hub_token: SecretStr | None = None
    hub_dir: Path | None = None
    # The namespace a job's repo lands in when the request names no hub.repo_id.
    hub_namespace: str | None = None
    # Job creation asks the hub whether the base model exists (a 400 when it does not) and waits this
    # long for the answer; a slower hub leaves it to prepare. 0: never ask at creation.
    model_check_seconds: float = Field(default=2.0, ge=0, le=60)

    host: str = "127.0.0.1"
    port: int = 8000

    # Worker behaviour.
    worker_concurrency: int = 1
    lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    # A worker whose data dir has less free space than this takes no job (another machine will), and a
    # job it was training when its disk filled goes back to the queue (worker/disk.py). 0: no check.
    min_free_disk_bytes: int = Field(default=100 * 1024 * 1024, ge=0)
    # GPU workers recycle their process after each job so that CUDA memory is always returned.
    worker_max_tasks_per_child: int | None = None
    # The worker imports torch/transformers/peft before forking its task processes, not during their
    # first job, and freezes those objects out of the cyclic GC (worker/warm.py). Off: import on first use.
    worker_preload: bool = True

    # The sweeper (issue 6): how often it runs, and how long a queued or validating job may sit
    # without progress before its doorbell is rung again (a lost message; a duplicate is harmless).
    sweep_interval_seconds: float = Field(default=10.0, gt=0)
    requeue_after_seconds: float = Field(default=60.0, gt=0)

    # Limits and fairness (issue 6); 0 means no limit.
    max_running_jobs_per_owner: int = Field(default=0, ge=0)
    max_queued_jobs_per_owner: int = Field(default=0, ge=0)
    # Requests per minute per API key (or client address before auth); 0: no rate limit.
    rate_limit_per_minute: int = Field(default=0, ge=0)
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    # A training file line longer than this is refused with its line number.
    max_line_bytes: int = Field(default=1024 * 1024, gt=0)

    # Dashboard sessions (issue 5): the cookie-signing secret; empty: one generated once into
    # <data_dir>/session.secret (mode 0600). Sessions last session_hours.
    session_secret: SecretStr | None = None
    session_hours: float = Field(default=12.0, gt=0)
    # Set the session cookie's Secure flag (serve the dashboard over HTTPS when this is on).
    session_cookie_secure: bool = False

    # Hub plugin (issue 4). Encryption key for secrets at rest (hub credentials); empty: a key generated
    # once into <data_dir>/secret.key (mode 0600), which every process sharing the data dir reads.
    secret_key: SecretStr | None = None
    # Publishing retries on connection errors, 5xx and conflicts: attempts in all, delay doubling from base.
    hub_publish_attempts: int = Field(default=5, ge=1, le=50)
    hub_retry_base_seconds: float = Field(default=2.0, ge=0)
    # Comma-separated repo ids whose custom code may run (trust_remote_code); empty: none.
    trust_remote_code_repos: str = ""
    # Shared secret the hub sends in X-Webhook-Secret; unset: hub webhooks are refused (401).
    hub_webhook_secret: SecretStr | None = None
    # Completion notifications (job.webhook_url), signed as Standard Webhooks / OpenAI do with a whsec_
    # secret; unset: one generated once into <data_dir>/webhook.secret (mode 0600).
    webhook_secret: SecretStr | None = None
    # Comma-separated host names (or *.domain) a webhook_url may name; empty: any public host.
    webhook_allowed_hosts: str = ""
    # Comma-separated private/loopback addresses or networks (CIDR) a webhook_url may reach anyway.
    webhook_allowed_private: str = ""
    webhook_attempts: int = Field(default=5, ge=1, le=50)
    webhook_retry_base_seconds: float = Field(default=2.0, ge=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)

    # Experiment tracking (job.integrations, worker/tracking.py). The MLflow server a job's run goes to
    # when its integration names none; empty: jobs must name an allowed one.
    mlflow_tracking_uri: str = ""
    # Comma-separated tracking URIs a job may name besides mlflow_tracking_uri, matched exactly: a user
    # must not make the worker send requests to a host of their choosing.
    mlflow_allowed_tracking_uris: str = ""
    # wandb integrations are refused unless the deployment turns them on; wandb then runs in this mode
    # ("offline" writes its files into the artifact's wandb/ folder and sends nothing).
    wandb_enabled: bool = False
    wandb_mode: Literal["offline", "online"] = "offline"

    @property
    def mlflow_allowed_tracking_uri_list(self) -> list[str]:
        return _csv(self.mlflow_allowed_tracking_uris)

    def trusts_remote_code(self, repo_id: str) -> bool:
        return repo_id in _csv(self.trust_remote_code_repos)

    @property
    def webhook_allowed_host_list(self) -> list[str]:
        return _csv(self.webhook_allowed_hosts)

    @property
    def webhook_allowed_private_list(self) -> list[str]:
        return _csv(self.webhook_allowed_private)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'hubtune.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        # A host in the URL, though the file-system transport ignores it: without one kombu warns
        # "No hostname was supplied" on every connection, in the demo's output too.
        return self.broker_url or "filesystem://localhost/"

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


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
