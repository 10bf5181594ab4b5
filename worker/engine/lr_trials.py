"""The trial loop of the learning-rate search (worker.engine.lr_search): a plain torch loop that trains
one candidate rate for a few optimizer steps, as the real run would train its first steps.

It copies what the HF Trainer does for a peft run (AdamW with betas 0.9/0.999, eps 1e-8; weight decay on
every weight but biases and norms; gradients clipped to norm 1.0; the plan's batch size and gradient
accumulation; the class-weighted loss; the plan's warmup + decay schedule computed over the FULL planned
step count), so that a trial sees the rates the real run would see in its first steps. No Trainer: its
setup, callbacks and checkpointing would cost more than a trial's few steps.

A trial's state (its trainable weights and AdamW moments) is copied to CPU between rungs: the search
only runs for small trainable states (lr_search.MAX_TRAINABLE_PARAMS), so a copy is cheap.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from worker.engine.data import SEQUENCE_CLASSIFICATION
from worker.engine.datasets import IGNORE_INDEX
from worker.engine.sampling import WeightedClassSampler

MAX_GRAD_NORM = 1.0  # TrainingArguments' default, which the plan does not change
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
NO_DECAY_NAMES = ("bias", "layernorm", "rmsnorm", "norm")  # the Trainer's forbidden patterns, simplified


@dataclass
class Trial:
    """One candidate rate and where its training has got to."""

    learning_rate: float
    steps: int = 0
    params: dict[str, torch.Tensor] | None = None  # trainable weights after `steps` (None: the initial ones)
    optimizer: dict | None = None  # AdamW's state_dict after `steps`
    losses: list[float] = field(default_factory=list)  # training loss of each step


def trainable_parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def snapshot(model) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable weights."""
    return {name: p.detach().to("cpu", copy=True) for name, p in trainable_parameters(model)}


@torch.no_grad()
def restore(model, weights: dict[str, torch.Tensor]) -> None:
    for name, p in trainable_parameters(model):
        p.copy_(weights[name].to(p.device))
        p.grad = None


def _to_cpu(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def _optimizer(model, weight_decay: float) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in trainable_parameters(model):
        plain = name.lower()
        (no_decay if any(part in plain for part in NO_DECAY_NAMES) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=1.0, betas=ADAM_BETAS, eps=ADAM_EPS)


def schedule_multipliers(*, name: str, warmup: float | int, planned_steps: int, steps: int) -> list[float]:
    """The factor the scheduler puts on the rate at each of the first ``steps`` optimizer steps of a run of
    ``planned_steps`` (transformers.get_scheduler, as the Trainer makes it; a warmup below 1 is a ratio)."""
    import math

    from transformers import get_scheduler

    warmup_steps = int(warmup) if warmup >= 1 else math.ceil(planned_steps * warmup)
    dummy = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = get_scheduler(name, dummy, num_warmup_steps=warmup_steps, num_training_steps=planned_steps)
    out = []
    for _ in range(steps):
        out.append(float(scheduler.get_last_lr()[0]))
        dummy.step()
        scheduler.step()
    return out


class TrialRunner:
    """Trains trials of one model on one data set; every trial sees the same batches in the same order."""

    def __init__(self, model, dataset, *, collator, task: str, batch_size: int, grad_accum: int,
                 weight_decay: float, multipliers: list[float], class_weights: list[float] | None, seed: int,
                 weighted_sampler: bool = False, bf16: bool = False, should_stop=lambda: False) -> None:
        self.model, self.dataset, self.collator, self.task = model, dataset, collator, task
        self.batch_size, self.grad_accum, self.weight_decay = batch_size, grad_accum, weight_decay
        self.multipliers, self.class_weights, self.seed = multipliers, class_weights, seed
        self.weighted_sampler, self.bf16, self.should_stop = weighted_sampler, bf16, should_stop
        self.device = next(model.parameters()).device
        self._batches: list[list[int]] = []  # micro-batches of dataset indices, epoch after epoch
        self._epochs = 0
        self.initial = snapshot(model)

    def _micro_batches(self, step: int) -> list[list[int]]:
        needed = (step + 1) * self.grad_accum
        while len(self._batches) < needed:
            if self.weighted_sampler:
                sampler = WeightedClassSampler([int(f["labels"]) for f in self.dataset.features], seed=self.seed)
                sampler.set_epoch(self._epochs)
                order = list(iter(sampler))
            else:
                generator = torch.Generator().manual_seed(self.seed + self._epochs)
                order = torch.randperm(len(self.dataset), generator=generator).tolist()
            self._batches += [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            self._epochs += 1
        return self._batches[step * self.grad_accum:needed]

    def _loss(self, batch: dict, n_tokens: int) -> torch.Tensor:
        labels = batch.pop("labels")
        logits = self.model(**batch).logits.float()
        if self.task == SEQUENCE_CLASSIFICATION:
            weight = None if self.class_weights is None else torch.tensor(self.class_weights, device=logits.device)
            return torch.nn.functional.cross_entropy(logits, labels, weight=weight) / self.grad_accum
        shifted = labels[:, 1:]
        total = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), shifted.reshape(-1), ignore_index=IGNORE_INDEX,
            reduction="sum")
        return total / max(n_tokens, 1)  # the mean over the accumulated step's trained tokens, as the Trainer

    def _autocast(self):
        if self.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def advance(self, trial: Trial, to_steps: int) -> bool:
        """Train ``trial`` on from its own state until it has ``to_steps`` steps; False when should_stop()
        asked to stop (polled after every step; the trial is then left as it was)."""
        restore(self.model, trial.params if trial.params is not None else self.initial)
        optimizer = _optimizer(self.model, self.weight_decay)
        if trial.optimizer is not None:
            optimizer.load_state_dict(trial.optimizer)
        torch.manual_seed(self.seed + trial.steps)  # dropout: the same masks for every candidate
        self.model.train()
        params = [p for _, p in trainable_parameters(self.model)]
        losses = []
        for step in range(trial.steps, to_steps):
            micro = [self.collator([self.dataset[i] for i in idx]) for idx in self._micro_batches(step)]
            n_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro) \
                if self.task != SEQUENCE_CLASSIFICATION else 0
            step_loss = 0.0
            for batch in micro:
                batch = {k: v.to(self.device) for k, v in batch.items()}
                with self._autocast():
                    loss = self._loss(batch, n_tokens)
                loss.backward()
                step_loss += float(loss.detach())
            torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
            for group in optimizer.param_groups:
                group["lr"] = trial.learning_rate * self.multipliers[step]
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(step_loss)
            if self.should_stop():
                return False
        trial.steps, trial.losses = to_steps, trial.losses + losses
        trial.params, trial.optimizer = snapshot(self.model), _to_cpu(optimizer.state_dict())
        return True

    def finish(self) -> None:
        """Put the initial trainable weights back (the main run starts where it would have)."""
        restore(self.model, self.initial)
