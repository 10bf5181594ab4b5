"""Sequence packing for causal_lm: a batch's examples laid end to end in one row, without padding.

Each example keeps its own positions (``position_ids`` restart at 0), and no ``attention_mask`` is
sent: transformers then reads the position resets as sequence boundaries and builds a block-diagonal
causal mask (``masking_utils.find_packed_sequence_indices``; flash-attention uses the same ids), so
no token attends to another example. The first label of every example is masked: in the row its
logit would come from the previous example's last token (unpacked, that label is dropped by the
shift anyway), so the loss covers exactly the same tokens as the padded batch. The boundaries are
only read when the model runs without a KV cache (the Trainer sets ``config.use_cache = False``).
"""

from __future__ import annotations

import torch

from worker.engine.datasets import IGNORE_INDEX


class PackingCollator:
    """Concatenates a batch into one row with per-example ``position_ids``."""

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for feature in features:
            n = len(feature["input_ids"])
            ids += feature["input_ids"]
            labels += [IGNORE_INDEX] + list(feature["labels"][1:n])
            positions += list(range(n))
        return {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
        }
