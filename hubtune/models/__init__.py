"""Database models. They import nothing above them (no services, tasks or routes)."""

from hubtune.models.accounts import ApiKey
from hubtune.models.base import Base, now
from hubtune.models.files import File
from hubtune.models.hub import HubCredential, HubDelivery, Notification, Trigger
from hubtune.models.jobs import Checkpoint, Job, JobEvent
from hubtune.models.workers import WorkerRecord

__all__ = ["ApiKey", "Base", "Checkpoint", "File", "HubCredential", "HubDelivery", "Job", "JobEvent", "Notification", "Trigger", "WorkerRecord", "now"]
