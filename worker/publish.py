"""publish: push the trained artifact to the hub in one commit, with a model card; then succeeded.

Retries with exponential backoff while the hub is unreachable, answers 5xx or the branch moved under
us; fails fast on 401/403/404 with an error saying what to fix. The artifact stays in storage whatever
happens, so `POST /v1/fine_tuning/jobs/{id}/publish` can push it again without retraining.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from hubtune.db import session_scope
from hubtune.lifecycle import (
    CLAIMED_BY, HANDED_TO, WARN, LeaseLost, Stage, Status, claim_stage, release_stage, transition,
)
from hubtune.models import Job, JobEvent, WorkerRecord
from hubtune.namespaces import NamespaceRefused, Rights, rights_for, write_refusal
from hubtune.queue import PUBLISH, ring
from hubtune.settings import Settings
from hubtune.spec import JobRequest
from hubtune.step_events import SERIES_TYPES
from hubtune.storage import StorageUnavailable, open_storage
from plugin import Hub, parse_dataset_ref, read_card_metadata, render_model_card, split_model_ref
from plugin.modelcard import dpo_section, learning_rate_search_section, searched_hyperparameters
from plugin.errors import HubAuthError, HubError, RepoNotFound
from worker.disk import disk_full, hand_on, short_of_space
from worker.failures import job_error
from worker.hub import owner_hub
from worker.lease import Lease
from worker.lineage import card_base, lineage_lines
from worker.train import worker_name

log = logging.getLogger(__name__)
LOSS_CURVE = "loss_curve.png"
# Training state a checkpoint keeps for resuming; the hub only needs the weights and configs.
CHECKPOINT_SKIP = ("optimizer.pt", "scheduler.pt", "rng_state", "trainer_state.json", "training_args.bin",
                   "scaler.pt")


def run_publish(job_id: str, settings: Settings) -> None:
    if short_of_space(settings):  # the artifact copy needs room: another worker publishes
        log.warning("publish %s: data dir short of space; leaving it to another worker", job_id)
        hand_on(PUBLISH, job_id)
        return
    with session_scope() as session:
        token = claim_stage(session, job_id, stage=Stage.PUBLISHING, owner=worker_name(),
                            lease_seconds=settings.lease_seconds)
        if token is None:
            return
        job = _snapshot(session, job_id)
    request = JobRequest.model_validate(job["spec"])
    storage = open_storage(settings)
    repo_id = target_repo(request, owner=job["owner"], job_id=job_id, namespace=settings.hub_namespace,
                          lineage=job["lineage"])
    branch = request.hub.branch if request.hub else "main"
    private = request.hub.private if request.hub else True
    try:
        with Lease(job_id, token, lease_seconds=settings.lease_seconds,
                   heartbeat_seconds=settings.heartbeat_seconds) as lease:
            hub = _hub_allowed(settings, job["owner"], job["rights"], request)
            job["artifact"] = storage.artifact_copy(job["artifact_path"])  # a whole, checked local copy
            _write_card(hub, job, request, repo_id)
            if request.hub and request.hub.merge:
                _write_merged(hub, job, request)
            commit = publish_with_retries(
                hub, settings, repo_id, folder=job["artifact"], message=f"hubtune fine-tuning job {job_id}",
                branch=branch, private=private, on_retry=lambda text: lease.write(text, level=WARN),
            )
    except LeaseLost:
        log.info("publish %s: lease lost (cancelled); stopping", job_id)
        return
    except (StorageUnavailable, OSError) as exc:
        if isinstance(exc, OSError) and not disk_full(exc, settings):
            log.warning("publish %s failed: %s", job_id, exc)
            _fail(job_id, token, exc, repo_id)
            return
        # The artifact is safe in the store, which is down or this disk full: publish is rung again later.
        log.warning("publish %s: %s", job_id, exc)
        with session_scope() as session:
            why = "Artifact storage is unreachable" if isinstance(exc, StorageUnavailable) else \
                f"Worker {worker_name()} ran out of disk space"
            release_stage(session, job_id, token=token, message=f"{why}; publishing will be retried ({exc})")
            if not isinstance(exc, StorageUnavailable):  # another worker may publish now; an outage waits
                ring(session, PUBLISH, job_id)
        return
    except Exception as exc:
        log.warning("publish %s failed: %s", job_id, exc)
        _fail(job_id, token, exc, repo_id)
        return
    with session_scope() as session:
        transition(
            session, job_id, Status.SUCCEEDED, expect=Status.RUNNING, expect_token=token,
            message=f"Fine-tuning job succeeded; adapter pushed to {repo_id}@{commit}",
            data={"repo_id": repo_id, "commit": commit, "branch": branch},
            fine_tuned_model=f"{repo_id}@{commit}", hub_repo=repo_id, hub_commit=commit, stage=None, error=None,
        )


def publish_with_retries(hub: Hub, settings: Settings, repo_id: str, *, folder: Path, message: str,
                         branch: str, private: bool, on_retry=None) -> str:
    """hub.publish, tried `hub_publish_attempts` times while the error is retryable (unreachable, 5xx,
    429, branch moved), waiting `hub_retry_base_seconds` * 2^n in between."""
    attempts = settings.hub_publish_attempts
    for attempt in range(1, attempts + 1):
        try:
            return hub.publish(repo_id, folder=folder, message=message, branch=branch, private=private)
        except HubError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            delay = settings.hub_retry_base_seconds * 2 ** (attempt - 1)
            if on_retry is not None:
                on_retry(f"Hub push attempt {attempt} of {attempts} failed ({exc.code}): {exc}; "
                         f"retrying in {delay:g}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def _fail(job_id: str, token: int, exc: Exception, repo_id: str) -> None:
    error = job_error(exc)
    if error["code"] == "internal_error":
        error["code"] = "publish_failed"
    hint = ""
    if isinstance(exc, HubAuthError):
        hint = f" The hub token may not write to '{repo_id}': check the token or the repo's access rights."
    elif isinstance(exc, RepoNotFound):
        hint = f" Check that the namespace of '{repo_id}' exists and that the token can see it."
    error["message"] = (f"Publishing to the hub failed: {error['message'].rstrip('.')}.{hint} "
                        "The trained artifact is kept; "
                        f"POST /v1/fine_tuning/jobs/{job_id}/publish pushes it again without retraining.")
    error["param"] = error.get("param") or "hub"
    with session_scope() as session:
        transition(session, job_id, Status.FAILED, expect=Status.RUNNING, expect_token=token, level="error",
                   message=error["message"], error=error, stage=None)


def _hub_allowed(settings: Settings, owner: str, rights: Rights, request: JobRequest) -> Hub:
    """The hub to publish `request` to; NamespaceRefused when that is the server's own access and the
    job's key (its current row: grants change, keys get revoked) may not write to the repo."""
    hub, server_access = owner_hub(settings, owner)
    repo_id = request.hub.repo_id if request.hub else None  # None: the server names it (always allowed)
    if server_access and (why := write_refusal(rights, repo_id)) is not None:
        raise NamespaceRefused(why)
    return hub


def target_repo(request: JobRequest, *, owner: str, job_id: str, namespace: str | None,
                lineage: dict[str, Any] | None = None) -> str:
    """The request's hub.repo_id, else `<namespace>/<model name>-<suffix or job id>`; the namespace is
    the server's hub_namespace setting when set, else the owner. A continued job is named after the
    first base model of its chain (its `model` is a job or checkpoint id)."""
    if request.hub and request.hub.repo_id:
        return request.hub.repo_id
    namespace = namespace or owner
    root = (lineage or {}).get("root")
    base = (root or split_model_ref(request.model)[0]).split("/")[-1]
    name = f"{base}-{request.suffix or job_id}"
    return f"{_slug(namespace)}/{_slug(name)}"[:96]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "hubtune"


# --- what the card is made of ------------------------------------------------------------------------


def _snapshot(session, job_id: str) -> dict[str, Any]:
    job = session.get(Job, job_id)
    events = session.execute(
        select(JobEvent.created_at, JobEvent.type, JobEvent.message, JobEvent.data)
        .where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    ).all()
    trained_on = _training_worker(events)
    worker = session.get(WorkerRecord, trained_on) if trained_on else None
    return {
        "id": job.id, "owner": job.owner, "spec": job.spec, "lineage": job.lineage,
        "rights": rights_for(session, key_id=job.key_id, owner=job.owner), "model_revision": job.model_revision,
        "hyperparameters": job.hyperparameters, "result": job.result or {}, "data_report": job.data_report,
        "artifact_path": job.artifact_path, "dataset_revisions": job.dataset_revisions or {},
        "training_file": job.training_file, "validation_file": job.validation_file,
        "curve": [e.data for e in events if e.type in SERIES_TYPES and e.data],  # every step, shown or not
        "duration": _training_seconds(events), "worker": trained_on,
        "resources": dict(worker.resources) if worker is not None else None,
    }


def _claims(events) -> list:
    """The events of the job's claims by a training worker, oldest first (hubtune.lifecycle.claim)."""
    return [e for e in events if (e.data or {}).get(CLAIMED_BY)]


def _training_worker(events) -> str | None:
    """The worker that trained the job to the end: the last one to claim it."""
    claims = _claims(events)
    return claims[-1].data[CLAIMED_BY] if claims else None


def _training_seconds(events) -> float | None:
    """From the first claim (retries included) to the hand-over to publishing."""
    claims = _claims(events)
    finished = [e.created_at for e in events if (e.data or {}).get(HANDED_TO) == Stage.PUBLISHING.value]
    return finished[-1] - claims[0].created_at if claims and finished else None


def _write_card(hub: Hub, job: dict[str, Any], request: JobRequest, repo_id: str) -> None:
    folder: Path = job["artifact"]
    result = job["result"]
    base_model, base_revision = card_base(job["lineage"], request, job["model_revision"])
    metrics = dict(result.get("metrics") or {})
    evaluation = result.get("evaluation") if isinstance(result.get("evaluation"), dict) else None
    (folder / "metrics.json").write_text(json.dumps(
        {"metrics": metrics, "evaluation": evaluation, "steps": result.get("steps"),
         "trainable_params": result.get("trainable_params"), "total_params": result.get("total_params"),
         "data_report": job["data_report"]}, indent=2, default=str))
    curve = _plot_loss_curve(job["curve"], folder / LOSS_CURVE)
    kind = request.tuning.type
    library = "transformers" if kind == "full" else ("peft" if (folder / "adapter_config.json").is_file() else "hubtune")
    card = render_model_card(
        repo_id=repo_id, base_model=base_model, base_model_revision=base_revision, task=request.task,
        tuning=_tuning_summary(request),
        hyperparameters=searched_hyperparameters(job["hyperparameters"] or {}, result.get("search")),
        datasets=_hub_datasets(job),
        metrics={} if evaluation else {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        evaluation=evaluation, library_name=library, tags=["hubtune", kind, request.task],
        license=_base_license(hub, base_model, base_revision),
        base_model_relation=None if kind == "full" else "adapter",
        sections=_sections(job, request), loss_curve=LOSS_CURVE if curve else None,
        data_format=(job["data_report"] or {}).get("format"), branch=request.hub.branch if request.hub else None,
    )
    (folder / "README.md").write_text(card)
    _point_adapter_at_hub(folder, base_model, base_revision)


# The tuning fields that mean something for each method (the rest of the spec is other methods' knobs).
TUNING_FIELDS = {
    "lora": ("r", "alpha", "dropout", "target_modules", "use_dora", "use_rslora"),
    "qlora": ("r", "alpha", "dropout", "target_modules", "use_dora", "use_rslora"),
    "adapter": ("bottleneck_size", "reduction_factor", "non_linearity"),
    "full": (),
}


def _tuning_summary(request: JobRequest) -> dict[str, Any]:
    tuning = request.tuning.model_dump(mode="json")
    fields = TUNING_FIELDS.get(tuning["type"], ("options",))
    return {"type": tuning["type"], **{k: tuning[k] for k in fields if tuning.get(k) is not None}}


def _hub_datasets(job: dict[str, Any]) -> list[str]:
    """Hub dataset ids the job trained or evaluated on (uploaded files are not hub datasets)."""
    ids = [r["repo_id"] for r in job["dataset_revisions"].values() if isinstance(r, dict) and r.get("repo_id")]
    for ref in (job["training_file"], job["validation_file"]):
        if ref and ref.startswith("hf://datasets/"):
            ids.append(parse_dataset_ref(ref).repo_id)
    return list(dict.fromkeys(ids))


def _base_license(hub: Hub, base_model: str, revision: str | None) -> str | None:
    """The base model's license, read from its own card: a fine-tune inherits it."""
    try:
        meta = read_card_metadata(hub.snapshot(base_model, revision=revision or "main"))
    except HubError as exc:
        log.warning("could not read the license of %s: %s", base_model, exc)
        return None
    value = meta.get("license")
    return value if isinstance(value, str) and value else None


def _sections(job: dict[str, Any], request: JobRequest) -> list[tuple[str, str]]:
    sections = []
    if job["lineage"]:
        sections.append(("Lineage", lineage_lines(job["lineage"])))
    report = job["data_report"] or {}
    if report:
        rows = "\n".join(f"| {k} | {_short(v)} |" for k, v in report.items())
        sections.append(("Data report", "| Item | Value |\n|---|---|\n" + rows + "\n"))
    if job["dataset_revisions"]:
        lines = [f"- `{param}`: `{r['repo_id']}` file `{r['path']}` at commit `{r['commit']}`"
                 for param, r in job["dataset_revisions"].items()]
        sections.append(("Training data", "\n".join(lines) + "\n"))
    if request.method_type == "dpo":
        evaluation = job["result"].get("evaluation")
        sections.append(dpo_section(hyperparameters=job["hyperparameters"] or {}, curve=job["curve"],
                                    evaluation=evaluation if isinstance(evaluation, dict) else None))
    search = learning_rate_search_section(job["result"].get("search"))
    if search:
        sections.append(search)
    sections.append(("Hardware and time", _hardware_text(job)))
    return sections


def _hardware_text(job: dict[str, Any]) -> str:
    resources = job["resources"] or job["result"].get("hardware") or {}
    gpus = resources.get("gpus") or []
    if gpus:
        names = ", ".join(sorted({g.get("name", "GPU") for g in gpus}))
        hardware = f"{len(gpus)} GPU(s): {names}"
    elif resources.get("cpu_count"):
        hardware = f"CPU only ({resources['cpu_count']} cores)"
    else:
        hardware = "not recorded"
    lines = [f"- Hardware: {hardware}"]
    if job["duration"] is not None:
        lines.append(f"- Training time: {job['duration']:.0f} s")
    steps = job["result"].get("steps")
    if steps:
        lines.append(f"- Optimizer steps: {steps}")
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)
    text = text.replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."


def _plot_loss_curve(points: list[dict], path: Path) -> bool:
    """Training (and validation) loss by step as a PNG; False when there is nothing to plot."""
    train = [(p["step"], p["train_loss"]) for p in points if p.get("train_loss") is not None and "step" in p]
    valid = [(p["step"], p["valid_loss"]) for p in points if p.get("valid_loss") is not None and "step" in p]
    if not train and not valid:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display on a worker
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for series, label in ((train, "training loss"), (valid, "validation loss")):
        if series:
            ax.plot(*zip(*series), label=label, marker="o" if len(series) < 20 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return True


def _write_merged(hub: Hub, job: dict[str, Any], request: JobRequest) -> None:
    """LoRA: the base model with the adapter merged in, under merged/ beside the adapter."""
    from worker.engine.trainer import load_for_inference

    folder: Path = job["artifact"]
    if request.tuning.type != "lora" or not (folder / "adapter_config.json").is_file():
        return
    base_model, revision = card_base(job["lineage"], request, job["model_revision"])
    base_dir = hub.snapshot(base_model, revision=revision or "main")
    model, tokenizer = load_for_inference(model_dir=base_dir, adapter_dir=folder, task=request.task)
    merged = model.merge_and_unload()
    out = folder / "merged"
    merged.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _point_adapter_at_hub(folder: Path, base_model: str, revision: str | None) -> None:
    """peft records the local snapshot path it loaded; the pushed adapter must name the hub id, and the
    commit it was trained on (AutoPeftModel loads the base at the config's revision)."""
    config_path = folder / "adapter_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = base_model
        config["revision"] = revision
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True))


# --- checkpoints pushed while training ---------------------------------------------------------------


def run_push_checkpoint(job_id: str, settings: Settings) -> None:
    """Push the job's newest checkpoint (weights and configs, not optimizer state) to hub.checkpoint_branch
    as checkpoint-<step>/. Best effort: a failed push is an event, never the job's failure."""
    import shutil
    import tempfile

    from hubtune.lifecycle import add_event
    from hubtune.models import Checkpoint

    with session_scope() as session:
        job = session.get(Job, job_id)
        if job is None:
            return
        request = JobRequest.model_validate(job.spec)
        newest = session.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)
                                 .order_by(Checkpoint.step.desc()).limit(1)).scalar_one_or_none()
        owner = job.owner
        rights = rights_for(session, key_id=job.key_id, owner=owner)
    if not (request.hub and request.hub.push_checkpoints) or newest is None:
        return
    folder = _checkpoint_folder(settings, job_id, newest)
    if folder is None:
        return
    repo_id = target_repo(request, owner=owner, job_id=job_id, namespace=settings.hub_namespace)
    branch = request.hub.checkpoint_branch
    with tempfile.TemporaryDirectory(prefix=f"push-{job_id}-") as tmp:
        staged = Path(tmp) / f"checkpoint-{newest.step}"
        shutil.copytree(folder, staged, ignore=lambda d, names: [n for n in names if n.startswith(CHECKPOINT_SKIP)])
        try:
            hub = _hub_allowed(settings, owner, rights, request)
            commit = publish_with_retries(hub, settings, repo_id, folder=Path(tmp),
                                          message=f"hubtune job {job_id}: checkpoint at step {newest.step}",
                                          branch=branch, private=request.hub.private)
            text, level = f"Checkpoint at step {newest.step} pushed to {repo_id}@{branch} ({commit})", "info"
        except Exception as exc:  # noqa: BLE001 - training goes on either way
            text, level = f"Could not push the checkpoint at step {newest.step} to the hub: {exc}", WARN
    with session_scope() as session:
        add_event(session, job_id, text, level=level, data={"step": newest.step, "branch": branch})


def _checkpoint_folder(settings: Settings, job_id: str, checkpoint) -> Path | None:
    """A local copy of a recorded checkpoint; None when it is gone, or when the store is down (best
    effort, as the push itself: an event, and the next checkpoint tries again)."""
    from hubtune.lifecycle import add_event

    try:
        return open_storage(settings).checkpoint_copy(checkpoint.path)
    except StorageUnavailable as exc:
        with session_scope() as session:
            add_event(session, job_id, f"Could not push the checkpoint at step {checkpoint.step}: {exc}",
                      level=WARN, data={"step": checkpoint.step})
        return None
