"""Which experiment-tracking integrations a deployment allows, checked when a job is created (a 400
naming the field) and again by the worker before it talks to a tracking server (its settings decide
where it sends requests)."""

from __future__ import annotations

from hubtune.errors import JobError
from hubtune.settings import Settings
from hubtune.spec import Integration, JobRequest


def _same_uri(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def mlflow_tracking_uri(integration: Integration, index: int, settings: Settings) -> str:
    """The tracking server a job's MLflow run goes to: the one it names, if the deployment allows it,
    else the deployment's own. Exact matches only, so `http://allowed@evil` or another port is refused."""
    param = f"integrations[{index}].mlflow.tracking_uri"
    asked = integration.mlflow.tracking_uri if integration.mlflow else None
    if asked is None:
        if not settings.mlflow_tracking_uri:
            raise JobError("invalid_integration", "This deployment has no MLflow tracking server "
                           "(HUBTUNE_MLFLOW_TRACKING_URI); name an allowed one in tracking_uri.", param)
        return settings.mlflow_tracking_uri
    allowed = [settings.mlflow_tracking_uri, *settings.mlflow_allowed_tracking_uri_list]
    if not any(uri and _same_uri(asked, uri) for uri in allowed):
        # The allowed list is the operator's to share; the answer does not reveal it.
        raise JobError("invalid_integration", "This tracking_uri is not one this deployment allows "
                       "(HUBTUNE_MLFLOW_ALLOWED_TRACKING_URIS); leave it out to use the deployment's server.", param)
    return asked


def check_integrations(request: JobRequest, settings: Settings) -> None:
    for index, integration in enumerate(request.integrations or []):
        if integration.type == "mlflow":
            mlflow_tracking_uri(integration, index, settings)
        elif integration.type == "wandb" and not settings.wandb_enabled:
            raise JobError("invalid_integration", "wandb integrations are not enabled on this deployment "
                           "(HUBTUNE_WANDB_ENABLED).", f"integrations[{index}].type")
