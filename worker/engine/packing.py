"""Sequence packing for causal_lm: a batch's examples laid end to end in rows of at most
``max_seq_length`` tokens, instead of one padded row per example.

The step trains on exactly the examples it would without packing; only their layout changes.
Examples go into rows first-fit by decreasing length, and rows are padded to the fullest row, so a
batch of short and long examples feeds close to its real token count. Rows of bounded length, not
one row for the whole batch, keep attention's cost (quadratic in the row length) no higher than the
padded batch's.

Each example keeps its own positions (``position_ids`` restart at 0), and no ``attention_mask`` is
sent: transformers then reads the position resets as sequence boundaries and builds a block-diagonal
causal mask (``masking_utils.find_packed_sequence_indices``; flash-attention uses the same ids), so
no token attends to another example. A row's padding is one more such sequence, with no labels. The
first label of every example is masked: in the row its logit would come from the previous example's
last token (unpacked, that label is dropped by the shift anyway), so the loss covers exactly the
same tokens as the padded batch. The boundaries are only read when the model runs without a KV cache
(the Trainer sets ``config.use_cache = False``).
"""

from __future__ import annotations

import torch

from worker.engine.datasets import IGNORE_INDEX


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows whose total is at most ``capacity`` (first-fit by
    decreasing length; an example longer than ``capacity`` gets a row of its own)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


class PackingCollator:
    """Lays a batch out in rows of at most ``max_length`` tokens with per-example ``position_ids``."""

    def __init__(self, *, max_length: int, pad_id: int) -> None:
        self.max_length = max_length
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        rows = pack_rows(lengths, self.max_length)
        width = max(sum(lengths[i] for i in row) for row in rows)
        ids, labels, positions = [], [], []
        for row in rows:
            row_ids: list[int] = []
            row_labels: list[int] = []
            row_positions: list[int] = []
            for i in row:
                n = lengths[i]
                row_ids += features[i]["input_ids"]
                row_labels += [IGNORE_INDEX] + list(features[i]["labels"][1:n])
                row_positions += list(range(n))
            tail = width - len(row_ids)
            ids.append(row_ids + [self.pad_id] * tail)
            labels.append(row_labels + [IGNORE_INDEX] * tail)
            positions.append(row_positions + list(range(tail)))
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "position_ids": torch.tensor(positions, dtype=torch.long),
        }
