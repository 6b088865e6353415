"""Tests of modeling_myna.masking (policies as noise generators, the masking-ratio schedule) and of the model-size
presets of modeling_myna.configuration_myna."""

import pytest
import torch

from modeling_myna import MynaConfig, MynaForContrastivePretraining, MynaModel
from modeling_myna.configuration_myna import MASKING_POLICIES, MODEL_SIZES, model_size_name
from modeling_myna.masking import (
    POLICY_CLASSES,
    build_masking_policy,
    mask_ratio_at,
    masks_from_noise,
    parse_policy_options,
)
from modeling_myna.modeling_myna import num_kept_tokens


SQUARE_GRID, VERTICAL_GRID = (8, 6), (1, 48)  # a 96-frame chunk with 16x16 and 128x2 patches
BATCH = 64


def spectrograms(batch: int, frames: int = 96, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand((batch, 128, frames), generator=generator) ** 4 * 1e6


def draw(name: str, grid=SQUARE_GRID, ratio: float = 0.9, seed: int = 0, batch: int = BATCH, **options):
    """`(kept masks (2, batch, H, W), noise (2 * batch, N))` of one policy."""
    policy = build_masking_policy(name, **options)
    num_kept = num_kept_tokens(grid[0] * grid[1], ratio)
    patch = [128 // grid[0], 96 // grid[1]]
    views = (spectrograms(batch, seed=1), spectrograms(batch, seed=2))
    noise = policy(
        grid, num_kept, batch, generator=torch.Generator().manual_seed(seed), views=views, patch_size=patch
    )
    return masks_from_noise(noise, num_kept).view(2, batch, *grid), noise


def test_the_policy_list_of_the_config_is_the_policy_classes():
    assert tuple(POLICY_CLASSES) == MASKING_POLICIES


@pytest.mark.parametrize("name", MASKING_POLICIES)
@pytest.mark.parametrize("grid", [SQUARE_GRID, VERTICAL_GRID])
@pytest.mark.parametrize("ratio", [0.9, 0.75, 0.5])
def test_every_policy_keeps_k_distinct_tokens_and_is_fixed_by_the_generator(name, grid, ratio):
    kept, noise = draw(name, grid, ratio)
    num_kept = num_kept_tokens(grid[0] * grid[1], ratio)
    # The model's ids_keep: k distinct tokens per row, the same k for every example (dense batches).
    ids_keep = noise.argsort(dim=1)[:, :num_kept]
    assert all(len(set(row.tolist())) == num_kept for row in ids_keep)
    assert torch.equal(kept.flatten(2).sum(-1), torch.full((2, BATCH), num_kept))
    # Same generator state: the same noise, bit for bit; another seed: other masks.
    again, noise_again = draw(name, grid, ratio)
    assert torch.equal(noise, noise_again)
    other, _ = draw(name, grid, ratio, seed=1)
    assert not torch.equal(kept, other)


def test_uniform_is_the_training_loops_original_draw():
    generator = torch.Generator().manual_seed(5)
    expected = torch.rand((2, 32, 48), generator=generator)[:, 8:16].reshape(16, 48)
    generator = torch.Generator().manual_seed(5)
    noise = build_masking_policy("uniform")(SQUARE_GRID, 5, 32, generator=generator, rows=slice(8, 16))
    assert torch.equal(noise, expected)


@pytest.mark.parametrize("name", MASKING_POLICIES)
def test_each_process_gets_its_rows_of_the_global_draw(name):
    grid, batch = SQUARE_GRID, 8
    views = (spectrograms(batch, seed=1), spectrograms(batch, seed=2))
    policy = build_masking_policy(name)
    whole = policy(grid, 5, batch, generator=torch.Generator().manual_seed(3), views=views, patch_size=[16, 16])
    halves = [
        policy(
            grid, 5, batch, generator=torch.Generator().manual_seed(3), rows=rows,
            views=tuple(v[rows] for v in views), patch_size=[16, 16],
        ).view(2, 4, -1)
        for rows in (slice(0, 4), slice(4, 8))
    ]
    torch.testing.assert_close(torch.cat(halves, dim=1).view(16, -1), whole)


def test_time_block_keeps_one_contiguous_span_of_columns():
    kept, _ = draw("time_block")  # 5 of 48 on 8 x 6: one column of 8 rows holds them
    columns = kept.any(dim=2)  # (2, B, W) columns with a kept token
    assert torch.equal(columns.sum(-1), torch.ones(2, BATCH, dtype=torch.long))
    kept, _ = draw("time_block", grid=VERTICAL_GRID)  # 5 consecutive columns of 48
    for row in kept.view(-1, 48):
        positions = row.nonzero().flatten()
        assert positions.max() - positions.min() == 4
    kept, noise = draw("time_block", block_columns=3)  # wider span: the kept columns lie within 3 consecutive ones
    for example in kept.view(-1, *SQUARE_GRID).any(dim=1):
        positions = example.nonzero().flatten()
        assert positions.max() - positions.min() <= 2
    span = (noise < 1).view(-1, *SQUARE_GRID).all(dim=1)  # (2B, W) the span's columns, noise below 1
    assert torch.equal(span.sum(-1), torch.full((2 * BATCH,), 3))
    assert len(set(span.float().argmax(dim=1).tolist())) == 4  # every placement of 3 columns in 6 is drawn


def test_frequency_band_keeps_one_band_of_rows_and_is_uniform_on_vertical_patches():
    kept, _ = draw("frequency_band")  # 5 of 48: one row of 6 tokens holds them
    rows = kept.any(dim=3)
    assert torch.equal(rows.sum(-1), torch.ones(2, BATCH, dtype=torch.long))
    assert len(set(rows.float().argmax(-1).flatten().tolist())) == 8  # every band is drawn
    kept, _ = draw("frequency_band", band_rows=2)
    for example in kept.view(-1, *SQUARE_GRID).any(dim=2):
        positions = example.nonzero().flatten()
        assert positions.max() - positions.min() <= 1
    # On a one-row grid the draw is exactly uniform's.
    _, noise = draw("frequency_band", grid=VERTICAL_GRID)
    _, uniform = draw("uniform", grid=VERTICAL_GRID)
    assert torch.equal(noise, uniform)
    with pytest.raises(ValueError, match="vertical patches span every mel bin"):
        MynaConfig.from_variant("vertical", masking_policy="frequency_band")
    MynaConfig.from_variant("hybrid", masking_policy="frequency_band")  # its vertical tokenizer draws uniform masks


def test_multi_block_keeps_tokens_inside_rectangles():
    policy = build_masking_policy("multi_block", num_blocks=2, coverage=3.0)
    num_kept, grid = 5, SQUARE_GRID
    generator = torch.Generator().manual_seed(0)
    noise = policy(grid, num_kept, BATCH, generator=generator)
    # The union of the blocks is where the noise is below 1; with coverage 3 it holds at least k tokens mostly, and
    # the kept tokens are inside it whenever it does.
    inside = (noise < 1).view(2, BATCH, -1)
    kept = masks_from_noise(noise, num_kept).view(2, BATCH, -1)
    big_enough = inside.sum(-1) >= num_kept
    assert big_enough.float().mean() > 0.8
    assert torch.equal((kept & ~inside).any(-1)[big_enough], torch.zeros(int(big_enough.sum()), dtype=torch.bool))
    # Each block is a rectangle: with one block, the region's bounding box is full.
    single = build_masking_policy("multi_block", num_blocks=1, coverage=2.0)
    inside = (single(grid, num_kept, BATCH, generator=torch.Generator().manual_seed(1)) < 1).view(-1, *grid)
    for region in inside:
        rows, columns = region.any(1).nonzero().flatten(), region.any(0).nonzero().flatten()
        box = region[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]
        assert box.all() and int(region.sum()) == box.numel()


@pytest.mark.parametrize("ratio", [0.9, 0.75, 0.5])
def test_complementary_views_keep_disjoint_tokens(ratio):
    kept, _ = draw("complementary", ratio=ratio)
    assert not (kept[0] & kept[1]).any()
    # Below 50% masking the views cannot be disjoint: refused, never a silent overlap.
    with pytest.raises(ValueError, match=r"36 of 48 tokens per view cannot be disjoint \(2 x 36 > 48\): mask at least 50%"):
        draw("complementary", ratio=0.25)


def test_complementary_aligns_shifted_crops_so_they_keep_disjoint_audio():
    policy = build_masking_policy("complementary")
    batch, grid, patch = 16, SQUARE_GRID, [16, 16]
    shift = torch.tensor([0, 16, -16, 32, 48, -80, 200, 7] * 2)  # second crop start minus first, frames
    generator = torch.Generator().manual_seed(0)
    noise = policy(grid, 5, batch, generator=generator, patch_size=patch, view_shift_frames=shift)
    kept = masks_from_noise(noise, 5).view(2, batch, *grid)
    for b in range(batch):
        offset = round(int(shift[b]) / 16)
        for row, column in kept[1, b].nonzero().tolist():
            source = column + offset  # the view-1 column showing the same audio
            assert not (0 <= source < 6 and kept[0, b, row, source])


def kept_audio(kept_view, start: int, patch_width: int = 16):
    """`{(row, frame)}` of the audio a view's kept tokens hold, frames counted from the first crop's start."""
    return {
        (row, start + column * patch_width + f)
        for row, column in kept_view.nonzero().tolist()
        for f in range(patch_width)
    }


@pytest.mark.parametrize("num_kept", [5, 16])  # 90% masking, and 2/3 (3 k = N: still disjoint for every shift)
def test_complementary_views_keep_disjoint_audio_for_any_crop_offset(num_kept):
    # Every offset of two 96-frame crops, whole patches or not, overlapping or not: the frames of each frequency row
    # kept by view 2 never meet those kept by view 1.
    policy = build_masking_policy("complementary")
    shift = torch.arange(-100, 101)
    batch, grid = len(shift), SQUARE_GRID
    noise = policy(grid, num_kept, batch, generator=torch.Generator().manual_seed(0), patch_size=[16, 16],
                   view_shift_frames=shift)
    kept = masks_from_noise(noise, num_kept).view(2, batch, *grid)
    for b in range(batch):
        assert not kept_audio(kept[0, b], 0) & kept_audio(kept[1, b], int(shift[b])), int(shift[b])
    # Crops that do not overlap share no audio: view 2 is a uniform choice, no token held back (noise below 1).
    view2 = noise.view(2, batch, -1)[1]
    assert (view2[shift.abs() >= 96] < 1).all() and (view2[shift.abs() < 16] >= 1).any(1).all()


def test_complementary_falls_back_to_the_nearest_patch_when_audio_cannot_be_disjoint():
    # At 50% masking (24 of 48) a shift of half a patch makes each kept view-1 token overlap two view-2 tokens: too
    # few are clear of view 1's audio. That pair is aligned to the nearest patch, as documented: no whole patch of
    # audio is shared (each kept view-2 token overlaps at most half of one kept view-1 token).
    policy = build_masking_policy("complementary")
    shift = torch.full((64,), 8)
    noise = policy(SQUARE_GRID, 24, 64, generator=torch.Generator().manual_seed(1), patch_size=[16, 16],
                   view_shift_frames=shift)
    kept = masks_from_noise(noise, 24).view(2, 64, *SQUARE_GRID)
    for b in range(64):
        offset = round(8 / 16)  # nearest patch: 0 (Python rounds half to even)
        for row, column in kept[1, b].nonzero().tolist():
            assert not kept[0, b, row, column + offset]
        assert len(kept_audio(kept[0, b], 0) & kept_audio(kept[1, b], 8)) <= 8 * 24


def test_saliency_prefers_loud_patches_and_tends_to_uniform_at_high_temperature():
    batch, grid = 256, SQUARE_GRID
    quiet = torch.full((batch, 128, 96), 1.0)
    quiet[:, :32] = 1e5  # the two lowest rows of patches are loud
    views = (quiet, quiet)
    loud_share = {}
    for temperature in (0.1, 1.0, 100.0):
        policy = build_masking_policy("saliency", temperature=temperature)
        noise = policy(grid, 5, batch, generator=torch.Generator().manual_seed(0), views=views, patch_size=[16, 16])
        kept = masks_from_noise(noise, 5).view(2, batch, *grid)
        loud_share[temperature] = kept[..., :2, :].sum().item() / kept.sum().item()
    assert loud_share[0.1] == 1.0  # 12 loud tokens hold all 5
    assert loud_share[1.0] > 0.7
    assert abs(loud_share[100.0] - 12 / 48) < 0.05  # uniform keeps 12 / 48 of them
    # Flux: only the onset frame of a step is salient.
    step = torch.full((batch, 128, 96), 1.0)
    step[:, :, 40:] = 1e5  # onset at frame 40: patch column 2
    policy = build_masking_policy("saliency", temperature=0.05, saliency="flux")
    noise = policy(grid, 5, batch, generator=torch.Generator().manual_seed(0), views=(step, step), patch_size=[16, 16])
    assert masks_from_noise(noise, 5).view(2, batch, *grid)[..., 2].sum(-1).eq(5).all()


def test_saliency_needs_the_views_and_errors_say_what_to_pass():
    with pytest.raises(ValueError, match="pass views= and patch_size="):
        build_masking_policy("saliency")(SQUARE_GRID, 5, 4, generator=torch.Generator())
    with pytest.raises(ValueError, match="unknown masking policy 'random'"):
        build_masking_policy("random")
    with pytest.raises(ValueError, match="does not take options"):
        build_masking_policy("time_block", temperature=1.0)
    with pytest.raises(ValueError, match="masking_policy='blocks'"):
        MynaConfig(masking_policy="blocks")
    assert parse_policy_options("temperature=0.5, saliency=flux,num_blocks=3") == {
        "temperature": 0.5, "saliency": "flux", "num_blocks": 3
    }
    with pytest.raises(ValueError, match="key=value"):
        parse_policy_options("temperature")


def test_policy_noise_drives_the_unchanged_model():
    torch.manual_seed(0)
    config = MynaConfig.from_variant(
        "hybrid", hidden_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=16, intermediate_size=64,
        projection_dim=8, masking_policy="time_block",
    )
    model = MynaForContrastivePretraining(config).eval()
    views = [spectrograms(3, seed=1), spectrograms(3, seed=2)]
    policy = build_masking_policy(config.masking_policy)
    generator = torch.Generator().manual_seed(0)
    noise = [policy((128 // p[0], 96 // p[1]), 5, 3, generator=generator) for p in config.patch_sizes]
    with torch.no_grad():
        first = model(views=views, noise=noise).projections
        second = model(views=views, noise=[n.clone() for n in noise]).projections
        unmasked = model(views=views, mask_ratio=0.0).projections
    for a, b, c in zip(first, second, unmasked):
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c)


def test_mask_ratio_schedules():
    assert mask_ratio_at(0, 100, 0.9) == 0.9 and mask_ratio_at(99, 100, 0.9, "constant", 0.5) == 0.9
    assert mask_ratio_at(0, 101, 0.9, "linear", 0.5) == pytest.approx(0.5)
    assert mask_ratio_at(50, 101, 0.9, "linear", 0.5) == pytest.approx(0.7)
    assert mask_ratio_at(100, 101, 0.9, "linear", 0.5) == pytest.approx(0.9)
    assert mask_ratio_at(25, 101, 0.9, "cosine", 0.5) == pytest.approx(0.5 + 0.4 * (1 - 2**-0.5) / 2)
    with pytest.raises(ValueError, match="needs mask_ratio_start"):
        MynaConfig(mask_ratio_schedule="linear")
    with pytest.raises(ValueError, match="mask_ratio_schedule='step'"):
        mask_ratio_at(0, 10, 0.9, "step", 0.5)


@pytest.mark.parametrize("name", list(MODEL_SIZES))
def test_size_presets_build_and_round_trip(name, tmp_path):
    config = MynaConfig.from_variant(
        "base", model_size=name, masking_policy="saliency", masking_policy_kwargs={"temperature": 0.5}
    )
    assert model_size_name(config) == name
    assert config.num_attention_heads * config.head_dim == (config.hidden_size if name != "small" else 128)
    if name in ("vit-b", "vit-l"):
        # Initialising the large encoders takes many seconds of a busy CPU: they are built on the meta device (shapes
        # only) and their config round-trips; the smaller ones are built, saved and reloaded below.
        with torch.device("meta"):
            parameters = sum(p.numel() for p in MynaModel(config).parameters())
        assert parameters / 1e6 == pytest.approx({"vit-b": 85.2, "vit-l": 302.5}[name], rel=1e-3)
        config.save_pretrained(tmp_path)
        reloaded = MynaConfig.from_pretrained(tmp_path)
        assert reloaded.to_dict() == config.to_dict() and model_size_name(reloaded) == name
        return
    model = MynaModel(config)
    expected = {"small": 0.63, "vit-t": 5.4, "vit-s": 21.3}[name]  # millions, without the projection
    assert model.num_parameters() / 1e6 == pytest.approx(expected, rel=0.05)
    model.save_pretrained(tmp_path)
    reloaded = MynaModel.from_pretrained(tmp_path)
    assert reloaded.config.masking_policy == "saliency"
    assert reloaded.config.masking_policy_kwargs == {"temperature": 0.5}
    assert model_size_name(reloaded.config) == name
    for key, value in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)


def test_converter_checks_the_size_preset():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from reference_vit import ReferenceMyna

    from modeling_myna.convert_original_checkpoint import convert_checkpoint

    size = MODEL_SIZES["vit-t"]
    reference = ReferenceMyna(
        [16, 16], dim=size["hidden_size"], depth=size["num_hidden_layers"], heads=size["num_attention_heads"],
        dim_head=size["head_dim"], mlp_dim=size["intermediate_size"], num_outputs=128,
    )
    model = convert_checkpoint(reference.state_dict(), "base", model_size="vit-t")
    assert model_size_name(model.config) == "vit-t" and model.config.num_attention_heads == 3
    with pytest.raises(ValueError, match="is not the vit-s preset"):
        convert_checkpoint(reference.state_dict(), "base", model_size="vit-s")
