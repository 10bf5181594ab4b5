"""Database models. They import nothing above them (no services, tasks or routes)."""

from hubtune.models.accounts import ApiKey
from hubtune.models.base import Base, now
from hubtune.models.files import File
from hubtune.models.idempotency import IdempotencyKey
from hubtune.models.hub import HubCredential, HubDelivery, Notification, Trigger
from hubtune.models.jobs import Checkpoint, Job, JobEvent
from hubtune.models.workers import WorkerRecord

__all__ = ["ApiKey", "Base", "Checkpoint", "File", "HubCredential", "HubDelivery", "IdempotencyKey", "Job", "JobEvent", "Notification", "Trigger", "WorkerRecord", "now"]
