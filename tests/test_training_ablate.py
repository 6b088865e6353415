"""Tests of myna_training.ablate (the sweep design; a 2-point sweep of a tiny model that writes its table and plot; the
policy pictures) and of pre-training with a masking policy and a ratio schedule."""

import json

import pytest
import torch

from myna_training import ablate


TINY = (
    "--hidden_size 32 --num_hidden_layers 1 --num_attention_heads 2 --intermediate_size 64 --projection_dim 16 "
    "--clip_seconds 4 --logging_steps 1"
)


def test_one_factor_at_a_time_varies_each_factor_around_the_papers_values():
    args = ablate.AblationArguments(
        mask_ratios="0.5,0.9", masking_policies="uniform,time_block,frequency_band", batch_sizes="16,64",
        model_sizes="small", variants="base,vertical",
    )
    points = ablate.sweep_points(args)
    base = {"mask_ratio": 0.9, "masking_policy": "uniform", "batch_size": 64, "model_size": "small", "variant": "base"}
    assert points[0] == base
    assert {ablate.run_name(p) for p in points[1:]} == {
        "base-small-r0.5-uniform-b64", "base-small-r0.9-time_block-b64", "base-small-r0.9-frequency_band-b64",
        "base-small-r0.9-uniform-b16", "vertical-small-r0.9-uniform-b64",
    }
    grid = ablate.sweep_points(ablate.AblationArguments(
        mask_ratios="0.5,0.9", masking_policies="uniform", batch_sizes="8", model_sizes="small,vit-t",
        variants="base", design="grid",
    ))
    assert len(grid) == 4
    with pytest.raises(ValueError, match="unknown masking_policy"):
        ablate.sweep_points(ablate.AblationArguments(masking_policies="uniform,random"))
    # Equal examples per run: a smaller batch takes more steps.
    argv = ablate.pretrain_argv({**base, "batch_size": 16}, ablate.AblationArguments(examples_per_run=6400), "run")
    assert argv[argv.index("--max_steps") + 1] == "400"


def test_two_point_sweep_writes_its_table_and_plot(tmp_path):
    out = tmp_path / "sweep"
    report = ablate.main([
        "--output_dir", str(out), "--mask_ratios", "0.5,0.9", "--masking_policies", "uniform", "--batch_sizes", "8",
        "--model_sizes", "small", "--variants", "base", "--examples_per_run", "24", "--num_clips", "16",
        "--tasks", "synthetic-style", "--synthetic_sizes", "20,10,10", "--synthetic_duration", "4",
        "--pretrain_args", TINY,
    ])
    assert [r["mask_ratio"] for r in report["runs"]] == [0.9, 0.5]
    assert all(r["steps"] == 3 and 0.0 <= r["tasks"]["synthetic-style"]["test"] <= 1.0 for r in report["runs"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"] == report["runs"]
    table = (out / "results.md").read_text()
    assert table.count("| base | small |") == 2 and "synthetic-style (" in table
    assert (out / "metric_vs_mask_ratio.png").stat().st_size > 1000
    assert not (out / "runs" / "base-small-r0.9-uniform-b8" / "checkpoints").exists()
    # A rerun reuses the finished runs.
    again = ablate.main([
        "--output_dir", str(out), "--mask_ratios", "0.5,0.9", "--masking_policies", "uniform", "--batch_sizes", "8",
        "--model_sizes", "small", "--variants", "base", "--examples_per_run", "24", "--num_clips", "16",
        "--tasks", "synthetic-style", "--synthetic_sizes", "20,10,10", "--synthetic_duration", "4",
        "--pretrain_args", TINY,
    ])
    assert again["runs"] == report["runs"]


def test_policy_pictures(tmp_path):
    paths = ablate.main(["--plot_policies", str(tmp_path)])["plots"]
    assert len(paths) == 6 and all(100 < (tmp_path / p.split("/")[-1]).stat().st_size < 100_000 for p in paths)


@pytest.mark.parametrize("policy", ["saliency", "frequency_band", "complementary"])
def test_pretraining_draws_the_policys_masks_with_a_ratio_schedule(tmp_path, policy, monkeypatch):
    from modeling_myna import masking
    from myna_training import pretrain

    calls = []
    original = masking.MynaMaskingPolicy.__call__

    def recording(self, grid_size, num_kept, batch_size, **kwargs):
        calls.append((self.name, grid_size, num_kept))
        return original(self, grid_size, num_kept, batch_size, **kwargs)

    monkeypatch.setattr(masking.MynaMaskingPolicy, "__call__", recording)
    summary = pretrain.main(TINY.split() + [
        "--variant", "hybrid", "--masking_policy", policy, "--mask_ratio_schedule", "linear", "--mask_ratio_start",
        "0.5", "--output_dir", str(tmp_path / "run"), "--num_clips", "16", "--per_device_batch_size", "8",
        "--max_steps", "3", "--warmup_steps", "1", "--checkpointing_steps", "0", "--probe_clips", "0",
    ])
    assert summary["steps"] == 3
    # Square (8 x 6) then vertical (1 x 48) per step; the ratio goes 0.5 -> 0.7 -> 0.9: 24, 15, 5 kept of 48.
    expected = [((8, 6), 24), ((1, 48), 24), ((8, 6), 15), ((1, 48), 15), ((8, 6), 5), ((1, 48), 5)]
    assert [c[1:] for c in calls] == expected
    assert {c[0] for c in calls} == {policy}


def test_gradient_checkpointing_trains_to_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    from myna_training import pretrain

    common = TINY.split() + [
        "--num_clips", "16", "--per_device_batch_size", "8", "--max_steps", "2", "--warmup_steps", "1",
        "--checkpointing_steps", "0", "--probe_clips", "0", "--cache_dir", str(tmp_path / "cache"),
    ]
    pretrain.main(common + ["--output_dir", str(tmp_path / "plain")])
    pretrain.main(common + ["--output_dir", str(tmp_path / "checkpointed"), "--gradient_checkpointing"])
    plain = load_file(tmp_path / "plain" / "model" / "model.safetensors")
    checkpointed = load_file(tmp_path / "checkpointed" / "model" / "model.safetensors")
    for key, value in plain.items():
        torch.testing.assert_close(checkpointed[key], value)
