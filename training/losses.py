"""Contrastive losses for Myna pre-training: InfoNCE / NT-Xent (the paper) and SogCLR (the reference code).

Both take the two projected views of a (local) batch, `z1` and `z2` of shape `(B, D)` (or more views, `--num_views`),
compare them by cosine
similarity, and treat every other view in the *global* batch as a negative. Under several processes, features are
all-gathered; the gather's backward sums the gradients of every rank and hands each rank the slice of its own shard,
so that N processes with batch B compute exactly the loss and the gradients of one process with batch N * B (rows
are this rank's anchors, their labels offset by `rank * B`, as open_clip's loss.py). Similarities, the loss and the
SogCLR state are computed in float32 with autocast disabled, so a model run under `--mixed_precision bf16` does not
pass its logits or the state through bfloat16.

- `InfoNCELoss`: SimCLR's NT-Xent (Chen et al. 2020) over the 2B views at temperature 0.1, the Myna paper's loss.
- `SogCLRLoss`: the global contrastive loss of Yuan et al. 2022 ("Provable stochastic optimization for global
  contrastive learning: small batch does not harm performance") as libauc's `GCLoss_v1` computes it, which the
  reference code ghost-signal/myna trains with. Each example keeps a moving average `u` of its negatives' mean
  `exp(sim / T)`, keyed by dataset index; the gradient weights the negatives by `exp(sim / T) / u`, which makes
  small batches behave like large ones.

Both are called as `loss_fn(z1, z2, index=..., tokenizer=...)` (`loss_fn(z1, z2, z3, ...)` for more views),
directly or as `MynaForContrastivePretraining(views=[v1, v2], loss_fn=loss_fn, index=...)`.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def distributed_rank_and_world_size() -> tuple[int, int]:
    """`(rank, world_size)` of the default process group, `(0, 1)` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGatherWithGradient(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient and returns this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        ctx.rank, ctx.batch_size = rank, tensor.shape[0]
        shards = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(shards, tensor.contiguous())
        return torch.cat(shards, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        # Every rank's loss depends on every shard: sum the gradients, keep ours.
        grad = grad_output.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.batch_size
        return grad[start : start + ctx.batch_size], None, None


def gather_features(features: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """`(B, D)` local features to `(world_size * B, D)` global ones, rank-major, differentiable."""
    if world_size == 1:
        return features
    return _AllGatherWithGradient.apply(features, rank, world_size)


def gather_no_grad(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    """All-gather along dim 0 without gradient (indices, state values)."""
    if world_size == 1:
        return tensor
    shards = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(shards, tensor.contiguous())
    return torch.cat(shards, dim=0)


def float32_outside_autocast(device: torch.device):
    """A context in which autocast is off on `device`: the loss's matmuls and exponentials run in float32."""
    return torch.autocast(device_type=device.type, enabled=False)


class _GlobalContrastiveLoss(nn.Module):
    """What both losses share: normalisation, the gather, and the similarity of local anchors to all views."""

    def __init__(self, temperature: float = 0.1, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}.")
        self.temperature = temperature
        self._rank, self._world_size = rank, world_size

    def rank_and_world_size(self) -> tuple[int, int]:
        if self._rank is not None and self._world_size is not None:
            return self._rank, self._world_size
        return distributed_rank_and_world_size()

    def similarities(self, *views: torch.Tensor):
        """
        Returns `similarity` `(V B, V N B)`, float32: cosine similarities of the local anchors `[z1; z2; ...]` (the
        `V` views, two in the paper) to the global views `[Z1; Z2; ...]` (self-similarity set to -inf), not divided
        by the temperature; `positives` `(V B, V - 1)`, the columns of each anchor's other views of the same clip
        (for two views: the other view); and `(rank, world_size)`. Computed with autocast off.
        """
        z1 = views[0] if views else None
        if len(views) < 2 or any(z.shape != z1.shape for z in views) or z1.dim() != 2:
            raise ValueError(
                f"expected two or more views of shape (batch, dim), got {[tuple(z.shape) for z in views]}: pass the "
                "projections of the same clips in the same order."
            )
        num_views = len(views)
        rank, world_size = self.rank_and_world_size()
        batch_size = z1.shape[0]
        with float32_outside_autocast(z1.device):
            normalized = [F.normalize(z.float(), dim=-1) for z in views]
            global_views = torch.cat([gather_features(z, rank, world_size) for z in normalized])
            anchors = torch.cat(normalized)  # (V B, D)
            similarity = anchors @ global_views.T  # (V B, V N B)

        global_batch = batch_size * world_size
        local = torch.arange(batch_size, device=z1.device) + rank * batch_size  # labels offset by rank
        self_columns = torch.cat([local + v * global_batch for v in range(num_views)])
        # Anchor of view v, clip i: its positives are clip i in views v+1, v+2, ... (mod V).
        positives = torch.stack(
            [
                torch.cat([local + ((v + shift) % num_views) * global_batch for v in range(num_views)])
                for shift in range(1, num_views)
            ],
            dim=1,
        )
        rows = torch.arange(num_views * batch_size, device=z1.device)
        similarity[rows, self_columns] = float("-inf")  # a view is not its own negative
        return similarity, positives, (rank, world_size)


class InfoNCELoss(_GlobalContrastiveLoss):
    r"""NT-Xent over the 2B views of the global batch (Chen et al. 2020; the Myna paper's loss).

    For anchor `i` with other view `p(i)`: `-log(exp(s_ip / T) / sum_{k != i} exp(s_ik / T))`, `s` the cosine
    similarity, averaged over the anchors; float32 with autocast off. Stateless: `index` and `tokenizer` are accepted
    and ignored. With `V > 2` views per clip (`--num_views`), each anchor has `V - 1` positives and the term above is
    averaged over them (SupCon's "outside" form, Khosla et al. 2020, with the clip as the class); `V = 2` is NT-Xent.

    Args:
        temperature (`float`, defaults to 0.1): the paper's value.
        rank, world_size (`int`, *optional*): read from `torch.distributed` when not given.
    """

    def forward(self, *views: torch.Tensor, index=None, tokenizer: int = 0) -> torch.Tensor:
        similarity, positives, _ = self.similarities(*views)
        with float32_outside_autocast(similarity.device):
            logits = similarity / self.temperature
            return torch.stack([F.cross_entropy(logits, column) for column in positives.T]).mean()


class SogCLRLoss(_GlobalContrastiveLoss):
    r"""Global contrastive loss optimised with SogCLR (Yuan et al. 2022), as libauc's `GCLoss_v1` computes it.

    Follows `GCLoss_v1.forward` and `GCLoss_v1.adjust_gamma` in `libauc/losses/contrastive.py` of libauc 1.4.0
    (unchanged in 2.0.1; github.com/Optimization-AI/LibAUC), called by ghost-signal/myna's `utils.py:get_criterion`
    with `tau=0.1, gamma=0.9, eps=1e-8, gamma_schedule='constant'` (its default), `enable_isogclr=False` (default).
    With `s` the cosine similarity, `T` the temperature, `G` the global batch and `n = 2G - 2` the number of
    negatives of an anchor (every view of the global batch but itself and its positive `p(i)`):

    - per anchor `i` (a view of dataset example `index[i]`): `g_i = sum_k exp(s_ik / T) / n` over its negatives and
      `u'_i = (1 - gamma_t) * u[index[i]] + gamma_t * g_i`; the stored state becomes the mean of the example's two
      views, `u[index] <- (u'_view1 + u'_view2) / 2`.
    - first visit: libauc starts `u` at zeros and, while its gamma is above `gamma` (the first epoch, with the
      constant schedule), takes `gamma_t = 1` for a batch whose stored `u[index]` sum to 0 (`u' = g`), and
      `gamma_t = gamma` otherwise; from the second epoch on, `gamma_t = gamma`. The check is per batch (over the
      global batch here, as libauc sees it in the reference, which gathers features and indices before the loss).
      Call `set_epoch(epoch)` at the start of each epoch to follow the epoch rule; without it, the first-visit check
      stays on, which differs from libauc only for a batch made entirely of examples first seen after epoch 0.
    - loss: per anchor `-s_ip + sum_k w_ik s_ik / n` with `w_ik = exp(s_ik / T) / max(u'_i, eps)` held constant,
      summed over the two views and averaged over the examples: `sum_{2G anchors} / G`. Similarities are not divided
      by `T` in this term, so the gradient is that of `T log mean_k exp(s_ik / T) - s_ip` (libauc's `F(w)`, with the
      batch mean inside the log replaced by `u'_i`) summed over both views, averaged over examples. The value is a
      surrogate (it can go below 0); its gradient is the point.

    Unlike libauc, the state is a buffer of shape `(num_tokenizers, dataset_size)`, one per tokenizer of a hybrid
    model, as their similarities differ (the reference runs both tokenizers through one `GCLoss_v1`, whose single `u`
    then mixes the two tokenizers' estimates). It is kept on the model's device and saved with the module's
    `state_dict`; the first-visit check is a tensor, never read back to the host. Under several processes every rank
    computes only its own anchors' rows, and the indices and new values of every rank are gathered so that every rank
    holds the same state (the reference instead computes the whole global batch's loss on every rank, which gives
    the same gradients after DDP's averaging). iSogCLR (individual temperatures) and the cosine gamma schedule, both
    off in the reference's defaults, are not implemented.

    With `V > 2` views per clip (`--num_views`, not in libauc): the negatives of an anchor are every view of the other
    clips (`n = V G - V`), its positive term is the mean similarity to its `V - 1` other views, the state is the mean
    of the `V` views' estimates, and the sum over anchors is divided by `G V / 2`, so that `V = 2` is the above.

    Args:
        dataset_size (`int`): number of examples; `index` must lie in `[0, dataset_size)`.
        temperature (`float`, defaults to 0.1).
        gamma (`float`, defaults to 0.9): weight of the new estimate after the first visit (the reference's value).
        num_tokenizers (`int`, defaults to 1): 2 for a hybrid model; pick one with `tokenizer=`.
        eps (`float`, defaults to 1e-8): lower bound of `u'` in the weights (libauc's `eps`).
    """

    def __init__(
        self,
        dataset_size: int,
        temperature: float = 0.1,
        gamma: float = 0.9,
        num_tokenizers: int = 1,
        rank: int | None = None,
        world_size: int | None = None,
        eps: float = 1e-8,
    ):
        super().__init__(temperature, rank, world_size)
        if dataset_size <= 0:
            raise ValueError(f"dataset_size must be positive, got {dataset_size}.")
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}.")
        self.gamma = gamma
        self.eps = eps
        # libauc's first epoch (its gamma is 1.0 until `adjust_gamma` is called with an epoch > 0).
        self.first_visit_check = True
        self.register_buffer("u", torch.zeros(num_tokenizers, dataset_size))

    def set_epoch(self, epoch: int) -> None:
        """libauc's constant-schedule `adjust_gamma`: the first-visit check holds in epoch 0 only."""
        self.first_visit_check = epoch == 0

    def forward(self, *views: torch.Tensor, index: torch.Tensor = None, tokenizer: int = 0):
        if index is None:
            raise ValueError("SogCLRLoss needs `index`, the dataset index of every example of the batch.")
        if not 0 <= tokenizer < self.u.shape[0]:
            raise ValueError(
                f"tokenizer={tokenizer} but this loss keeps state for {self.u.shape[0]} tokenizer(s): build it with "
                "num_tokenizers=2 for a hybrid model."
            )
        z1, num_views = views[0], len(views)
        index = index.to(self.u.device, torch.long)
        # The range check reads values back, which would stall an accelerator every step: done on CPU only (out of
        # range indices fail in the indexing kernel there).
        out_of_range = index.device.type == "cpu" and bool((index < 0).any() or (index >= self.u.shape[1]).any())
        if index.shape != (z1.shape[0],) or out_of_range:
            raise ValueError(
                f"index must hold one dataset index in [0, {self.u.shape[1]}) per example, got shape "
                f"{tuple(index.shape)} for a batch of {z1.shape[0]}."
            )
        similarity, positives, (rank, world_size) = self.similarities(*views)
        batch_size = z1.shape[0]
        num_negatives = num_views * batch_size * world_size - num_views
        rows = torch.arange(num_views * batch_size, device=similarity.device)
        negative_mask = torch.ones_like(similarity, dtype=torch.bool)
        negative_mask[rows[:, None], positives] = False
        negative_mask &= torch.isfinite(similarity)  # drops the self column

        with float32_outside_autocast(similarity.device):
            with torch.no_grad():
                all_index = gather_no_grad(index, world_size)  # the global batch's indices, rank-major
                exp_logits = torch.where(negative_mask, (similarity / self.temperature).exp(), 0.0)  # (VB, VNB)
                batch_estimate = exp_logits.sum(dim=1) / num_negatives  # g_i, (VB,)
                gamma = torch.tensor(self.gamma, device=similarity.device)
                if self.first_visit_check:
                    # libauc: `u[index].sum() == 0` over the (global) batch; u >= 0, so: no example seen yet.
                    gamma = torch.where(self.u[tokenizer, all_index].sum() == 0, 1.0, gamma)
                state = self.u[tokenizer, index].float().repeat(num_views)  # (V B,) every view of each example
                u_views = (1 - gamma) * state + gamma * batch_estimate
                weights = exp_logits / u_views.clamp(min=self.eps)[:, None]
                new_state = u_views.view(num_views, batch_size).mean(dim=0)  # (B,) mean of the views' estimates
                all_state = gather_no_grad(new_state.to(self.u.dtype), world_size)
                self.u[tokenizer, all_index] = all_state

            positive_similarity = similarity.gather(1, positives).mean(dim=1)  # (V B,)
            safe_similarity = torch.where(negative_mask, similarity, 0.0)
            per_anchor = -positive_similarity + (weights * safe_similarity).sum(dim=1) / num_negatives  # (V B,)
            # libauc: (loss_view1 + loss_view2).mean() over the examples; V views count as V / 2 pairs.
            return per_anchor.sum() / (batch_size * num_views / 2)


LOSSES = {"infonce": InfoNCELoss, "sogclr": SogCLRLoss}

__all__ = [
    "LOSSES",
    "InfoNCELoss",
    "SogCLRLoss",
    "distributed_rank_and_world_size",
    "float32_outside_autocast",
    "gather_features",
    "gather_no_grad",
]
