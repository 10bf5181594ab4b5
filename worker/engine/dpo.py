"""DPO (Rafailov et al. 2023) on OpenAI's preference pairs, trained with trl's DPOTrainer.

The reference model is the base model:
- lora / qlora: the same model with its adapter switched off (peft's disable_adapter). trl, given a peft
  model, would keep a copy of the fresh adapter as a second "ref" adapter; that copy equals the base here
  (a new LoRA adapter starts as a no-op), so it is deleted and trl falls back to switching the adapter off.
  No second model is in memory. A continued job (DPO after SFT: ``plan.init_adapter``) starts from an
  adapter that already changes the model: trl's frozen copy of it is kept as the reference (the model
  the run starts from, as DPO after SFT expects) and left out of the artifact.
- full: every weight moves, so nothing can be switched off: a second, frozen copy of the base model is
  loaded (the memory estimator counts it: hubtune/estimator.py).

Each training step runs four forward passes (chosen and rejected, policy and reference; the reference
ones without gradients), which is why a DPO step costs about twice an SFT step of the same batch.

Metrics: trl's rewards of the chosen and rejected replies, their margin and the preference accuracy, on
training steps (``train_*``) and evaluations (``valid_*``), go through the hooks like the losses do. The
baseline and the final evaluation are the engine's own log-probability comparison
(worker.engine.preference_eval) of the base and the tuned model on the held-out pairs.
"""

from __future__ import annotations

import time
from typing import Any

from transformers import PrinterCallback, set_seed

from hubtune.spec import DPO_TUNING
from worker.engine.artifact import save_artifact
from worker.engine.callbacks import EarlyStopping, HooksCallback, train_loss_metrics
from worker.engine.data import CAUSAL_LM, DataError, Examples, check_method, check_validation, load_examples
from worker.engine.evaluate import SPLIT_KEYS, compact_split, split_for_evaluation
from worker.engine.hf_trainer import training_arguments, world_size
from worker.engine.holdout import reliability
from worker.engine.loading import count_params, load_base_model, load_tokenizer, quiet
from worker.engine.methods import MethodError, get_method
from worker.engine.pairs import text_pairs
from worker.engine.plan import Hooks, TrainPlan, TrainResult, report_evaluation
from worker.engine.preference_eval import PRIMARY_METRIC, preference_metrics

DEFAULT_BETA = 0.1  # trl's and the DPO paper's
# trl's logged names -> ours (prefixed train_ / valid_ in the step events).
TRL_METRICS = {"rewards/chosen": "rewards_chosen", "rewards/rejected": "rewards_rejected",
               "rewards/margins": "rewards_margin", "rewards/accuracies": "preference_accuracy"}


class PreferenceCallback(HooksCallback):
    """The hooks' callback, with DPO's rewards and preference accuracy added to each logged step."""

    def extra_metrics(self, logs: dict, *, evaluated: bool) -> dict:
        prefix, source = ("valid_", "eval_") if evaluated else ("train_", "")
        return {prefix + ours: float(logs[source + theirs]) for theirs, ours in TRL_METRICS.items()
                if isinstance(logs.get(source + theirs), (int, float))}


def _load_data(plan: TrainPlan) -> tuple[Examples, Examples | None]:
    train = load_examples(plan.train_file, task=CAUSAL_LM, param="training_file")
    check_method(train, method="dpo", param="training_file")
    valid = None
    if plan.valid_file is not None:
        valid = load_examples(plan.valid_file, task=CAUSAL_LM, param="validation_file")
        check_method(valid, method="dpo", param="validation_file")
        check_validation(train, valid)
    return train, valid


def _dataset(pairs: list[dict]):
    from datasets import Dataset

    return Dataset.from_list(pairs)


def _fresh_adapter(model) -> bool:
    """True while the adapter changes nothing yet (every LoRA B matrix is zero, as peft initialises it)."""
    return all(not p.detach().any() for n, p in model.named_parameters() if "lora_B.default" in n)


def _drop_reference_adapter(model) -> bool:
    """Delete trl's "ref" copy of a fresh adapter, so the reference is the adapter switched off (see
    above). An adapter that already changes the model (a run continued from an earlier fine-tune) keeps
    its copy: the reference is then the model the run starts from, as DPO after SFT expects."""
    config = getattr(model, "peft_config", None)
    if not config or "ref" not in config or not _fresh_adapter(model):
        return False
    model.delete_adapter("ref")
    model.set_adapter("default")
    return True


def _frozen_reference(plan: TrainPlan, tokenizer, method):
    """Full fine-tuning's reference: a second copy of the base model, in eval mode, without gradients."""
    ref, _ = load_base_model(plan.model_dir, task=CAUSAL_LM, tokenizer=tokenizer,
                             method_kwargs=method.base_model_kwargs(plan.tuning),
                             trust_remote_code=plan.trust_remote_code)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def train_dpo(plan: TrainPlan, hooks: Hooks) -> TrainResult:
    """Train ``plan`` (method "dpo") in this process; same contract as worker.engine.trainer.train_local."""
    from datasets import disable_progress_bars
    from trl import DPOConfig, DPOTrainer

    if plan.tuning.type not in DPO_TUNING:  # e.g. a continued job whose parent used bottleneck adapters
        raise MethodError(f"method type 'dpo' trains with tuning.type {', '.join(DPO_TUNING)}, "
                          f"not {plan.tuning.type!r}")
    quiet()
    disable_progress_bars()  # trl maps the pairs with datasets: its bars would fill the worker's log
    started = time.monotonic()
    timings: dict[str, float] = {}
    mark = _clock(timings)
    file_examples, valid_examples = _load_data(plan)
    train_examples, eval_examples, split = split_for_evaluation(
        file_examples, valid_examples, fraction=plan.training.validation_split, seed=plan.seed)
    # The split's reliability note names the primary metric: here the preference accuracy, not valid_loss.
    split.update(reliability(eval_examples, source=split["source"], primary_metric=PRIMARY_METRIC))
    set_seed(plan.seed)
    tokenizer = load_tokenizer(plan.model_dir, trust_remote_code=plan.trust_remote_code)
    method = get_method(plan.tuning.type)
    base, new_modules = load_base_model(plan.model_dir, task=CAUSAL_LM, tokenizer=tokenizer,
                                        method_kwargs=method.base_model_kwargs(plan.tuning),
                                        trust_remote_code=plan.trust_remote_code)
    if plan.init_adapter is not None:  # a continued job (DPO after SFT): the parent's adapter, trained further
        model = method.resume(base, plan.init_adapter, plan.tuning, task=CAUSAL_LM)
    else:
        model = method.build(base, plan.tuning, task=CAUSAL_LM, modules_to_save=new_modules)
    ref_model = _frozen_reference(plan, tokenizer, method) if plan.tuning.type == "full" else None
    trainable, total = count_params(model)
    mark("load_s")

    max_len, batch = plan.training.max_seq_length, plan.hyperparameters["batch_size"]
    train_pairs, eval_pairs = text_pairs(tokenizer, train_examples), text_pairs(tokenizer, eval_examples)
    if not train_pairs:
        raise DataError("the training file has no preference pairs left to train on", code="empty_file",
                        param="training_file")
    mark("tokenize_s")
    # The baseline: the preference accuracy of the model training starts from (the base model, as a fresh
    # adapter changes nothing yet; a continued job's parent fine-tune).
    base_metrics = preference_metrics(model, tokenizer, eval_pairs, max_length=max_len, batch_size=batch)
    start = "model it continues from" if plan.init_adapter is not None else "base model"
    report_evaluation(hooks, stage="baseline", data={
        "split": compact_split(split), "primary_metric": PRIMARY_METRIC, "base": base_metrics,
        "base_kind": "base_model", "majority_baseline": None, "probe": None,
    }, message=f"Baseline on {len(eval_pairs)} {split['source'].replace('_', ' ')} preference pairs: {start} "
               f"{PRIMARY_METRIC} {base_metrics[PRIMARY_METRIC]:.4g}")
    mark("baseline_eval_s")

    has_eval = plan.valid_file is not None or split["source"] == "held_out"
    args = training_arguments(
        plan, has_eval=has_eval, args_class=DPOConfig, beta=float(plan.hyperparameters.get("beta", DEFAULT_BETA)),
        # trl turns gradient checkpointing on by default; hubtune's training.gradient_checkpointing decides
        # (under transformers' current name for it, which wins over trl's default).
        max_length=max_len, activation_checkpointing=plan.training.gradient_checkpointing,
        precompute_ref_log_probs=False, label_names=[],
    )
    callback = PreferenceCallback(hooks, plan, trainable=trainable, total=total)
    early = EarlyStopping(plan.training.early_stopping_patience) if (
        plan.training.early_stopping_patience and has_eval) else None
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=_dataset(train_pairs),
                         eval_dataset=_dataset(eval_pairs) if has_eval else None, processing_class=tokenizer,
                         callbacks=[callback] + ([early] if early is not None else []))
    reference = ("frozen copy of the base model" if ref_model is not None
                 else "base model (adapter off)" if _drop_reference_adapter(trainer.model)
                 else "the starting adapter (a frozen copy)")
    trainer.remove_callback(PrinterCallback)
    mark("trainer_setup_s")
    output = trainer.train(resume_from_checkpoint=str(plan.resume_from) if plan.resume_from else None)
    mark("train_s")
    stopped = callback.stopped
    metrics = _final_metrics(trainer, callback, output, evaluate=has_eval and not stopped)
    metrics["train_runtime_s"] = round(time.monotonic() - started, 3)
    evaluation = None
    if not stopped:
        tuned = preference_metrics(model, tokenizer, eval_pairs, max_length=max_len, batch_size=batch)
        evaluation = _evaluation(split, base_metrics, tuned)
        report_evaluation(hooks, stage="final", data=evaluation, message=_evaluation_message(evaluation))
        mark("final_eval_s")
        if "ref" in (getattr(model, "peft_config", None) or {}):
            model.delete_adapter("ref")  # the reference copy is no part of the result: the artifact is one adapter
            model.set_adapter("default")
        if trainer.is_world_process_zero():
            save_artifact(plan, model, tokenizer, file_examples, metrics, evaluation=evaluation,
                          world_size=world_size())
            mark("save_s")
    metrics["timings_s"] = dict(timings)
    data = {"train_examples": len(train_pairs), "train_skipped_examples": 0,
            "valid_examples": len(eval_pairs) if split["source"] != "training_file" else 0,
            "eval_examples": len(eval_pairs), "split": compact_split(split), "fed_positions": None,
            "world_size": world_size(), "early_stopped_at": early.stopped_at if early is not None else None,
            "reference": reference}
    return TrainResult(stopped=stopped, steps=trainer.state.global_step,
                       trained_tokens=int(trainer.state.num_input_tokens_seen), metrics=metrics, reference={},
                       trainable_params=trainable, total_params=total, data=data, evaluation=evaluation)


def _clock(timings: dict[str, float]):
    last = [time.monotonic()]

    def mark(name: str) -> None:
        now = time.monotonic()
        timings[name] = round(timings.get(name, 0.0) + now - last[0], 4)
        last[0] = now

    return mark


def _final_metrics(trainer, callback: HooksCallback, output, *, evaluate: bool) -> dict[str, Any]:
    metrics: dict[str, Any] = train_loss_metrics(callback, output)
    if evaluate:
        if callback.latest.get("valid_step") != trainer.state.global_step:
            trainer.evaluate()  # logs through on_log: the hooks and callback.latest see it
        metrics.update({k: v for k, v in callback.latest.items() if k.startswith("valid_") and k != "valid_step"})
    return metrics


def _evaluation(split: dict, base: dict, tuned: dict) -> dict:
    """The evaluation record (worker.engine.evaluate's keys), with preference accuracy as the primary metric."""
    return {
        "split": {k: split[k] for k in SPLIT_KEYS if k in split},
        "primary_metric": PRIMARY_METRIC,
        "base": base,
        "tuned": tuned,
        "base_kind": "base_model",
        "majority_baseline": None,
        "beat_baseline": bool(tuned[PRIMARY_METRIC] > base[PRIMARY_METRIC]),
        "goal": None,
        "samples": [],
    }


def _evaluation_message(evaluation: dict) -> str:
    base, tuned = evaluation["base"][PRIMARY_METRIC], evaluation["tuned"][PRIMARY_METRIC]
    verdict = "beat the baseline" if evaluation["beat_baseline"] else "did not beat the baseline"
    return (f"Evaluation: {PRIMARY_METRIC} {tuned:.4g} after fine-tuning, {base:.4g} for the base model on "
            f"{evaluation['tuned']['pairs']} pairs; {verdict}")
