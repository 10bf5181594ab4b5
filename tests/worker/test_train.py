"""worker/train.py: what only the training worker can check (its device), and the hand-over to publish."""

from __future__ import annotations

import pytest
import torch

from worker.engine.methods import MethodError


def test_prepare_leaves_the_device_to_routing_and_the_training_worker():
    """Prepare runs on compose.yaml's CPU worker: a qlora job passes it there (this machine has no CUDA;
    the GPU worker that trains it has), and the training side still refuses it on a CPU."""
    from hubtune.spec import JobRequest
    from worker.prepare import _check_method
    from worker.train import _check_device

    request = JobRequest(model="org/model", training_file="file-1", tuning={"type": "qlora"}, task="causal_lm")
    assert not torch.cuda.is_available()
    _check_method(request, task="causal_lm")
    with pytest.raises(MethodError, match="qlora needs a CUDA GPU; this worker has none") as err:
        _check_device(request)
    assert err.value.param == "tuning.type"
