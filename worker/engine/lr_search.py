"""A short learning-rate search when the learning rate is "auto" (resolve_hyperparameters' key
``learning_rate_search``): a few candidate rates race on a slice of the planned steps, and the main
run trains with the winner.

- Candidates: the resolved (calibrated) rate x DEFAULT_FACTORS (1/4, 1/2, 1, 2: an 8x span, at most
  twice the default). Not 4x: short trials rank rates by how fast they start, and a high rate that
  starts fastest can collapse later, which no trial sees. bench/quality.py, MiniLM LoRA (default 1e-3):
  on "medium" (2,000 rows) the search with 4x chose 4e-3 (slice macro-F1 0.46 after 20 steps against
  0.12) and the run ended predicting one class (test macro-F1 0.067; 1e-3: 0.80); the plain script at
  3e-3 collapsed the same way on binary_imbalanced. A candidate multiplies every
  learning-rate key of plan.hyperparameters (keys ending in "learning_rate").
- Successive halving, synchronous: rung 1 trains every candidate r steps from the run's initial weights;
  the best half (rounded down, at least 2 until the last rung) go on from their own state (weights and
  AdamW moments) to 2r, 4r, ... until the last rung picks one (4 candidates: 4 x r, then 2 on to 2r =
  6r steps). r follows from the budget: trial steps + the slice evaluations (a forward pass counted as
  1/3 of a step) <= BUDGET_FRACTION of the planned run's optimizer steps.
- A run too short for four candidates races SHORT_FACTORS (1/2, 1, 2, in one rung) instead, if that
  fits. Either way rung-1 trials train at least MIN_RUNG_STEPS (25) steps and the finalists twice that:
  shorter trials ranked noise or start speed, not where a run ends (see MIN_RUNG_STEPS).
- Metric on the search slice: macro-F1 for classification (ties: the slice's cross-entropy, then the
  candidate nearer the default); causal_lm: the mean loss over trained tokens.
- The calibrated default is the prior: in the last rung a candidate replaces it only when its slice
  macro-F1 is higher by more than one slice example's worth (1 / slice examples): a difference that
  small is noise. On "small" seed 1 (a 9-example slice) 1e-3 and 3e-3 tied at 0.167 and 3e-3 had the
  lower slice loss; the default stayed, and scored 0.948 on the test set (bench/quality.py).
- The search slice is an INNER split of the training examples (stratified by label; 15 %, at least 8,
  at most 200); trials train on the rest. The job's held-out evaluation split is never touched, so the
  reported held-out metric stays unbiased.
- It runs only when (else the record says why): the key is set; not resuming (a resume reuses the
  record saved in checkpoints_dir/lr_search.json); the method is not "full" and at most
  MAX_TRAINABLE_PARAMS are trainable (each candidate's weights and AdamW moments are kept: 3 copies);
  one process, one GPU; no gradient checkpointing (trials would need its memory saving too); at most
  MAX_PLANNED_STEPS planned steps (a long run gains less from its first steps' rate, and 30 % of it is
  a long wait); each rung-1 trial gets MIN_RUNG_STEPS steps or more.

Why not Optuna: the candidates are a fixed list of four and the halving is synchronous, so Optuna's
samplers and pruners (made for open search spaces and asynchronous trials) would decide nothing here;
the record below is what it would store. The trial loop is worker.engine.lr_trials.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

from worker.engine.data import SEQUENCE_CLASSIFICATION
from worker.engine.datasets import EncodedDataset
from worker.engine.evaluate import evaluate_model
from worker.engine.lr_trials import Trial, TrialRunner, schedule_multipliers

DEFAULT_FACTORS = (0.25, 0.5, 1.0, 2.0)
SHORT_FACTORS = (0.5, 1.0, 2.0)
BUDGET_FRACTION = 0.30
# Each rung-1 trial trains at least this many steps, else the search skips. Measured with
# bench/quality.py (MiniLM LoRA classifiers, 100-340-step runs, BENCHMARKS.md §6): at 4 steps a trial's
# slice macro-F1 is noise (small, seed 2: 2.5e-4 won and the run scored 0.652 against 0.895 at the
# default 1e-3); at 9-20 steps it ranks how fast a rate starts (small, seed 0: 3e-3 won, 0.907 against
# 0.933; medium: 4e-3 won and the run collapsed to one class, 0.067 against 0.812). So the search runs
# only where each candidate gets 25 steps (runs of about 500 steps and more at the 30 % budget).
MIN_RUNG_STEPS = 25
MAX_PLANNED_STEPS = 3000
MAX_TRAINABLE_PARAMS = 50_000_000
SLICE_FRACTION, MIN_SLICE, MAX_SLICE = 0.15, 8, 200
MIN_TRIAL_EXAMPLES = 8
FORWARD_COST = 1 / 3  # an evaluation batch (forward only) against a training step (forward + backward)
RECORD_FILE = "lr_search.json"
OPTIONS = ("factors", "min_rung_steps", "budget_fraction")  # plan.search_options may set these


def rate_keys(hyperparameters: dict) -> list[str]:
    return [k for k in hyperparameters if k.endswith("learning_rate")]


def planned_steps(n_examples: int, *, hyperparameters: dict, training) -> int:
    """The Trainer's max_steps: training.max_steps, else epochs x ceil(batches per epoch / accumulation)."""
    if training.max_steps:
        return int(training.max_steps)
    batches = math.ceil(n_examples / hyperparameters["batch_size"])
    per_epoch = max(1, math.ceil(batches / training.gradient_accumulation_steps))
    return math.ceil(hyperparameters["n_epochs"] * per_epoch)


def survivors_per_rung(n_candidates: int) -> list[int]:
    """How many candidates train in each rung: 5 -> [5, 2], 4 -> [4, 2], 8 -> [8, 4, 2], 3 -> [3]."""
    out = [n_candidates]
    while out[-1] > 2 and out[-1] // 2 >= 2:
        out.append(out[-1] // 2)
    return out


def step_units(survivors: list[int]) -> int:
    """Trial steps per unit of r: rung k takes its survivors from r * 2**(k-1) to r * 2**k steps."""
    return survivors[0] + sum(n * 2 ** (k - 1) for k, n in enumerate(survivors) if k)


def search_slice(dataset, *, task: str, seed: int) -> tuple[list[int], list[int]]:
    """(trial indices, slice indices) of an encoded training set; stratified by label for classification
    (every label keeps a trial example). The slice is empty when the set is too small to give one."""
    n = len(dataset)
    target = min(MAX_SLICE, max(MIN_SLICE, round(SLICE_FRACTION * n)))
    if n - target < MIN_TRIAL_EXAMPLES:
        return list(range(n)), []
    rng = random.Random(seed)
    if task != SEQUENCE_CLASSIFICATION:
        chosen = rng.sample(range(n), target)
    else:
        groups: dict[int, list[int]] = {}
        for i, feature in enumerate(dataset.features):
            groups.setdefault(int(feature["labels"]), []).append(i)
        chosen = []
        for label in sorted(groups):
            group = groups[label]
            chosen += rng.sample(group, min(len(group) - 1, round(target * len(group) / n)))
    held = set(chosen)
    return [i for i in range(n) if i not in held], sorted(held)


def _subset(dataset, indices: list[int]) -> EncodedDataset:
    features = [dataset.features[i] for i in indices]
    return EncodedDataset(features, skipped=[], tokens=sum(len(f["input_ids"]) for f in features))


def skip_reason(plan, *, trainable: int, planned: int) -> str | None:
    """Why the search cannot run for this plan (None: it can), before any data is split."""
    flag = plan.hyperparameters.get("learning_rate_search")
    if flag is None:
        return "the plan does not ask for a learning-rate search"
    if not flag:
        return "the learning rate was given (training.learning_rate or learning_rate_multiplier)"
    if plan.tuning.type == "full":
        return 'tuning "full" trains every weight: too large a state to keep per candidate'
    if trainable > MAX_TRAINABLE_PARAMS:
        return f"{trainable:,} trainable parameters, more than {MAX_TRAINABLE_PARAMS:,} to keep per candidate"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 or plan.training.n_gpus > 1:
        return f"a distributed run ({max(world, plan.training.n_gpus)} processes): the search runs on one"
    if plan.training.gradient_checkpointing:
        return "gradient checkpointing is on: the trials would run without its memory saving"
    if planned > MAX_PLANNED_STEPS:
        return f"the planned run has {planned:,} optimizer steps, more than {MAX_PLANNED_STEPS:,}"
    return None


def learning_rate_search(plan, hooks, *, model, train_ds, collator, eval_collator, labels: list[str],
                         class_weights: list[float] | None, trainable: int) -> dict:
    """Search (or skip, or on resume reuse the saved choice), put the chosen rate into
    plan.hyperparameters, and return the record; record["stopped"] is True when should_stop() ended it
    (the model's trainable weights are the initial ones again in every case)."""
    options = {k: v for k, v in (getattr(plan, "search_options", None) or {}).items() if k in OPTIONS}
    path = Path(plan.checkpoints_dir) / RECORD_FILE
    if plan.resume_from is not None and plan.hyperparameters.get("learning_rate_search"):
        record = _resumed(path)
    else:
        record = _run(plan, hooks, model=model, train_ds=train_ds, collator=collator,
                      eval_collator=eval_collator, labels=labels, class_weights=class_weights,
                      trainable=trainable, **options)
        if record.get("stopped"):
            return record
        if record["ran"]:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2) + "\n")
        if plan.hyperparameters.get("learning_rate_search"):
            _report(hooks, record, default=plan.hyperparameters["learning_rate"])
    if record.get("ran"):
        plan.hyperparameters.update(record["hyperparameters"])
    return record


def _resumed(path: Path) -> dict:
    if not path.is_file():
        return {"ran": False, "reason": "resumed from a checkpoint with no recorded search"}
    return {**json.loads(path.read_text()), "reused": True}


def rung_plan(*, planned: int, slice_batches: int, accumulation: int, factor_sets, min_rung_steps: int,
              budget_fraction: float):
    """(factors, survivors per rung, rung-1 steps) of the first candidate set that fits the budget with
    rung-1 trials of at least min_rung_steps and finalists of at least 2 x min_rung_steps; None if none fits."""
    for factors in factor_sets:
        survivors = survivors_per_rung(len(factors))
        eval_cost = sum(survivors) * slice_batches * FORWARD_COST / accumulation
        rung = math.floor((budget_fraction * planned - eval_cost) / step_units(survivors))
        if rung >= min_rung_steps and rung * 2 ** (len(survivors) - 1) >= 2 * min_rung_steps:
            return tuple(factors), survivors, rung
    return None


def _run(plan, hooks, *, model, train_ds, collator, eval_collator, labels, class_weights, trainable,
         factors=None, min_rung_steps=MIN_RUNG_STEPS, budget_fraction=BUDGET_FRACTION) -> dict:
    hp, training = plan.hyperparameters, plan.training
    planned = planned_steps(len(train_ds), hyperparameters=hp, training=training)
    reason = skip_reason(plan, trainable=trainable, planned=planned)
    if reason:
        return {"ran": False, "reason": reason}
    trial_idx, slice_idx = search_slice(train_ds, task=plan.task, seed=plan.seed)
    if not slice_idx:
        return {"ran": False, "reason": f"{len(train_ds)} training examples leave no search slice of "
                                        f"{MIN_SLICE} beside {MIN_TRIAL_EXAMPLES} to train trials on"}
    batch = hp["batch_size"]
    factor_sets = [factors] if factors else [DEFAULT_FACTORS, SHORT_FACTORS]
    fitted = rung_plan(planned=planned, slice_batches=math.ceil(len(slice_idx) / batch),
                       accumulation=training.gradient_accumulation_steps, factor_sets=factor_sets,
                       min_rung_steps=min_rung_steps, budget_fraction=budget_fraction)
    if fitted is None:
        fewest = min(len(f) for f in factor_sets)
        return {"ran": False, "reason": f"the planned run is too short ({planned} optimizer steps): "
                                        f"{budget_fraction:.0%} of it gives each of {fewest} "
                                        f"candidates fewer than {2 * min_rung_steps} steps"}
    factors, survivors, rung = fitted
    from worker.engine.hf_trainer import resolve_bf16  # here: importing the search need not import transformers

    warmup = training.warmup_steps if training.warmup_steps is not None else training.warmup_ratio
    runner = TrialRunner(
        model, _subset(train_ds, trial_idx), collator=collator, task=plan.task, batch_size=batch,
        grad_accum=training.gradient_accumulation_steps, weight_decay=training.weight_decay,
        multipliers=schedule_multipliers(name=training.lr_scheduler, warmup=warmup, planned_steps=planned,
                                         steps=rung * 2 ** (len(survivors) - 1)),
        class_weights=class_weights, seed=plan.seed,
        weighted_sampler=training.sampler == "weighted" and plan.task == SEQUENCE_CLASSIFICATION,
        bf16=resolve_bf16(training.bf16), should_stop=hooks.should_stop,
    )
    slice_ds = _subset(train_ds, slice_idx)

    def evaluate() -> dict:
        return evaluate_model(model, slice_ds, collator=eval_collator, task=plan.task, labels=labels,
                              batch_size=batch)

    base_rate = hp["learning_rate"]
    started = time.monotonic()
    try:
        outcome = _halving(runner, evaluate, [base_rate * f for f in factors], survivors, rung, task=plan.task,
                           default=base_rate, slice_examples=len(slice_idx))
    finally:
        runner.finish()
    if outcome is None:
        return {"ran": False, "stopped": True, "reason": "stopped during the search"}
    trials, chosen, trial_steps, train_seconds = outcome
    seconds = time.monotonic() - started
    factor = chosen / base_rate
    return {
        "ran": True, "metric": "macro_f1" if plan.task == SEQUENCE_CLASSIFICATION else "loss",
        "slice_examples": len(slice_idx), "trial_examples": len(trial_idx),
        "candidates": [base_rate * f for f in factors], "rung_steps": [rung * 2 ** k for k in range(len(survivors))],
        "trials": trials, "chosen": chosen, "factor": factor,
        "hyperparameters": {**{k: hp[k] * factor for k in rate_keys(hp)},
                            "learning_rate_multiplier": hp.get("learning_rate_multiplier", 1.0) * factor},
        "trial_steps": trial_steps, "planned_steps": planned, "seconds": round(seconds, 3),
        # The search against the planned run's training time, from the trials' own step time.
        "estimated_extra_percent": round(100 * seconds / max(train_seconds / trial_steps * planned, 1e-9), 1),
    }


def _score(metrics: dict, *, task: str, factor: float) -> tuple:
    loss = metrics["valid_loss"] if math.isfinite(metrics["valid_loss"]) else math.inf
    nearness = abs(math.log(factor))  # a tie goes to the candidate nearer the default
    if task == SEQUENCE_CLASSIFICATION:
        return (-metrics["macro_f1"], loss, nearness)
    return (loss, nearness)


def _halving(runner: TrialRunner, evaluate, rates: list[float], survivors: list[int], rung: int, *, task: str,
             default: float, slice_examples: int):
    """(trial records, the chosen rate, trial steps, seconds spent training) or None when stopped."""
    alive = [Trial(rate) for rate in rates]
    records, trial_steps, train_seconds = [], 0, 0.0
    for k in range(len(survivors)):
        steps = rung * 2 ** k
        scored = []
        for trial in alive:
            t, trial_steps = time.monotonic(), trial_steps + steps - trial.steps
            if not runner.advance(trial, steps):
                return None
            train_seconds += time.monotonic() - t
            metrics = evaluate()
            records.append({"learning_rate": trial.learning_rate, "rung": k + 1, "steps": steps,
                            "metric": metrics.get("macro_f1", metrics["valid_loss"]),
                            "loss": metrics["valid_loss"], "train_loss": trial.losses[-1]})
            scored.append((_score(metrics, task=task, factor=trial.learning_rate / default), trial))
        scored.sort(key=lambda pair: pair[0])
        keep = survivors[k + 1] if k + 1 < len(survivors) else 1
        alive = [trial for _, trial in scored[:keep]]
    chosen = _keep_default(records[-len(scored):], alive[0].learning_rate, default=default, task=task,
                           slice_examples=slice_examples)
    return records, chosen, trial_steps, train_seconds


def _keep_default(last_rung: list[dict], best: float, *, default: float, task: str, slice_examples: int) -> float:
    """The default rate when it ran the last rung and the best candidate's slice macro-F1 beats it by
    at most one slice example's worth; else the best candidate."""
    if task != SEQUENCE_CLASSIFICATION or best == default:
        return best
    by_rate = {r["learning_rate"]: r["metric"] for r in last_rung}
    if default in by_rate and by_rate[best] - by_rate[default] <= 1 / max(slice_examples, 1):
        return default
    return best


def _report(hooks, record: dict, *, default: float) -> None:
    on_evaluation = getattr(hooks, "on_evaluation", None)
    if on_evaluation is not None:
        on_evaluation(stage="search", message=search_message(record, default=default), data=record)


def search_message(record: dict, *, default: float) -> str:
    if not record["ran"]:
        return f"Learning-rate search skipped: {record['reason']}; training at {default:.3g}"
    last: dict[float, dict] = {}
    for trial in record["trials"]:
        last[trial["learning_rate"]] = trial  # each candidate's furthest rung
    metric = record["metric"]
    tried = ", ".join(f"{rate:.3g} {metric} {t['metric']:.3g} ({t['steps']} steps)" for rate, t in last.items())
    return (f"Learning-rate search on {record['slice_examples']} held-back training examples: {tried} -> "
            f"{record['chosen']:.3g} ({record['trial_steps']} trial steps, {record['seconds']:.1f} s, "
            f"about +{record['estimated_extra_percent']:.0f} % of the planned run)")
