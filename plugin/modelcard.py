"""README.md (model card) for a published fine-tune: Hub metadata front matter plus a short body.

The front matter is what the Hub indexes (base model tree, library, pipeline, tags, datasets,
evaluation results), so it must parse with `huggingface_hub.ModelCard`.
"""

from __future__ import annotations

import json
import numbers
import re
from collections.abc import Iterable, Mapping

import yaml

from .errors import InvalidRepoId
from .repo_id import split_model_ref, validate_repo_id
from .usage import usage_snippet as _usage_snippet

PIPELINE_TAGS = {"sequence_classification": "text-classification", "causal_lm": "text-generation"}
TASK_NAMES = {"text-classification": "Text Classification", "text-generation": "Text Generation"}
TASK_TEXT = {"sequence_classification": "text classification", "causal_lm": "causal language modelling"}
TUNING_NAMES = {"lora": "LoRA", "adapter": "bottleneck-adapter", "full": "full"}
# Which column of base-vs-tuned metrics is the model's own result (goes into model-index).
OWN_RESULT_KEYS = ("tuned", "fine_tuned", "finetuned", "adapter", "model")


def render_model_card(
    *,
    repo_id: str,
    base_model: str,
    base_model_revision: str | None,
    task: str,
    tuning: dict,
    hyperparameters: dict,
    datasets: list[str],
    metrics: dict,
    library_name: str = "peft",
    tags: Iterable[str] = (),
    license: str | None = None,
    usage_snippet: str | None = None,
    evaluation: Mapping | None = None,
    base_model_relation: str | None = None,
    sections: Iterable[tuple[str, str]] = (),
    loss_curve: str | None = None,
    data_format: str | None = None,
    branch: str | None = None,
) -> str:
    """The README.md text. `metrics` is flat ({name: value}) or per model ({"base": {...}, "tuned": {...}}).

    `evaluation` is the engine's report ({"base", "tuned", "majority_baseline", "primary_metric", ...}):
    when given, model-index carries the fine-tuned results and the baselines, and the body a table.
    `sections` are extra (title, markdown) parts; `loss_curve` a picture's path in the repo.
    The "How to use" snippet (plugin.usage) loads `repo_id` at `branch` with the loader `library_name`
    names ("peft", "transformers" or "hubtune"); `data_format` "chat" prompts through the chat template.
    """
    validate_repo_id(repo_id)
    base_model, ref_revision = _hub_id(base_model)
    base_model_revision = base_model_revision or ref_revision
    if evaluation and not metrics:
        metrics = _evaluation_columns(evaluation)
    meta = _front_matter(repo_id, base_model, task, tuning, datasets, metrics, library_name, tags, license)
    if base_model_relation:
        meta = {"base_model": meta.pop("base_model"), "base_model_relation": base_model_relation, **meta}
    if evaluation and _evaluation_columns(evaluation):
        meta["model-index"] = _evaluation_index(repo_id, PIPELINE_TAGS.get(task) or task, datasets, evaluation)
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    snippet = usage_snippet or _usage_snippet(
        repo_id=repo_id, base_model=base_model, base_model_revision=base_model_revision, task=task,
        library_name=library_name, data_format=data_format, branch=branch,
    )
    body = [
        f"# {repo_id.split('/')[-1]}\n",
        *warning_lines(evaluation),
        _intro(repo_id, base_model, base_model_revision, task, tuning),
        "## How to use\n",
        f"```python\n{snippet.strip()}\n```\n",
        "## Training configuration\n",
        _table(("Setting", "Value"), _config_rows(base_model, base_model_revision, task, tuning, hyperparameters, datasets)),
    ]
    if metrics:
        body += ["## Evaluation\n", _evaluation_intro(evaluation), _metrics_table(metrics)]
    if evaluation and evaluation.get("samples"):
        body += ["## Sample completions\n", _samples_section(evaluation["samples"])]
    if loss_curve:
        body += ["## Loss curve\n", f"![Training and validation loss]({loss_curve})\n"]
    for title, text in sections:
        body += [f"## {title}\n", text.rstrip() + "\n"]
    return f"---\n{front}---\n\n" + "\n".join(body)


def read_card_metadata(folder) -> dict:
    """The YAML front matter of `folder`/README.md ({} when there is none or it does not parse)."""
    import pathlib

    path = pathlib.Path(folder) / "README.md"
    if not path.is_file():
        return {}
    text = path.read_text(errors="replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    try:
        meta = yaml.safe_load(text[3:end]) if end > 0 else None
    except yaml.YAMLError:
        return {}
    return meta if isinstance(meta, dict) else {}


# Evaluation columns in the order a reader compares them, and their names in the card. The "base"
# column is named by the record's base_kind (worker/engine/evaluate.py): a classifier's is a linear probe.
EVALUATION_COLUMNS = (("majority_baseline", "majority-class baseline"), ("base", "base model"),
                      ("tuned", "fine-tuned"))
BASE_TITLES = {"linear_probe": "linear probe (base model embeddings)", "base_model": "base model"}
LINEAR_PROBE_TEXT = ("The linear probe is a logistic regression fitted on the training split over the frozen base "
                     "model's mean-pooled embeddings: what the base model gives without any fine-tuning.")


def _evaluation_columns(evaluation: Mapping) -> dict[str, dict]:
    columns = {}
    for key, title in EVALUATION_COLUMNS:
        if key == "base":
            title = BASE_TITLES.get(evaluation.get("base_kind"), title)
        values = evaluation.get(key)
        if isinstance(values, Mapping):
            numbers_only = {k: v for k, v in values.items() if _is_number(v)}
            if numbers_only:
                columns[title] = numbers_only
    return columns


def warning_lines(evaluation: Mapping | None) -> list[str]:
    """The card's first lines after the title when its evaluation says the model did not beat its
    baselines or rests on too few examples: a reader deciding whether to use it must see that first."""
    if not evaluation:
        return []
    split = evaluation.get("split") if isinstance(evaluation.get("split"), Mapping) else {}
    lines = []
    if evaluation.get("beat_baseline") is False:
        primary = evaluation.get("primary_metric") or "the primary metric"
        rests = f" (measured on only {split.get('examples')} examples)" if split.get("reliable") is False else ""
        lines.append(f"> **Warning:** the fine-tuned model does not beat its baselines on `{primary}`{rests}; "
                     "see the evaluation below before using it.\n")
    if split.get("reliable") is False:
        lines.append(f"> **Warning:** the evaluation is unreliable: {split.get('unreliable_reason')}.\n")
    return lines


def _evaluation_intro(evaluation: Mapping | None) -> str:
    if not evaluation:
        return ""
    split = evaluation.get("split") or {}
    parts = []
    if evaluation.get("primary_metric"):
        parts.append(f"Primary metric: `{evaluation['primary_metric']}`.")
    if isinstance(split, Mapping) and split:
        parts.append("Evaluation split: " + ", ".join(f"{k} {_cell(v)}" for k, v in split.items()) + ".")
    if evaluation.get("base_kind") == "linear_probe":
        parts.append(LINEAR_PROBE_TEXT)
    if "beat_baseline" in evaluation:
        parts.append("The fine-tuned model " + ("beats" if evaluation["beat_baseline"] else "does not beat")
                     + " the baseline.")
    goal = evaluation.get("goal")
    if isinstance(goal, Mapping) and goal:
        parts.append("Goal: " + ", ".join(f"{k} {_cell(v)}" for k, v in goal.items()) + ".")
    return (" ".join(parts) + "\n") if parts else ""


def _evaluation_index(repo_id: str, task_type: str, datasets: list[str], evaluation: Mapping) -> list:
    """model-index: the fine-tuned results, then the same metrics for each baseline, named as such."""
    columns = _evaluation_columns(evaluation)
    index = _model_index(repo_id, task_type, datasets, columns.get("fine-tuned", {}))
    metrics = index[0]["results"][0]["metrics"]
    for title, values in columns.items():
        if title == "fine-tuned":
            continue
        metrics += [{"type": name, "value": float(value), "name": f"{name} ({title})"} for name, value in values.items()]
    return index


SAMPLE_PARTS = (("prompt", "Prompt"), ("reference", "Reference"), ("base", "Base model"), ("tuned", "Fine-tuned"))


def _samples_section(samples) -> str:
    """Greedy completions of the base and the fine-tuned model on evaluation prompts, each text in a
    fenced block whose fence is longer than any backtick run inside it, so no text can break out."""
    out = ["Greedy completions on prompts from the evaluation split, before and after fine-tuning.\n"]
    for number, sample in enumerate(samples, 1):
        if not isinstance(sample, Mapping):
            continue
        out.append(f"### Sample {number}\n")
        for key, title in SAMPLE_PARTS:
            out.append(f"**{title}**\n\n{_fenced(str(sample.get(key, '')))}")
    return "\n".join(out)


def _fenced(text: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}\n"


def _hub_id(base_model: str) -> tuple[str, str | None]:
    """The base model as a hub id (+ revision from `id@rev`): a local path would be useless and leak a server path."""
    try:
        return split_model_ref(base_model)
    except InvalidRepoId as err:
        raise InvalidRepoId(f"base_model must be a hub repo id, not {base_model!r}: {err}") from err


def _front_matter(repo_id, base_model, task, tuning, datasets, metrics, library_name, tags, license) -> dict:
    pipeline_tag = PIPELINE_TAGS.get(task)
    meta: dict = {"base_model": base_model, "library_name": library_name}
    if pipeline_tag:
        meta["pipeline_tag"] = pipeline_tag
    if license:
        meta["license"] = license
    meta["tags"] = _tags(tuning, library_name, pipeline_tag, tags)
    if datasets:
        meta["datasets"] = list(datasets)
    results = _own_metrics(metrics)
    if results:
        meta["model-index"] = _model_index(repo_id, pipeline_tag or task, datasets, results)
    return meta


def _tags(tuning: Mapping, library_name: str, pipeline_tag: str | None, extra: Iterable[str]) -> list[str]:
    kind = str(tuning.get("type", "")).strip()
    candidates = ["hubtune", kind, library_name, pipeline_tag, *extra]
    if kind == "full":
        candidates[1] = "full-fine-tuning"
    return list(dict.fromkeys(t for t in candidates if t))  # ordered, unique, no blanks


def _own_metrics(metrics: Mapping) -> dict[str, float]:
    """The tuned model's numeric metrics (model-index holds one model's results)."""
    if metrics and all(isinstance(v, Mapping) for v in metrics.values()):
        key = next((k for k in OWN_RESULT_KEYS if k in metrics), list(metrics)[-1])
        metrics = metrics[key]
    return {k: float(v) for k, v in metrics.items() if _is_number(v)}


def _model_index(repo_id: str, task_type: str, datasets: list[str], results: Mapping[str, float]) -> list:
    dataset = {"type": datasets[0], "name": datasets[0]} if datasets else {"type": "custom", "name": "evaluation set"}
    task = {"type": task_type}
    if task_type in TASK_NAMES:
        task["name"] = TASK_NAMES[task_type]
    metrics = [{"type": name, "value": value, "name": name} for name, value in results.items()]
    return [{"name": repo_id.split("/")[-1], "results": [{"task": task, "dataset": dataset, "metrics": metrics}]}]


def _intro(repo_id, base_model, revision, task, tuning) -> str:
    kind = TUNING_NAMES.get(tuning.get("type"), tuning.get("type"))
    what = f"A {kind} fine-tune" if kind else "A fine-tune"
    pinned = f" (revision `{revision}`)" if revision else ""
    # No link for the base model: the hub may be a private endpoint, not huggingface.co.
    return (
        f"{what} of `{base_model}`{pinned} for {TASK_TEXT.get(task, task.replace('_', ' '))}, "
        f"trained with hubtune and published as `{repo_id}`.\n"
    )


def _config_rows(base_model, revision, task, tuning, hyperparameters, datasets) -> list[tuple]:
    rows = [("base model", base_model)]
    if revision:
        rows.append(("base model revision", revision))
    rows.append(("task", task))
    rows += [(f"tuning.{k}", v) for k, v in tuning.items()]
    rows += [(k, v) for k, v in hyperparameters.items()]
    if datasets:
        rows.append(("datasets", datasets))
    return rows


def _metrics_table(metrics: Mapping) -> str:
    if all(isinstance(v, Mapping) for v in metrics.values()):
        columns = list(metrics)
        names = list(dict.fromkeys(n for col in columns for n in metrics[col]))
        rows = [(n, *(metrics[c].get(n, "") for c in columns)) for n in names]
        return _table(("Metric", *columns), rows)
    return _table(("Metric", "Value"), list(metrics.items()))


def _table(header: tuple, rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, bool) or value is None:
        text = str(value)
    elif isinstance(value, float) or (_is_number(value) and not isinstance(value, int)):
        text = f"{float(value):.6g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    elif isinstance(value, Mapping):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def learning_rate_search_section(search: Mapping | None) -> tuple[str, str] | None:
    """("Learning-rate search", markdown) when the job's "auto" learning rate was searched (the job
    result's "search" record, worker.engine.lr_search): what was tried, on what, what won, what it cost.
    None when no search ran."""
    if not isinstance(search, Mapping) or not search.get("ran"):
        return None
    metric = search.get("metric", "metric")
    rows = [(t.get("learning_rate"), t.get("rung"), t.get("steps"), t.get("metric"), t.get("loss"))
            for t in search.get("trials") or []]
    intro = (f"The learning rate was \"auto\": {len(search.get('candidates') or [])} candidate rates trained a few "
             f"steps each on the training set less {search.get('slice_examples')} held-back training examples "
             f"(never the evaluation split), by successive halving on {metric}. Chosen: "
             f"{_cell(search.get('chosen'))}, which the training configuration above shows. Cost: "
             f"{search.get('trial_steps')} trial steps for a run of {search.get('planned_steps')}, "
             f"{_cell(search.get('seconds'))} s.\n\n")
    return "Learning-rate search", intro + _table(("Learning rate", "Rung", "Steps", metric, "Loss"), rows)


def searched_hyperparameters(hyperparameters: Mapping, search: Mapping | None) -> dict:
    """The job's hyperparameters with the rates the search chose (what the run trained with)."""
    out = dict(hyperparameters)
    if isinstance(search, Mapping) and search.get("ran") and isinstance(search.get("hyperparameters"), Mapping):
        out.update(search["hyperparameters"])
    return out


# DPO's per-step metrics (worker/engine/dpo.py), as the card's table names them.
DPO_METRICS = (("rewards_chosen", "reward of the preferred reply"), ("rewards_rejected", "reward of the other reply"),
               ("rewards_margin", "reward margin"), ("preference_accuracy", "preference accuracy"))


def dpo_section(*, hyperparameters: Mapping, evaluation: Mapping | None, curve: list[Mapping]) -> tuple[str, str]:
    """The card's "Preference tuning (DPO)" part: beta and the reference model, the base and tuned models'
    preference accuracy on the held-out pairs, and trl's rewards at the last training step and evaluation."""
    lines = [f"Trained with DPO (trl's DPOTrainer) on preference pairs, beta = {hyperparameters.get('beta', 0.1)}. "
             "The reference model is the base model.\n"]
    if evaluation and isinstance(evaluation.get("base"), Mapping) and isinstance(evaluation.get("tuned"), Mapping):
        base, tuned = evaluation["base"], evaluation["tuned"]
        lines.append(f"On {tuned.get('pairs', '?')} held-out pairs, the share where the model gives the preferred "
                     "reply the higher log-probability:\n")
        lines.append(_table(("Model", "Preference accuracy", "Mean log-prob margin"), [
            ("base model", base.get("preference_accuracy"), base.get("logprob_margin")),
            ("fine-tuned", tuned.get("preference_accuracy"), tuned.get("logprob_margin")),
        ]))
    last = {split: next((p for p in reversed(curve) if f"{split}_rewards_margin" in p), None) for split in ("train", "valid")}
    rows = [(label, *(last[s].get(f"{s}_{key}") if last[s] else None for s in ("train", "valid")))
            for key, label in DPO_METRICS]
    if any(v is not None for row in rows for v in row[1:]):
        lines.append("\nAt the last logged training step and the last evaluation (rewards are beta times the "
                     "log-probability ratio to the reference):\n")
        lines.append(_table(("Metric", "Training", "Validation"), rows))
    return "Preference tuning (DPO)", "\n".join(lines)
