"""The random equaliser of pre-training views (`--equalizer_db`)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from myna_training import pretrain
from myna_training.arguments import DataArguments
from myna_training.augment import EQUALIZER_ORDER, equalizer_gains_db, random_equalizer


QUICK = [
    "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2", "--intermediate_size", "64",
    "--projection_dim", "16", "--num_clips", "16", "--clip_seconds", "4", "--per_device_batch_size", "8",
    "--max_steps", "2", "--checkpointing_steps", "0", "--probe_clips", "0", "--warmup_steps", "0",
    "--logging_steps", "1",
]


def test_gains_are_smooth_bounded_curves_drawn_per_view_and_clip_from_the_seed_and_step():
    gains = equalizer_gains_db(num_views=2, global_batch=64, num_mel_bins=128, max_db=12.0, seed=3, micro_batch=5)
    assert gains.shape == (2, 64, 128) and gains.dtype == torch.float32
    assert gains.abs().max() <= 12.0 + 1e-5 and gains.abs().max() > 6.0  # 128 curves reach well into the range
    torch.testing.assert_close(gains, equalizer_gains_db(2, 64, 128, 12.0, seed=3, micro_batch=5), rtol=0, atol=0)
    assert not torch.allclose(gains, equalizer_gains_db(2, 64, 128, 12.0, seed=3, micro_batch=6))
    assert not torch.allclose(gains, equalizer_gains_db(2, 64, 128, 12.0, seed=4, micro_batch=5))
    assert (gains[0] - gains[1]).abs().amax(1).min() > 0.1  # the two views of every clip differ
    # Smooth: every curve is in the span of the first EQUALIZER_ORDER cosines over the bins.
    position = torch.linspace(0, 1, 128, dtype=torch.float64)
    basis = torch.stack([torch.cos(torch.pi * k * position) for k in range(1, EQUALIZER_ORDER + 1)], 1)  # (F, K)
    curves = gains.reshape(-1, 128).double().T
    residual = curves - basis @ torch.linalg.lstsq(basis, curves).solution
    assert residual.abs().max() < 1e-4
    # No constant term: a gain over the whole spectrum is a loudness change, not a colour.
    assert gains.mean(-1).abs().max() < 0.05


def test_views_are_multiplied_by_their_gains_and_each_process_gets_its_rows():
    generator = torch.Generator().manual_seed(0)
    views = [torch.rand(8, 128, 96, generator=generator).to(torch.bfloat16) + 0.01 for _ in range(2)]
    out = random_equalizer(views, max_db=6.0, seed=1, micro_batch=2, rows=slice(0, 8), global_batch=8)
    gains = equalizer_gains_db(2, 8, 128, 6.0, seed=1, micro_batch=2)
    for view, result, gain in zip(views, out, gains):
        assert result.dtype == torch.float32 and result.shape == view.shape
        applied = 10 * torch.log10(result / view.float())  # the same dB in every frame of a bin
        torch.testing.assert_close(applied, gain[:, :, None].expand_as(applied), rtol=0, atol=1e-3)
    # Process 1 of 2 (rows 4-8 of the global batch) gets exactly those rows of the one-process result.
    half = random_equalizer([v[4:] for v in views], 6.0, seed=1, micro_batch=2, rows=slice(4, 8), global_batch=8)
    for whole, part in zip(out, half):
        torch.testing.assert_close(part, whole[4:], rtol=0, atol=0)
    assert random_equalizer(views, 0.0, 1, 2, slice(0, 8), 8)[0] is views[0]  # off: the views themselves


def test_a_run_with_the_equaliser_is_another_run_with_other_weights(tmp_path):
    cache = ["--cache_dir", str(tmp_path / "cache")]
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "plain")])
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "eq"), "--equalizer_db", "12"])
    plain = load_file(tmp_path / "plain" / "model" / "model.safetensors")
    eq = load_file(tmp_path / "eq" / "model" / "model.safetensors")
    assert any(not torch.equal(plain[name], eq[name]) for name in plain)
    with open(tmp_path / "eq" / "run.json") as f:
        assert json.load(f)["settings"]["equalizer_db"] == 12
    with open(tmp_path / "plain" / "run.json") as f:
        assert json.load(f)["settings"]["equalizer_db"] == 0


@pytest.mark.parametrize("value", [-1.0, 80.0])
def test_an_equaliser_out_of_range_is_refused_before_any_work(value):
    with pytest.raises(ValueError, match=rf"equalizer_db={value}: use a largest gain in dB from 0 \(none\) to 60"):
        DataArguments(equalizer_db=value)
    with pytest.raises(ValueError, match="non-negative number of decibels"):
        equalizer_gains_db(2, 4, 128, -1.0, seed=0, micro_batch=0)


def test_the_flag_is_documented_in_the_help():
    from myna_training.arguments import ARGUMENT_GROUPS, build_parser

    assert "--equalizer_db" in build_parser(ARGUMENT_GROUPS).format_help()
    assert "random equaliser" in " ".join(build_parser(ARGUMENT_GROUPS).format_help().split())
