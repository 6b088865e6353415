"""The auxiliary statistics loss of pre-training (`statistics_loss_weight`, `--statistics_loss_weight`)."""

import itertools
import json
import math
import re

import pytest
import torch
from myna_training import pretrain
from safetensors.torch import load_file

from modeling_myna import MynaConfig, MynaModel
from modeling_myna.configuration_myna import LOG_OFFSET
from modeling_myna.modeling_myna import MynaForContrastivePretraining, crop_statistics

TINY = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 16, "intermediate_size": 64,
    "projection_dim": 16, "input_scale": "log",
}
QUICK = [
    "--variant", "hybrid", "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2",
    "--intermediate_size", "64", "--projection_dim", "16", "--num_clips", "16", "--clip_seconds", "4",
    "--per_device_batch_size", "8", "--max_steps", "2", "--checkpointing_steps", "0", "--probe_clips", "0",
    "--warmup_steps", "0", "--logging_steps", "1",
]


def constant_loss(*projections, tokenizer, **kwargs):
    return projections[0].sum() * 0 + 0.5  # the contrastive part, fixed so the statistics part can be read off


def test_crop_statistics_are_each_bins_log_mean_and_std_standardised_over_the_batch():
    generator = torch.Generator().manual_seed(0)
    views = torch.rand(6, 4, 10, generator=generator, dtype=torch.float64) ** 3 * 50
    views[:, 2] = 7.0  # a bin that is the same everywhere: its mean and std columns do not vary over the batch
    targets = crop_statistics(views)
    assert targets.shape == (6, 8) and targets.dtype == torch.float32
    # One row and column by hand: clip 1, bin 0.
    logs = [math.log(float(v) + LOG_OFFSET) for v in views[1, 0]]
    mean = sum(logs) / len(logs)
    column = torch.log(views[:, 0].double() + LOG_OFFSET).mean(-1)
    expected = (mean - column.mean()) / (column.std(correction=0) + 1e-3)
    assert targets[1, 0].item() == pytest.approx(expected.item(), rel=1e-4)
    stds = torch.log(views.double() + LOG_OFFSET).std(-1, correction=0)  # (6, 4): the std half, before standardising
    torch.testing.assert_close(
        targets[:, 4:][:, [0, 1, 3]].double(), ((stds - stds.mean(0)) / (stds.std(0, correction=0) + 1e-3))[:, [0, 1, 3]],
        rtol=1e-4, atol=1e-4,
    )
    varying = [0, 1, 3, 4, 5, 7]
    torch.testing.assert_close(targets[:, varying].mean(0), torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(targets[:, varying].std(0, correction=0), torch.ones(6), atol=1e-2, rtol=0)  # the 1e-3 guard
    assert targets[:, [2, 6]].abs().max() < 1e-3  # the constant bin
    assert torch.isfinite(crop_statistics(views[:1])).all()  # one crop: finite (zeros), not a division by zero


def test_the_loss_adds_the_weighted_mse_of_the_heads_prediction_for_every_tokenizer():
    torch.manual_seed(0)
    config = MynaConfig.from_variant("hybrid", statistics_loss_weight=2.0, **TINY)
    model = MynaForContrastivePretraining(config).eval()
    assert model.statistics_head.out_features == 2 * config.num_mel_bins
    views = [torch.rand(4, 128, 96) ** 4 * 100 for _ in range(2)]
    noise = [torch.rand(8, 48), torch.rand(8, 48)]
    out = model(views=views, noise=noise, loss_fn=constant_loss)
    targets = crop_statistics(torch.cat(views))
    # The embeddings are (view1_square, view2_square, view1_vertical, view2_vertical).
    square, vertical = torch.cat(out.embeddings[:2]), torch.cat(out.embeddings[2:])
    expected = sum(torch.nn.functional.mse_loss(model.statistics_head(pooled), targets) for pooled in (square, vertical)) / 2
    torch.testing.assert_close(out.statistics_loss, expected)
    torch.testing.assert_close(out.loss, 0.5 + 2.0 * expected)
    out.loss.backward()
    assert model.statistics_head.weight.grad.abs().sum() > 0
    assert model.myna.embeddings.patch_embeddings[1].projection.weight.grad.abs().sum() > 0  # it reaches the encoder
    as_tuple = model(views=views, noise=noise, loss_fn=constant_loss, return_dict=False)
    assert len(as_tuple) == 4
    torch.testing.assert_close(as_tuple[-1], out.statistics_loss)


def test_without_the_weight_there_is_no_head_and_the_loss_is_the_contrastive_one():
    torch.manual_seed(0)
    model = MynaForContrastivePretraining(MynaConfig.from_variant("hybrid", **TINY))
    assert not hasattr(model, "statistics_head")
    out = model(views=[torch.rand(2, 128, 96)] * 2, loss_fn=constant_loss)
    assert out.statistics_loss is None and out.loss.item() == pytest.approx(0.5)
    # Without a loss_fn (embedding only), the head is not run either.
    weighted = MynaForContrastivePretraining(MynaConfig.from_variant("hybrid", statistics_loss_weight=1.0, **TINY))
    assert weighted(views=[torch.rand(2, 128, 96)] * 2).statistics_loss is None


def test_the_head_saves_with_the_pretraining_model_and_the_encoder_loads_without_it(tmp_path, caplog):
    torch.manual_seed(0)
    model = MynaForContrastivePretraining(MynaConfig.from_variant("hybrid", statistics_loss_weight=1.0, **TINY))
    model.save_pretrained(tmp_path)
    again = MynaForContrastivePretraining.from_pretrained(tmp_path)
    assert again.config.statistics_loss_weight == 1.0
    torch.testing.assert_close(again.statistics_head.weight, model.statistics_head.weight)
    with caplog.at_level("WARNING"):
        encoder = MynaModel.from_pretrained(tmp_path)
    assert "statistics_head" not in caplog.text
    torch.testing.assert_close(encoder.embeddings.patch_embeddings[0].projection.weight,
                               model.myna.embeddings.patch_embeddings[0].projection.weight)


@pytest.mark.parametrize("weight", [-1.0, "1", float("nan"), float("inf"), True])
def test_a_bad_weight_is_refused_with_the_fix(weight):
    with pytest.raises(ValueError, match="statistics_loss_weight=.*give 0 for the contrastive loss alone"):
        MynaConfig.from_variant("hybrid", statistics_loss_weight=weight, **TINY)


def test_a_run_with_the_statistics_loss_is_another_run_with_its_weight_in_run_json(tmp_path, capsys):
    cache = ["--cache_dir", str(tmp_path / "cache")]
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "plain")])
    assert "statistics_loss=" not in capsys.readouterr().err
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "stats"), "--statistics_loss_weight", "1.0"])
    logged = re.findall(r"statistics_loss=([0-9.]+)", capsys.readouterr().err)  # the progress lines show it
    assert logged and all(0 < float(value) < 10 for value in logged)
    plain = load_file(tmp_path / "plain" / "model" / "model.safetensors")
    stats = load_file(tmp_path / "stats" / "model" / "model.safetensors")
    assert "statistics_head.weight" in stats and "statistics_head.weight" not in plain
    assert any(not torch.equal(plain[name], stats[name]) for name in plain)
    with open(tmp_path / "stats" / "run.json") as f:
        assert json.load(f)["settings"]["statistics_loss_weight"] == 1.0
    from myna_training.arguments import ARGUMENT_GROUPS, build_parser

    assert "--statistics_loss_weight" in build_parser(ARGUMENT_GROUPS).format_help()


def test_the_delta_target_is_each_bins_mean_absolute_frame_to_frame_change_after_the_default_columns():
    generator = torch.Generator().manual_seed(1)
    views = torch.rand(5, 4, 12, generator=generator, dtype=torch.float64) ** 3 * 50
    targets = crop_statistics(views, ["mean", "std", "delta"])
    assert targets.shape == (5, 12) and targets.dtype == torch.float32
    torch.testing.assert_close(targets[:, :8], crop_statistics(views))  # mean and std first, as the default gives them
    # Clip 3, bin 2, by hand: the mean of |log x[t+1] - log x[t]|, then standardised over the five clips.
    logs = [math.log(float(v) + LOG_OFFSET) for v in views[3, 2]]
    by_hand = sum(abs(b - a) for a, b in itertools.pairwise(logs)) / (len(logs) - 1)
    column = torch.log(views[:, 2].double() + LOG_OFFSET).diff(dim=-1).abs().mean(-1)
    assert column[3].item() == pytest.approx(by_hand)
    expected = (by_hand - column.mean()) / (column.std(correction=0) + 1e-3)
    assert targets[3, 8 + 2].item() == pytest.approx(expected.item(), rel=1e-4)
    # The order of the names is the order of the columns.
    torch.testing.assert_close(crop_statistics(views, ["delta", "mean"]), targets[:, [*range(8, 12), *range(4)]])
    # A steady bin does not move: a crop whose every bin is constant over time has the smallest delta of the batch.
    views[0] = views[0, :, :1]
    assert (crop_statistics(views, ["delta"]).argmin(0) == 0).all()


def test_the_head_predicts_every_target_and_the_loss_reads_the_configured_ones():
    torch.manual_seed(0)
    config = MynaConfig.from_variant(
        "hybrid", statistics_loss_weight=1.0, statistics_targets=["mean", "std", "delta"], **TINY
    )
    model = MynaForContrastivePretraining(config).eval()
    assert model.statistics_head.out_features == 3 * config.num_mel_bins
    views = [torch.rand(4, 128, 96) ** 4 * 100 for _ in range(2)]
    noise = [torch.rand(8, 48), torch.rand(8, 48)]
    out = model(views=views, noise=noise, loss_fn=constant_loss)
    targets = crop_statistics(torch.cat(views), ["mean", "std", "delta"])
    square, vertical = torch.cat(out.embeddings[:2]), torch.cat(out.embeddings[2:])
    expected = sum(torch.nn.functional.mse_loss(model.statistics_head(p), targets) for p in (square, vertical)) / 2
    torch.testing.assert_close(out.statistics_loss, expected)
    # Saved and loaded with the config: the same head, the same targets.
    assert MynaConfig.from_dict(config.to_dict()).statistics_targets == ["mean", "std", "delta"]
    assert MynaConfig.from_variant("hybrid", **TINY).statistics_targets == ["mean", "std"]


@pytest.mark.parametrize("targets", [[], ["mean", "mean"], ["mean", "chroma"], "mean", [1], ("mean", None)])
def test_bad_statistics_targets_are_refused_with_the_fix(targets):
    with pytest.raises(ValueError, match=r"statistics_targets=.*distinct names from \['mean', 'std', 'delta'\]"):
        MynaConfig.from_variant("hybrid", statistics_loss_weight=1.0, statistics_targets=targets, **TINY)


def test_a_run_with_the_delta_target_names_it_in_run_json_and_a_misspelt_one_stops_before_any_work(tmp_path, capsys):
    argv = QUICK + ["--cache_dir", str(tmp_path / "cache"), "--statistics_loss_weight", "1.0"]
    pretrain.main(argv + ["--output_dir", str(tmp_path / "delta"), "--statistics_targets", "mean", "std", "delta"])
    with open(tmp_path / "delta" / "run.json") as f:
        assert json.load(f)["settings"]["statistics_targets"] == ["mean", "std", "delta"]
    with open(tmp_path / "delta" / "model" / "config.json") as f:
        assert json.load(f)["statistics_targets"] == ["mean", "std", "delta"]
    assert load_file(tmp_path / "delta" / "model" / "model.safetensors")["statistics_head.weight"].shape[0] == 3 * 128
    with pytest.raises((SystemExit, ValueError)) as refused:
        pretrain.main(argv + ["--output_dir", str(tmp_path / "typo"), "--statistics_targets", "mean", "detla"])
    assert "detla" in str(refused.value) + capsys.readouterr().err and not (tmp_path / "typo").exists()


def test_statistics_targets_without_the_statistics_loss_are_refused_before_any_work(tmp_path):
    argv = QUICK + ["--output_dir", str(tmp_path / "run"), "--statistics_targets", "mean", "delta"]
    with pytest.raises((SystemExit, ValueError), match="no effect without the statistics loss.*--statistics_loss_weight"):
        pretrain.main(argv)
    assert not (tmp_path / "run").exists()
