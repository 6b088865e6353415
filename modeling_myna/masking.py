"""Masking policies for Myna pre-training, expressed as noise generators.

Myna (arXiv 2502.12511, §3.3) keeps a uniformly random `N - int(0.9 N)` of each view's patch tokens; §5.3 leaves
"more sophisticated sampling policies (learned or fixed)" open. The model keeps the tokens with the smallest `noise`
(MAE's `random_masking`, `ids_keep = noise.argsort(1)[:, :k]`), so a policy only has to return a `noise` tensor
whose `k` smallest entries are the tokens it wants: the model's forward is the same for every policy, every example
keeps the same number of tokens (batches stay dense), and a fixed generator gives a fixed mask.

Every policy draws its randomness for the whole global batch from one `torch.Generator` and keeps the rows of this
process (`rows`), as the training loop does for crops, so N processes with batch B draw the masks of one process
with batch N * B. The policies, on a grid of `H` patch rows (frequency) by `W` patch columns (time):

- `uniform` (the paper's): `torch.rand`, bit for bit the draw the training loop made before policies existed.
- `time_block`: the kept tokens lie in one contiguous span of `block_columns` patch columns (default the narrowest
  span that holds `k` tokens, `ceil(k / H)`), uniformly placed; inside it, a uniform choice.
- `frequency_band`: the same along frequency, a band of `band_rows` patch rows (default `ceil(k / W)`). Square
  patches only: a vertical (128x2) patch spans every mel bin, its grid has a single row, and a band is the whole grid,
  so on vertical patches this policy *is* `uniform` (a vertical-only model rejects it; a hybrid's vertical
  tokenizer draws uniform masks).
- `multi_block`: a few (`num_blocks`, default 2) rectangles of random aspect ratio (log-uniform in [1/2, 2]), each of
  about `coverage * k / num_blocks` tokens, uniformly placed; the kept tokens are a uniform choice inside their
  union, completed uniformly from outside when overlapping blocks hold fewer than `k`. It follows the context blocks
  of I-JEPA (Assran et al. 2023, "Self-Supervised Learning from Images with a Joint-Embedding Predictive
  Architecture"), scaled down to the 5 tokens a 90%-masked Myna view keeps.
- `complementary` (correlates the two views): view 1 is uniform; view 2 keeps a uniform choice among the tokens
  that share nothing with view 1's, so the two views keep disjoint sets. That needs `2 k <= N` (masking >= 50%):
  asking for more is an error. Given `view_shift_frames` (second crop start minus first, what pre-training passes),
  disjoint means disjoint audio: view 2 avoids every token of the same frequency row whose frames overlap a kept
  view-1 token (two view-1 columns when the shift is not a whole number of patches), so overlapping crops keep
  disjoint content; crops that do not overlap share no audio, and view 2 is uniform. Fallback: when fewer than `k`
  tokens of view 2 overlap no kept view-1 audio (possible only when `3 k > N`, i.e. masking below 2/3, with a shift
  that is not a whole number of patches), that pair is aligned to the nearest patch instead, so the views share no
  whole patch of audio. Without `view_shift_frames`, disjoint means the same grid position, which says nothing about
  content for independently cropped views.
- `saliency` (adaptive, data-dependent): tokens sampled without replacement with probability proportional to
  `exp(s / temperature)`, `s` the per-example z-scored saliency of the patch (`"energy"`: `log1p` of the patch's
  mean power; `"flux"`: mean positive frame-to-frame difference of the log-power of the patch's band of mel bins,
  spectral flux as in onset detection, Bello et al. 2005). Sampling is the Gumbel-top-k trick (Kool, van Hoof &
  Welling 2019, "Stochastic Beams and Where to Find Them"): keep the top k of `s / temperature + Gumbel`. Large temperatures tend to
  `uniform`; small ones to the k most salient patches. Choosing tokens by a saliency is in the spirit of AttMask
  (Kakogeorgiou et al. 2022), which ranks tokens by a teacher's attention; ranking them by the input's energy or
  flux, with no teacher, is this project's choice, not a published recipe.

A schedule of the masking ratio over training (`mask_ratio_at`): constant (the paper), or linear / cosine from
`mask_ratio_start` to the final `mask_ratio`.
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .configuration_myna import MASK_RATIO_SCHEDULES, MASKING_POLICIES


def _rand(shape, generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def _spans(length: int, span: int, shape, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
    """`(positions (length,), starts shape + (1,))`: uniform starts of a `span`-long interval inside `length`."""
    starts = (_rand(shape, generator, device) * (length - span + 1)).long().clamp(max=length - span)
    return torch.arange(length, device=device), starts[..., None]


def _prefer(inside: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """Noise that keeps the tokens `inside` first (uniformly among them, by `base` in [0, 1)), then the others."""
    return base + (~inside).to(base.dtype)


class MynaMaskingPolicy:
    """A masking policy: `policy(grid_size, num_kept, batch_size, ...)` returns `noise` for the model.

    Subclasses implement `draw`, which returns `(num_views, batch_size, H * W)` noise for the whole global batch;
    `__call__` keeps the rows of this process and orders them view-major, as `MynaForContrastivePretraining` expects.
    """

    name = "uniform"
    uses_inputs = False  # whether `draw` needs the views' spectrograms (`views`)
    uses_view_shift = False  # whether `draw` uses the crops' offset (`view_shift_frames`)

    def draw(self, grid_size, num_kept, num_views, batch_size, generator, device, **inputs) -> torch.Tensor:
        height, width = grid_size
        return _rand((num_views, batch_size, height * width), generator, device)

    def __call__(
        self,
        grid_size: tuple[int, int],
        num_kept: int,
        batch_size: int,
        *,
        num_views: int = 2,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        rows: slice | None = None,
        views: Sequence[torch.Tensor] | None = None,
        patch_size: Sequence[int] | None = None,
        view_shift_frames: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """
        Args:
            grid_size: `(H, W)` patch rows (frequency) and columns (time) of one view.
            num_kept: tokens each example keeps, `k` (`num_kept_tokens(H * W, mask_ratio)`).
            batch_size: examples in the global batch (the draw's size; `rows` picks this process's).
            generator: the source of every random draw; a fixed generator state gives a fixed mask.
            rows: this process's rows of the global batch (all by default).
            views: the `num_views` spectrograms `(b, num_mel_bins, frames)` of this process's rows, for policies that
                look at the input (`saliency`); `patch_size` `[height, width]` goes with them.
            view_shift_frames: `(batch_size,)` start of the second crop minus the first, for `complementary`.

        Returns:
            `noise` `(num_views * b, H * W)`, rows view-major: the model keeps the `num_kept` smallest per row.
        """
        height, width = grid_size
        if not 0 < num_kept <= height * width:
            raise ValueError(f"num_kept={num_kept} must be between 1 and the {height * width} tokens of the grid.")
        if self.uses_inputs and (views is None or patch_size is None):
            raise ValueError(f"the {self.name!r} masking policy looks at the input: pass views= and patch_size=.")
        rows = rows if rows is not None else slice(None)
        noise = self.draw(
            grid_size, num_kept, num_views, batch_size, generator, device,
            rows=rows, views=views, patch_size=patch_size, view_shift_frames=view_shift_frames,
        )
        return noise[:, rows].reshape(-1, height * width)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({options})"


class MynaUniformMasking(MynaMaskingPolicy):
    """The paper's policy: every subset of `k` tokens equally likely."""

    name = "uniform"


class MynaTimeBlockMasking(MynaMaskingPolicy):
    """Keeps tokens inside one contiguous span of `block_columns` patch columns (time)."""

    name = "time_block"

    def __init__(self, block_columns: int | None = None):
        self.block_columns = block_columns

    def draw(self, grid_size, num_kept, num_views, batch_size, generator, device, **inputs):
        height, width = grid_size
        span = min(width, max(self.block_columns or 0, math.ceil(num_kept / height)))
        base = _rand((num_views, batch_size, height * width), generator, device)
        positions, starts = _spans(width, span, (num_views, batch_size), generator, device)
        column = positions.repeat(height)  # (N,) column of each token, row-major grid
        return _prefer((column >= starts) & (column < starts + span), base)


class MynaFrequencyBandMasking(MynaMaskingPolicy):
    """Keeps tokens inside one band of `band_rows` patch rows (frequency); uniform on one-row (vertical) grids."""

    name = "frequency_band"

    def __init__(self, band_rows: int | None = None):
        self.band_rows = band_rows

    def draw(self, grid_size, num_kept, num_views, batch_size, generator, device, **inputs):
        height, width = grid_size
        base = _rand((num_views, batch_size, height * width), generator, device)
        if height == 1:
            return base  # a vertical patch spans every mel bin: the only band is the whole grid
        band = min(height, max(self.band_rows or 0, math.ceil(num_kept / width)))
        positions, starts = _spans(height, band, (num_views, batch_size), generator, device)
        row = positions.repeat_interleave(width)  # (N,) row of each token
        return _prefer((row >= starts) & (row < starts + band), base)


class MynaMultiBlockMasking(MynaMaskingPolicy):
    """Keeps tokens inside the union of `num_blocks` random rectangles (I-JEPA-style context blocks)."""

    name = "multi_block"

    def __init__(self, num_blocks: int = 2, coverage: float = 1.5, min_aspect: float = 0.5, max_aspect: float = 2.0):
        if num_blocks < 1 or coverage <= 0 or not 0 < min_aspect <= max_aspect:
            raise ValueError(
                f"multi_block needs num_blocks >= 1, coverage > 0 and 0 < min_aspect <= max_aspect, got "
                f"num_blocks={num_blocks}, coverage={coverage}, aspect [{min_aspect}, {max_aspect}]."
            )
        self.num_blocks = int(num_blocks)
        self.coverage = float(coverage)
        self.min_aspect = float(min_aspect)
        self.max_aspect = float(max_aspect)

    def draw(self, grid_size, num_kept, num_views, batch_size, generator, device, **inputs):
        height, width = grid_size
        shape = (num_views, batch_size, self.num_blocks)
        base = _rand((num_views, batch_size, height * width), generator, device)
        log_low, log_high = math.log(self.min_aspect), math.log(self.max_aspect)
        aspect = torch.exp(log_low + (log_high - log_low) * _rand(shape, generator, device))  # height / width
        area = self.coverage * num_kept / self.num_blocks
        block_height = torch.sqrt(area * aspect).round().clamp(1, height).long()
        block_width = (area / block_height).round().clamp(1, width).long()
        top = (_rand(shape, generator, device) * (height - block_height + 1)).long()
        left = (_rand(shape, generator, device) * (width - block_width + 1)).long()
        row = torch.arange(height, device=device).repeat_interleave(width)  # (N,)
        column = torch.arange(width, device=device).repeat(height)
        inside = (
            (row >= top[..., None]) & (row < (top + block_height)[..., None])
            & (column >= left[..., None]) & (column < (left + block_width)[..., None])
        ).any(dim=2)  # (V, B, N) in any block
        return _prefer(inside, base)


class MynaComplementaryMasking(MynaMaskingPolicy):
    """Two views that keep disjoint tokens (disjoint audio, given the crops' offset): view 2 keeps a uniform choice
    among the tokens that share nothing with view 1's kept tokens."""

    name = "complementary"
    uses_view_shift = True

    def draw(self, grid_size, num_kept, num_views, batch_size, generator, device, **inputs):
        if num_views != 2:
            raise ValueError(f"the complementary masking policy pairs two views, got num_views={num_views}.")
        height, width = grid_size
        if 2 * num_kept > height * width:
            raise ValueError(
                f"complementary masking keeps disjoint tokens in two views, but {num_kept} of {height * width} tokens "
                f"per view cannot be disjoint (2 x {num_kept} > {height * width}): mask at least 50% of the tokens "
                "(mask_ratio >= 0.5, and mask_ratio_start >= 0.5 with a schedule), or choose another policy."
            )
        first, second = _rand((2, batch_size, height * width), generator, device)
        kept = torch.zeros_like(first, dtype=torch.bool)
        kept.scatter_(1, first.argsort(dim=1)[:, :num_kept], True)  # (B, N) tokens view 1 keeps
        kept = kept.view(batch_size, height, width)
        shift = inputs.get("view_shift_frames")
        if shift is not None:
            patch_width = inputs["patch_size"][1] if inputs.get("patch_size") else None
            if patch_width is None:
                raise ValueError("complementary masking with view_shift_frames needs patch_size= to align columns.")
            shift = shift.to(first.device, torch.long)
            if shift.shape != (batch_size,):
                raise ValueError(
                    f"view_shift_frames has shape {tuple(shift.shape)}: pass one offset per example of the global "
                    f"batch, ({batch_size},)."
                )
            columns = torch.arange(width, device=first.device)
            # View 2's column c covers view 1's frames [shift + c * pw, shift + (c + 1) * pw): view-1 columns
            # c + q and, unless the shift is a whole number of patches, c + q + 1 (q = floor(shift / pw)).
            whole = torch.div(shift, patch_width, rounding_mode="floor")
            partial = (shift - whole * patch_width) != 0
            overlapped = self._overlapped(kept, columns + whole[:, None]) | (
                self._overlapped(kept, columns + whole[:, None] + 1) & partial[:, None, None]
            )
            # The documented fallback: too few tokens of view 2 clear of view 1's audio -> the nearest patch.
            nearest = self._overlapped(
                kept, columns + torch.round(shift.to(torch.float32) / patch_width).long()[:, None]
            )
            enough = (~overlapped).flatten(1).sum(1) >= num_kept
            kept = torch.where(enough[:, None, None], overlapped, nearest)
        return torch.stack((first, _prefer(~kept.reshape(batch_size, -1), second)))

    @staticmethod
    def _overlapped(kept: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """`(B, H, W)`: whether view 1 keeps the token of the same row at view-1 column `columns[b, c]` (`(B, W)`),
        `False` outside view 1."""
        width = kept.shape[2]
        valid = (columns >= 0) & (columns < width)
        found = kept.gather(2, columns.clamp(0, width - 1)[:, None, :].expand(-1, kept.shape[1], -1))
        return found & valid[:, None, :]


class MynaSaliencyMasking(MynaMaskingPolicy):
    """Samples tokens in proportion to `exp(saliency / temperature)` with the Gumbel-top-k trick."""

    name = "saliency"
    uses_inputs = True

    def __init__(self, temperature: float = 1.0, saliency: str = "energy"):
        if temperature <= 0:
            raise ValueError(f"saliency masking needs temperature > 0, got {temperature}.")
        if saliency not in ("energy", "flux"):
            raise ValueError(f"saliency={saliency!r}: choose 'energy' (patch log-power) or 'flux' (spectral flux).")
        self.temperature = float(temperature)
        self.saliency = saliency

    def scores(self, spectrograms: torch.Tensor, patch_size: Sequence[int]) -> torch.Tensor:
        """Per-example z-scored saliency of each patch, `(batch, H * W)` from `(batch, num_mel_bins, frames)`."""
        patch_height, patch_width = patch_size
        batch, num_mel_bins, num_frames = spectrograms.shape
        height, width = num_mel_bins // patch_height, num_frames // patch_width
        # Pooled over each band of patch rows before the logarithm (the costly part): one pass over the input.
        band = spectrograms.reshape(batch, height, patch_height, num_frames).sum(2, dtype=torch.float32)
        band = (band / patch_height).clamp(min=0)[..., : width * patch_width]  # (b, H, W * pw) band power
        if self.saliency == "energy":
            per_patch = torch.log1p(band.view(batch, height, width, patch_width).mean(-1))
        else:
            # Positive change of the band's log-power from the previous frame (the first frame has none), averaged
            # over the patch's frames: spectral flux, the onset-detection feature.
            log_band = torch.log1p(band)
            flux = F.pad((log_band[..., 1:] - log_band[..., :-1]).clamp(min=0), (1, 0))
            per_patch = flux.view(batch, height, width, patch_width).mean(-1)
        per_patch = per_patch.flatten(1)  # (b, H * W), row-major like the tokens
        return (per_patch - per_patch.mean(1, keepdim=True)) / (per_patch.std(1, keepdim=True) + 1e-6)

    def draw(self, grid_size, num_kept, num_views, batch_size, generator, device, **inputs):
        height, width = grid_size
        uniform = _rand((num_views, batch_size, height * width), generator, device)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
        gumbel = gumbel[:, inputs["rows"]]  # (V, b, N): this process's rows
        views = inputs["views"]
        if len(views) != num_views:
            raise ValueError(f"saliency masking got {len(views)} views for num_views={num_views}.")
        scores = torch.stack([self.scores(v, inputs["patch_size"]) for v in views]).to(gumbel.device)
        if scores.shape != gumbel.shape:
            raise ValueError(
                f"saliency scores {tuple(scores.shape)} do not match the {height}x{width} grid of this process's "
                f"rows {tuple(gumbel.shape)}: pass the views cropped to the model's frames."
            )
        # Smallest noise is kept: the top k of scores / T + Gumbel, i.e. sampling without replacement.
        noise = torch.full((num_views, batch_size, height * width), float("inf"), device=gumbel.device)
        noise[:, inputs["rows"]] = -(scores / self.temperature + gumbel)
        return noise


POLICY_CLASSES = {
    cls.name: cls
    for cls in (
        MynaUniformMasking,
        MynaTimeBlockMasking,
        MynaFrequencyBandMasking,
        MynaMultiBlockMasking,
        MynaComplementaryMasking,
        MynaSaliencyMasking,
    )
}


def build_masking_policy(name: str = "uniform", **options) -> MynaMaskingPolicy:
    """The policy `name` with its `options` (e.g. `build_masking_policy("saliency", temperature=0.5)`)."""
    if name not in POLICY_CLASSES:
        raise ValueError(f"unknown masking policy {name!r}: choose one of {list(POLICY_CLASSES)}.")
    try:
        return POLICY_CLASSES[name](**options)
    except TypeError as error:
        raise ValueError(f"masking policy {name!r} does not take options {options}: {error}.") from None


def masking_policy_from_config(config) -> MynaMaskingPolicy:
    """The policy a `MynaConfig` names (`masking_policy`, `masking_policy_kwargs`)."""
    return build_masking_policy(config.masking_policy, **(config.masking_policy_kwargs or {}))


def mask_ratio_at(
    step: int, total_steps: int, mask_ratio: float, schedule: str = "constant", start: float | None = None
) -> float:
    """Masking ratio at optimiser `step` of `total_steps`: `mask_ratio` throughout (`"constant"`, the paper), or from
    `start` to `mask_ratio` along a `"linear"` or `"cosine"` ramp (reached at the last step)."""
    if schedule not in MASK_RATIO_SCHEDULES:
        raise ValueError(f"mask_ratio_schedule={schedule!r}: choose one of {list(MASK_RATIO_SCHEDULES)}.")
    if schedule == "constant" or start is None:
        return mask_ratio
    progress = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
    if schedule == "cosine":
        progress = (1.0 - math.cos(math.pi * progress)) / 2.0
    return start + (mask_ratio - start) * progress


def parse_policy_options(text: str | None) -> dict:
    """`"temperature=0.5,saliency=flux"` -> `{"temperature": 0.5, "saliency": "flux"}` (numbers become numbers)."""
    options = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise ValueError(f"masking policy options must read key=value[,key=value], got {item!r} in {text!r}.")
        value = value.strip()
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                continue
        options[key.strip()] = value
    return options


def masks_from_noise(noise: torch.Tensor, num_kept: int) -> torch.Tensor:
    """Boolean `(..., N)` of the tokens `noise` keeps (the model's `ids_keep`), for tests and pictures."""
    kept = torch.zeros_like(noise, dtype=torch.bool)
    return kept.scatter_(-1, noise.argsort(dim=-1)[..., :num_kept], True)


__all__ = [
    "MynaComplementaryMasking",
    "MynaFrequencyBandMasking",
    "MynaMaskingPolicy",
    "MynaMultiBlockMasking",
    "MynaSaliencyMasking",
    "MynaTimeBlockMasking",
    "MynaUniformMasking",
    "build_masking_policy",
    "mask_ratio_at",
    "masking_policy_from_config",
    "masks_from_noise",
    "parse_policy_options",
]
