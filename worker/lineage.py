"""Where a continued job starts: its parent's adapter on the parent's base, or a full fine-tune's weights.

The job row's lineage (hubtune.lineage) names the parent. Prepare and train both turn it into local
folders here: the base model to load (`model_dir`) and, for an adapter parent, the adapter to go on
training (`init_adapter`, loaded by the method with peft's is_trainable). A hub repo holding an adapter
(its adapter_config.json names the base) is a parent too: prepare records its lineage the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubtune.errors import JobError
from hubtune.lineage import ADAPTER, FULL
from hubtune.spec import JobRequest
from hubtune.storage import Storage
from plugin import split_model_ref, validate_repo_id

TRAINING_INFO_FILE = "hubtune_training.json"  # worker.engine.artifact writes it beside the weights


@dataclass(frozen=True)
class Start:
    model_dir: Path  # the base model (config, weights, tokenizer)
    init_adapter: Path | None  # the parent's adapter to train further; None: a fresh one (or full)
    revision: str | None  # the base's hub commit, None for kept weights


def _lineage_error(message: str) -> JobError:
    return JobError("model_not_found", message, "model")


def parent_folder(lineage: dict[str, Any], storage: Storage, hub) -> Path:
    """A local copy of the parent's weights: a checkpoint, a job's kept artifact, or a hub adapter repo."""
    return _kept_folder(lineage["parent"], storage, hub)


def _kept_folder(parent: dict[str, Any], storage: Storage, hub) -> Path:
    if parent["type"] == "hub":
        return hub.snapshot(parent["repo_id"], revision=parent["commit"])
    if parent["type"] == "checkpoint":
        folder = storage.checkpoint_copy(parent["ref"])
        if folder is None or not folder.is_dir():
            raise _lineage_error(f"the files of checkpoint {parent['checkpoint_id']} (step {parent['step']} of "
                                 f"fine-tuning job {parent['job_id']}) are no longer kept")
        return folder
    return storage.artifact_copy(parent["ref"])


def start(lineage: dict[str, Any], storage: Storage, hub) -> Start:
    """The folders a continued job trains from (see the module docstring)."""
    if lineage["kind"] == FULL:
        return Start(model_dir=parent_folder(lineage, storage, hub), init_adapter=None,
                     revision=lineage.get("base_revision"))
    if lineage.get("weights"):  # the base is a full fine-tune that never reached the hub
        model_dir, revision = _kept_folder(lineage["weights"], storage, hub), None
    else:
        revision = lineage["base_revision"]
        model_dir = hub.snapshot(lineage["base_model"], revision=revision)
    return Start(model_dir=model_dir, init_adapter=parent_folder(lineage, storage, hub), revision=revision)


def continued_request(request: JobRequest, lineage: dict[str, Any]) -> JobRequest:
    """The request as the child trains it: an adapter parent's tuning (the same adapter, trained further)
    and the parent's task. A full parent is a new base: the child's own tuning applies."""
    task = lineage.get("task")
    if request.task is not None and task is not None and request.task != task:
        raise JobError("invalid_value", f"task '{request.task}' differs from the task of the model it continues "
                       f"('{task}'); leave task unset or give '{task}'", "task")
    update: dict[str, Any] = {"task": task or request.task}
    if lineage["kind"] == ADAPTER and lineage.get("tuning"):
        update["tuning"] = request.tuning.model_validate(lineage["tuning"])
    tuning = update.get("tuning", request.tuning)
    if not lineage.get("base_model") and tuning.type != "full":
        # An adapter must name the model it applies to on the hub, and these weights are on none.
        raise JobError("invalid_model", f"'{request.model}' starts from full fine-tuned weights that were never "
                       "published (a checkpoint of a full fine-tune): continue it with tuning.type 'full', "
                       "or continue the published job instead", "model")
    return request.model_copy(update=update)


def hub_adapter_lineage(repo_id: str, commit: str, folder: Path) -> dict[str, Any] | None:
    """The lineage of a hub repo holding an adapter (adapter_config.json), else None (a base model).
    Its base is what the adapter's config names, at the revision it records."""
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        return None
    try:
        config = json.loads(config_path.read_text())
    except ValueError as exc:
        raise JobError("invalid_model", f"model '{repo_id}': adapter_config.json is not JSON ({exc})", "model")
    base = config.get("base_model_name_or_path")
    try:
        validate_repo_id(str(base))
    except ValueError:
        raise JobError("invalid_model", f"model '{repo_id}' is an adapter whose base_model_name_or_path "
                       f"({base!r}) is not a hub model id; it cannot be trained further here", "model") from None
    info = _training_info(folder)
    peft_type = str(config.get("peft_type") or "LORA").lower()
    tuning = info.get("tuning") or {"type": peft_type}  # an adapter made elsewhere: its peft method
    return {
        "parent": {"type": "hub", "repo_id": repo_id, "commit": commit}, "kind": ADAPTER,
        "base_model": base, "base_revision": config.get("revision") or "main", "weights": None,
        "root": base, "task": info.get("task") or _peft_task(config), "tuning": tuning, "ancestors": [],
    }


def _training_info(folder: Path) -> dict[str, Any]:
    path = folder / TRAINING_INFO_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}


def _peft_task(config: dict[str, Any]) -> str | None:
    return {"CAUSAL_LM": "causal_lm", "SEQ_CLS": "sequence_classification"}.get(config.get("task_type") or "")


def parent_name(lineage: dict[str, Any]) -> str:
    """The parent in words: a checkpoint id, a job id, or a hub repo at its commit."""
    parent = lineage["parent"]
    if parent["type"] == "hub":
        return f"{parent['repo_id']}@{parent['commit']}"
    if parent["type"] == "checkpoint":
        return f"{parent['checkpoint_id']} (step {parent['step']} of {parent['job_id']})"
    return parent["job_id"]


# --- what the card says --------------------------------------------------------------------------------


def card_base(lineage: dict[str, Any] | None, request: JobRequest, revision: str | None) -> tuple[str, str | None]:
    """The card's base_model (and revision): the hub model the weights start from."""
    if lineage is None:
        return split_model_ref(request.model)[0], revision
    if lineage.get("base_model"):
        return lineage["base_model"], lineage.get("base_revision")
    return lineage.get("root") or request.model, None


def lineage_lines(lineage: dict[str, Any]) -> str:
    """The card's "Lineage" section: the parent, the base and the revisions, one fact a line."""
    parent = lineage["parent"]
    if parent["type"] == "hub":
        what = f"the adapter `{parent['repo_id']}` at commit `{parent['commit']}`"
    elif parent["type"] == "checkpoint":
        what = (f"checkpoint `{parent['checkpoint_id']}` (`{parent['fine_tuned_model_checkpoint']}`, step "
                f"{parent['step']}) of hubtune fine-tuning job `{parent['job_id']}`")
    else:
        what = f"hubtune fine-tuning job `{parent['job_id']}` (`{parent.get('fine_tuned_model')}`)"
    how = ("Its adapter was trained further on the same base model" if lineage["kind"] == ADAPTER
           else "That full fine-tune was the starting model")
    lines = [f"- Continued from {what}.", f"- {how}."]
    if lineage.get("base_model"):
        lines.append(f"- Base model: `{lineage['base_model']}` at revision `{lineage.get('base_revision')}`.")
    if lineage.get("root") and lineage.get("root") != lineage.get("base_model"):
        lines.append(f"- First base model of the chain: `{lineage['root']}`.")
    if lineage.get("ancestors"):
        lines.append("- Earlier jobs in the chain: " + ", ".join(f"`{a}`" for a in lineage["ancestors"]) + ".")
    return "\n".join(lines) + "\n"
