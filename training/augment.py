"""Augmentation of pre-training views beyond Myna's token masking.

`random_equalizer`: each view of each clip is filtered by its own smooth random equaliser, a gain curve over the mel
bins of at most `max_db` decibels either way (a sum of the first `EQUALIZER_ORDER` cosines over the bins, with
uniform random weights). The two views of a pair then differ in spectral envelope, so the contrastive task cannot
be solved from the envelope (the instruments' timbre, a recording's or a SoundFont's colour) alone and leans on what
the two crops share beyond it: pitch content, harmony, rhythm.

The gains are drawn for the whole global batch from a generator seeded by `(seed, micro-batch)` and this process's
rows are kept, like the crops and the masks, so any number of processes trains on the same views.
"""

import numpy as np
import torch


EQUALIZER_ORDER = 3  # cosines in the gain curve: a tilt, a bump or a dip, and one more turn


def equalizer_gains_db(
    num_views: int, global_batch: int, num_mel_bins: int, max_db: float, seed: int, micro_batch: int
) -> torch.Tensor:
    """`(num_views, global_batch, num_mel_bins)` float32 gains in decibels, each row a smooth curve within
    `[-max_db, max_db]`: a pure function of `(seed, micro_batch)`."""
    if max_db < 0:
        raise ValueError(f"max_db={max_db}: an equaliser's largest gain is a non-negative number of decibels.")
    state = np.random.SeedSequence([seed, micro_batch, 0xE0]).generate_state(2, dtype=np.uint64)
    generator = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
    weights = torch.rand((num_views, global_batch, EQUALIZER_ORDER), generator=generator) * 2 - 1
    position = torch.linspace(0, 1, num_mel_bins)
    basis = torch.stack([torch.cos(torch.pi * k * position) for k in range(1, EQUALIZER_ORDER + 1)])  # (K, F)
    return max_db / EQUALIZER_ORDER * weights @ basis


def random_equalizer(
    views: list[torch.Tensor], max_db: float, seed: int, micro_batch: int, rows: slice, global_batch: int
) -> list[torch.Tensor]:
    """The `(B, F, T)` power-mel `views` of this process's `rows` of the global batch, each multiplied by its own
    random gain curve over `F` (`equalizer_gains_db`); float32. `max_db=0` returns the views unchanged."""
    if max_db == 0:
        return list(views)
    gains = equalizer_gains_db(len(views), global_batch, views[0].shape[1], max_db, seed, micro_batch)[:, rows]
    factors = torch.pow(10.0, gains / 10).to(views[0].device)  # power: 10 dB is a factor of 10
    return [view.float() * factor[:, :, None] for view, factor in zip(views, factors)]


__all__ = ["EQUALIZER_ORDER", "equalizer_gains_db", "random_equalizer"]
