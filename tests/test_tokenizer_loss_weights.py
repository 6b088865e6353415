"""A hybrid's weighting of its two tokenizers' contrastive losses (`tokenizer_loss_weights`, `--tokenizer_loss_weights`)."""

import json

import pytest
import torch
from myna_training import pretrain

from modeling_myna import MynaConfig
from modeling_myna.modeling_myna import MynaForContrastivePretraining

TINY = {
    "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "head_dim": 16, "intermediate_size": 64,
    "projection_dim": 16,
}
QUICK = [
    "--variant", "hybrid", "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "2",
    "--intermediate_size", "64", "--projection_dim", "16", "--num_clips", "16", "--clip_seconds", "4",
    "--per_device_batch_size", "8", "--max_steps", "2", "--checkpointing_steps", "0", "--probe_clips", "0",
    "--warmup_steps", "0", "--logging_steps", "1",
]
PER_TOKENIZER = {0: 2.0, 1: 6.0}  # a fixed contrastive loss per tokenizer, so the weighting can be read off


def fixed_loss(*projections, tokenizer, **kwargs):
    return projections[0].sum() * 0 + PER_TOKENIZER[tokenizer]


def test_the_loss_is_the_weighted_mean_of_the_tokenizers_losses():
    torch.manual_seed(0)
    views = [torch.rand(2, 128, 96) for _ in range(2)]
    plain = MynaForContrastivePretraining(MynaConfig.from_variant("hybrid", **TINY))
    assert plain(views=views, loss_fn=fixed_loss).loss.item() == pytest.approx(4.0)  # the reference code's mean
    weighted = MynaForContrastivePretraining(MynaConfig.from_variant("hybrid", tokenizer_loss_weights=[1, 3], **TINY))
    assert weighted(views=views, loss_fn=fixed_loss).loss.item() == pytest.approx((2.0 + 3 * 6.0) / 4)
    # One tokenizer trained alone: its own loss, whatever its weight.
    assert weighted(views=views, patch_mode="vertical", loss_fn=fixed_loss).loss.item() == pytest.approx(6.0)
    equal = MynaForContrastivePretraining(MynaConfig.from_variant("hybrid", tokenizer_loss_weights=[2, 2], **TINY))
    assert equal(views=views, loss_fn=fixed_loss).loss.item() == pytest.approx(4.0)


def test_the_weights_scale_each_tokenizers_gradient():
    torch.manual_seed(0)
    views = [torch.rand(2, 128, 96) for _ in range(2)]
    noise = [torch.rand(4, 48), torch.rand(4, 48)]

    def real_loss(*projections, tokenizer, **kwargs):
        return (projections[0] - projections[1]).pow(2).mean()

    grads = {}
    for weights in (None, [1, 3]):
        torch.manual_seed(1)
        model = MynaForContrastivePretraining(MynaConfig.from_variant("hybrid", tokenizer_loss_weights=weights, **TINY))
        model(views=views, noise=noise, loss_fn=real_loss).loss.backward()
        grads[str(weights)] = [p.projection.weight.grad.clone() for p in model.myna.embeddings.patch_embeddings]
    # Each tokenizer's parameters see only their own loss: equal weights give 1/2 of it, [1, 3] give 1/4 and 3/4.
    torch.testing.assert_close(grads["[1, 3]"][0], grads["None"][0] / 2)
    torch.testing.assert_close(grads["[1, 3]"][1], grads["None"][1] * 3 / 2)


@pytest.mark.parametrize("weights", [[1.0], [1.0, 0.0], [1.0, -2.0], [1.0, float("nan")], [True, 1.0], "1 3", 3.0])
def test_bad_weights_are_refused_with_the_fix(weights):
    with pytest.raises(ValueError, match=r"tokenizer_loss_weights=.*(one weight per tokenizer|positive number)"):
        MynaConfig.from_variant("hybrid", tokenizer_loss_weights=weights, **TINY)
    with pytest.raises(ValueError, match="one weight per tokenizer"):
        MynaConfig.from_variant("base", tokenizer_loss_weights=[1.0, 3.0], **TINY)  # one tokenizer


def test_a_run_with_weights_saves_them_and_trains_other_weights(tmp_path):
    cache = ["--cache_dir", str(tmp_path / "cache")]
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "plain")])
    pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "weighted"), "--tokenizer_loss_weights", "1", "3"])
    with open(tmp_path / "weighted" / "run.json") as f:
        assert json.load(f)["settings"]["tokenizer_loss_weights"] == [1.0, 3.0]
    with open(tmp_path / "weighted" / "model" / "config.json") as f:
        assert json.load(f)["tokenizer_loss_weights"] == [1.0, 3.0]
    from safetensors.torch import load_file

    plain = load_file(tmp_path / "plain" / "model" / "model.safetensors")
    weighted = load_file(tmp_path / "weighted" / "model" / "model.safetensors")
    assert any(not torch.equal(plain[name], weighted[name]) for name in plain)
    with pytest.raises(ValueError, match="one weight per tokenizer"):
        pretrain.main(QUICK + cache + ["--output_dir", str(tmp_path / "bad"), "--tokenizer_loss_weights", "1"])
