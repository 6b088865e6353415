"""Tests of myna_training.arguments: flags and config files to dataclasses to MynaConfig, and refused settings."""

import json
from pathlib import Path

import pytest

from myna_training.arguments import flat_config, parse_arguments


def test_defaults_are_the_small_cpu_job():
    model_args, data_args, training_args = parse_arguments([])
    config = model_args.to_config()
    assert (config.hidden_size, config.num_hidden_layers, config.head_dim) == (128, 3, 32)
    assert config.patch_sizes == [[16, 16]] and config.mask_ratio == 0.9 and config.chunk_frames == 96
    assert data_args.dataset == "synthetic" and training_args.loss == "sogclr" and training_args.temperature == 0.1


def test_flags_and_yaml_and_json_files_give_the_same_arguments(tmp_path):
    flags = ["--variant", "hybrid", "--model_size", "vit-s", "--loss", "infonce", "--per_device_batch_size", "32"]
    from_flags = parse_arguments(flags)
    (tmp_path / "run.yaml").write_text("variant: hybrid\nmodel_size: vit-s\nloss: infonce\nper_device_batch_size: 32\n")
    (tmp_path / "run.json").write_text(
        json.dumps({"variant": "hybrid", "model_size": "vit-s", "loss": "infonce", "per_device_batch_size": 32})
    )
    assert parse_arguments(["--config", str(tmp_path / "run.yaml")]) == from_flags
    assert parse_arguments([str(tmp_path / "run.json")]) == from_flags
    config = from_flags[0].to_config()
    assert config.patch_modes == ["square", "vertical"] and config.hidden_size == 384 and config.num_hidden_layers == 12
    flat = flat_config(*from_flags)
    assert flat["variant"] == "hybrid" and flat["per_device_batch_size"] == 32 and "learning_rate" in flat


def test_refused_settings_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="only its own negatives.*loss='sogclr'"):
        parse_arguments(["--loss", "infonce", "--gradient_accumulation_steps", "4"])
    parse_arguments(["--loss", "sogclr", "--gradient_accumulation_steps", "4"])  # SogCLR accumulates fine
    with pytest.raises(ValueError, match="--hub_model_id"):
        parse_arguments(["--push_to_hub"])
    (tmp_path / "typo.yaml").write_text("per_device_batchsize: 8\n")
    with pytest.raises(ValueError, match="unknown setting 'per_device_batchsize'. Did you mean 'per_device_batch_size'"):
        parse_arguments(["--config", str(tmp_path / "typo.yaml")])
    with pytest.raises(ValueError, match="--config needs a .yaml"):
        parse_arguments(["--config", "--seed", "1"])
    with pytest.raises(ValueError, match="does not exist"):
        parse_arguments([str(tmp_path / "missing.yaml")])
    with pytest.raises(ValueError, match=r"model_size='vit-x': choose one of .*Did you mean 'vit-t'\?"):
        parse_arguments(["--model_size", "vit-x"])  # at parsing: before the output folder or any work
    with pytest.raises(ValueError, match=r"masking_policy='timeblock'.*Did you mean 'time_block'\?"):
        parse_arguments(["--masking_policy", "timeblock"])
    model_args = parse_arguments(["--hidden_size", "96", "--num_attention_heads", "5"])[0]
    with pytest.raises(ValueError, match="not divisible"):
        model_args.to_config()


CONFIGS = Path(__file__).parent.parent / "training" / "configs"


def test_flags_after_a_config_file_override_it(tmp_path):
    (tmp_path / "run.yaml").write_text("loss: infonce\nper_device_batch_size: 32\nseed: 3\n")
    _, _, training_args = parse_arguments(["--config", str(tmp_path / "run.yaml"), "--seed", "7", "--max_steps", "10"])
    assert (training_args.loss, training_args.per_device_batch_size) == ("infonce", 32)  # from the file
    assert (training_args.seed, training_args.max_steps) == (7, 10)  # the flags win


@pytest.mark.parametrize("variant, patch_sizes", [("base", [[16, 16]]), ("vertical", [[128, 2]]),
                                                  ("hybrid", [[16, 16], [128, 2]])])
def test_paper_presets_resolve_to_the_papers_run(variant, patch_sizes):
    model_args, data_args, training_args = parse_arguments(["--config", str(CONFIGS / f"myna-{variant}.yaml")])
    config = model_args.to_config()
    # ViT-S, 90% masking (SPEC §2, §4).
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        384, 12, 6, 1536
    )
    assert config.patch_sizes == patch_sizes and config.mask_ratio == 0.9
    # Adam 3e-4 constant, weight decay 1e-5, batch 4096, 500 epochs, SogCLR at tau 0.1, bfloat16, AudioSet music.
    assert training_args.learning_rate == 3e-4 and training_args.lr_scheduler_type == "constant"
    assert training_args.warmup_steps == 0 and training_args.max_grad_norm == 0
    assert training_args.weight_decay == 1e-5 and training_args.weight_decay_scope == "all"
    assert training_args.per_device_batch_size == 4096
    assert training_args.max_steps == 0 and training_args.num_epochs == 500
    assert training_args.loss == "sogclr" and training_args.temperature == 0.1 and training_args.sogclr_gamma == 0.9
    assert training_args.mixed_precision == "bf16" and data_args.storage_dtype == "bfloat16"
    assert data_args.dataset == "audioset_csv"


def test_print_config_shows_the_resolved_settings_and_reads_back(tmp_path, capsys):
    from myna_training import pretrain

    pretrain.main(["--config", str(CONFIGS / "myna-hybrid.yaml"), "--num_epochs", "2", "--print_config"])
    printed = capsys.readouterr().out
    assert "variant: hybrid" in printed and "num_epochs: 2" in printed and "learning_rate: 0.0003" in printed
    (tmp_path / "resolved.yaml").write_text(printed)
    assert parse_arguments(["--config", str(tmp_path / "resolved.yaml")]) == parse_arguments(
        ["--config", str(CONFIGS / "myna-hybrid.yaml"), "--num_epochs", "2"]
    )


def test_cpu_smoke_preset_parses():
    model_args, data_args, training_args = parse_arguments(["--config", str(CONFIGS / "cpu-smoke.yaml")])
    assert data_args.dataset == "synthetic" and training_args.max_steps > 0 and model_args.to_config().hidden_size == 64


def test_the_hour_presets_are_one_recipe_at_two_scales(tmp_path):
    """cpu-hour.yaml (the recipe of docs/pretraining.md's one-CPU-hour curve) and gpu-hour.yaml (the same, 16x the
    batch)."""
    data = ["--dataset", "folder", "--data_dir", str(tmp_path)]
    cpu = parse_arguments(["--config", str(CONFIGS / "cpu-hour.yaml"), *data])
    gpu = parse_arguments(["--config", str(CONFIGS / "gpu-hour.yaml"), *data])
    for model_args, data_args, _ in (cpu, gpu):
        config = model_args.to_config()
        assert config.patch_sizes == [[16, 16], [128, 2]] and (config.hidden_size, config.num_hidden_layers) == (
            128, 3
        )
        assert config.mask_ratio == 0.9 and data_args.num_views == 2 and data_args.dataset == "folder"
        assert config.input_scale == "log" and config.projection_hidden_size == 512
        assert config.statistics_loss_weight == 3.0
    cpu_training, gpu_training = cpu[2], gpu[2]
    # 16k steps at the ~0.22 CPU-s per step measured on one thread (with the statistics loss): about an hour.
    assert cpu_training.per_device_batch_size == 128 and 3000 < 0.22 * cpu_training.max_steps < 4200
    assert gpu_training.per_device_batch_size == 16 * cpu_training.per_device_batch_size
    assert gpu_training.mixed_precision == "bf16" and cpu_training.mixed_precision in (None, "no")
    assert cpu_training.checkpointing_steps > 0 and cpu_training.checkpoints_total_limit >= 12  # the curve's points


def test_data_settings_are_checked_before_any_work():
    with pytest.raises(ValueError, match="spectrogram_placement='disk': choose one of"):
        parse_arguments(["--spectrogram_placement", "disk"])
    with pytest.raises(ValueError, match="float16 overflows"):
        parse_arguments(["--storage_dtype", "float16"])
    with pytest.raises(ValueError, match="dataset='audioset_hub'"):
        parse_arguments(["--dataset", "audioset_hub"])
    from myna_training.data import PLACEMENTS, STORAGE_DTYPES

    assert PLACEMENTS == ("auto", "resident", "out_of_core") and STORAGE_DTYPES == ("float32", "bfloat16")


def test_a_model_size_flag_wins_over_a_presets_dimensions():
    model_args, _, _ = parse_arguments(["--config", "cpu-smoke.yaml", "--model_size", "vit-t"])
    config = model_args.to_config()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (192, 12, 3)
    model_args, _, training_args = parse_arguments(
        ["--config", "cpu-smoke.yaml", "--model_size", "vit-t", "--num_hidden_layers", "4"]
    )
    assert (model_args.to_config().num_hidden_layers, model_args.to_config().hidden_size) == (4, 192)
    assert training_args.max_steps == 8  # the preset's other settings stay
    model_args, _, _ = parse_arguments(["--config", "cpu-smoke.yaml"])
    assert model_args.to_config().hidden_size == 64  # without the flag, the preset's dimensions


def test_the_projection_head_flag_reaches_the_config_and_a_run_rebuilds_it():
    """`--projection_hidden_size` makes the MLP projection; a run's settings (run.json) rebuild the same config for
    export, and the default stays the paper's linear projection."""
    from dataclasses import asdict

    from myna_training.export import config_from_settings

    model_args, _, _ = parse_arguments(["--config", "cpu-smoke.yaml", "--projection_hidden_size", "256"])
    assert model_args.to_config().projection_hidden_size == 256
    assert config_from_settings(asdict(model_args)).projection_hidden_size == 256
    default_args, _, _ = parse_arguments(["--config", "cpu-smoke.yaml"])
    assert default_args.to_config().projection_hidden_size == 0


def test_complementary_masking_with_more_than_two_views_is_refused_before_any_work(tmp_path, capsys):
    # It used to pass the checks and stop at step 1, after the spectrograms were computed and written.
    from myna_common.cli_support import run_cli
    from myna_training import pretrain

    with pytest.raises(ValueError, match=r"complementary splits each clip's tokens between exactly two views, and "
                                         r"num_views is 3: use --num_views 2"):
        parse_arguments(["--masking_policy", "complementary", "--num_views", "3"])
    out = tmp_path / "run"
    argv = ["--masking_policy", "complementary", "--num_views", "3", "--output_dir", str(out)]
    assert run_cli(pretrain.main, "pretrain.py", argv) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and err[0].startswith("pretrain.py: error: masking_policy complementary"), err
    assert not out.exists()  # no run folder, no cache, no spectrograms
    # Two views, or another policy with three, still parse.
    assert parse_arguments(["--masking_policy", "complementary", "--num_views", "2"])[1].num_views == 2
    assert parse_arguments(["--masking_policy", "time_block", "--num_views", "3"])[1].num_views == 3
