"""Augmentation of pre-training views beyond Myna's token masking.

`random_equalizer`: each view of each clip is filtered by its own smooth random equaliser, a gain curve over the mel
bins of at most `max_db` decibels either way (a sum of the first `EQUALIZER_ORDER` cosines over the bins, with
uniform random weights). The two views of a pair then differ in spectral envelope, so the contrastive task cannot
be solved from the envelope (the instruments' timbre, a recording's or a SoundFont's colour) alone and leans on what
the two crops share beyond it: pitch content, harmony, rhythm.

The gains are drawn for the whole global batch from a generator seeded by `(seed, micro-batch)` and this process's
rows are kept, like the crops and the masks, so any number of processes trains on the same views.
"""

import functools

import numpy as np
import torch


EQUALIZER_ORDER = 3  # cosines in the gain curve: a tilt, a bump or a dip, and one more turn


def equalizer_weights(num_views: int, global_batch: int, seed: int, micro_batch: int) -> torch.Tensor:
    """`(num_views, global_batch, EQUALIZER_ORDER)` uniform weights in `[-1, 1)` of the cosines, on the CPU: a pure
    function of `(seed, micro_batch)`."""
    state = np.random.SeedSequence([seed, micro_batch, 0xE0]).generate_state(1, dtype=np.uint64)[0]
    generator = torch.Generator().manual_seed(int(state >> np.uint64(1)))
    return torch.rand((num_views, global_batch, EQUALIZER_ORDER), generator=generator) * 2 - 1


@functools.lru_cache(maxsize=8)
def cosine_basis(num_mel_bins: int, device: torch.device) -> torch.Tensor:
    """`(EQUALIZER_ORDER, num_mel_bins)`: the cosines of 1 to `EQUALIZER_ORDER` half-periods over the bins, built once
    per size and device."""
    position = torch.linspace(0, 1, num_mel_bins)
    return torch.stack([torch.cos(torch.pi * k * position) for k in range(1, EQUALIZER_ORDER + 1)]).to(device)


def gains_db(weights: torch.Tensor, max_db: float, num_mel_bins: int) -> torch.Tensor:
    """`(..., num_mel_bins)` gains in decibels of `(..., EQUALIZER_ORDER)` weights, on the weights' device."""
    if max_db < 0:
        raise ValueError(f"max_db={max_db}: an equaliser's largest gain is a non-negative number of decibels.")
    return max_db / EQUALIZER_ORDER * weights @ cosine_basis(num_mel_bins, weights.device)


def equalizer_gains_db(
    num_views: int, global_batch: int, num_mel_bins: int, max_db: float, seed: int, micro_batch: int
) -> torch.Tensor:
    """`(num_views, global_batch, num_mel_bins)` float32 gains in decibels, each row a smooth curve within
    `[-max_db, max_db]`: a pure function of `(seed, micro_batch)`."""
    return gains_db(equalizer_weights(num_views, global_batch, seed, micro_batch), max_db, num_mel_bins)


def random_equalizer(
    views: list[torch.Tensor], max_db: float, seed: int, micro_batch: int, rows: slice, global_batch: int
) -> list[torch.Tensor]:
    """The `(B, F, T)` power-mel `views` of this process's `rows` of the global batch, each multiplied by its own
    random gain curve over `F` (`equalizer_gains_db`); float32. `max_db=0` returns the views unchanged.

    Only the `(views, B, EQUALIZER_ORDER)` weights cross to the views' device; the curves are made there."""
    if max_db == 0:
        return list(views)
    weights = equalizer_weights(len(views), global_batch, seed, micro_batch)[:, rows]
    gains = gains_db(weights.to(views[0].device), max_db, views[0].shape[1])
    factors = torch.pow(10.0, gains / 10)  # power: 10 dB is a factor of 10
    return [view.float() * factor[:, :, None] for view, factor in zip(views, factors)]


__all__ = ["EQUALIZER_ORDER", "cosine_basis", "equalizer_gains_db", "equalizer_weights", "gains_db", "random_equalizer"]
