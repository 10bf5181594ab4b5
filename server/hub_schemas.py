"""API shapes for /v1/hub: credentials (the token is write-only), triggers and webhook answers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr

from hubtune.models import HubCredential, Trigger
from hubtune.spec import JobRequest


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here, naming the field, rather than fail the insert.
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]


class CredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(default="", max_length=128)
    # SecretStr: never echoed, never in a validation error's input.
    token: SecretStr = Field(min_length=1, max_length=4096)


class CredentialPublic(BaseModel):
    id: str
    object: Literal["hub.credential"] = "hub.credential"
    name: str
    created_at: int

    @classmethod
    def of(cls, row: HubCredential) -> CredentialPublic:
        return cls(id=row.id, name=row.name, created_at=int(row.created_at))


class CredentialList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CredentialPublic]
    has_more: bool = False


class TriggerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The dataset repo to watch; the job's hub dataset files in this repo are pinned to each new commit.
    repo_id: Text = Field(min_length=1, max_length=96)
    # Only changes to files matching this glob (e.g. "data/*.jsonl") start a job; None: any change.
    path_pattern: Text | None = Field(default=None, min_length=1, max_length=256)
    job: JobRequest


class TriggerPublic(BaseModel):
    id: str
    object: Literal["hub.trigger"] = "hub.trigger"
    repo_id: str
    path_pattern: str | None
    job: dict[str, Any]
    created_at: int

    @classmethod
    def of(cls, row: Trigger) -> TriggerPublic:
        return cls(id=row.id, repo_id=row.repo_id, path_pattern=row.path_pattern, job=row.template,
                   created_at=int(row.created_at))


class TriggerList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TriggerPublic]
    has_more: bool = False


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


class WebhookAnswer(BaseModel):
    object: Literal["hub.webhook_delivery"] = "hub.webhook_delivery"
    jobs: list[str] = []
    # trigger id -> why it started nothing (already handled, no matching file changed, ...)
    skipped: dict[str, str] = {}
    ignored: str | None = None
