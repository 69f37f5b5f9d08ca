"""The order a length-grouped stage trains in: drawn per epoch from its own seed, so that a resumed run draws it too."""

from __future__ import annotations

import torch
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """transformers' length-grouped order, drawn from a generator seeded by (seed, epoch) instead of the global RNG.

    The stock sampler draws each epoch's order from the global RNG as the epoch starts. A run resumed from a
    checkpoint in a later epoch had reseeded that RNG, so it drew another order than the run it continues, and
    finished with other weights (a study-smoke teacher resumed at step 9 of 20, in its third epoch). Seeded by
    the epoch, which the Trainer sets on resume as on every epoch, the order is the same either way."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))
