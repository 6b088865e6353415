"""The converter on state dicts in the released key layout, built by an independent reference implementation."""

import pytest
import torch

from modeling_myna import MynaFeatureExtractor, MynaForContrastivePretraining, MynaModel
from modeling_myna.convert_original_checkpoint import convert_checkpoint, main
from transformers import AutoFeatureExtractor, AutoModel

from .reference_vit import ReferenceMyna


PATCHES = {"base": ((16, 16), None), "vertical": ((128, 2), None), "hybrid": ((16, 16), (128, 2))}


def reference(variant: str, seed: int = 0, **sizes) -> ReferenceMyna:
    torch.manual_seed(seed)
    patch, patch_b = PATCHES[variant]
    sizes = {"dim": 32, "depth": 2, "heads": 2, "dim_head": 16, "mlp_dim": 64, "num_outputs": 12, **sizes}
    model = ReferenceMyna(patch, patch_b=patch_b, **sizes).eval()
    with torch.no_grad():
        for parameter in model.parameters():  # LayerNorms away from identity, so a swapped key would show
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("variant", ["base", "vertical", "hybrid"])
def test_released_layout_converts_exactly_and_loads_with_auto_model(tmp_path, variant):
    original = reference(variant)
    checkpoint = tmp_path / f"myna-{variant}.pth"
    torch.save(original.state_dict(), checkpoint)
    main(["--checkpoint", str(checkpoint), "--variant", variant, "--output", str(tmp_path / "out"), "--head_dim", "16"])

    model = AutoModel.from_pretrained(tmp_path / "out").eval()
    extractor = AutoFeatureExtractor.from_pretrained(tmp_path / "out")
    assert isinstance(model, MynaModel) and isinstance(extractor, MynaFeatureExtractor)
    assert extractor.chunk_frames == model.config.chunk_frames == (98 if variant == "vertical" else 96)
    assert {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"} <= {
        p.name for p in (tmp_path / "out").iterdir()
    }

    frames = model.config.chunk_frames
    spec = torch.rand(3, 128, frames + 7) ** 3 * 1e3  # extra frames: dropped the same way by both
    with torch.no_grad():
        ours = model(spec).pooler_output
        theirs = original.encode(spec[:, None])
        if variant == "hybrid":  # the reference's hybrid mode: [square ; vertical]
            theirs = torch.cat([theirs, original.encode(spec[:, None], second=True)], dim=-1)
            torch.testing.assert_close(model(spec, patch_mode="vertical").pooler_output, theirs[:, 32:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_projection_is_kept_for_pretraining(tmp_path):
    original = reference("base")
    converted = convert_checkpoint(original.state_dict(), "base", head_dim=16)
    assert isinstance(converted, MynaForContrastivePretraining) and converted.config.projection_dim == 12
    spec = torch.rand(2, 128, 96) * 100
    with torch.no_grad():
        projected = converted(views=[spec], mask_ratio=0.0).projections[0]
        torch.testing.assert_close(projected, original(spec[:, None]), rtol=1e-5, atol=1e-5)


def test_wrapped_keys_from_ddp_or_compile_are_accepted():
    state_dict = {f"module._orig_mod.{k}": v for k, v in reference("base").state_dict().items()}
    assert isinstance(convert_checkpoint(state_dict, "base", head_dim=16), MynaForContrastivePretraining)


def test_unmapped_and_missing_keys_are_listed():
    state_dict = dict(reference("base").state_dict())
    state_dict["mask_token"] = torch.zeros(1, 1, 32)
    del state_dict["transformer.layers.1.1.net.3.bias"]
    with pytest.raises(ValueError) as error:
        convert_checkpoint(state_dict, "base", head_dim=16)
    message = str(error.value)
    assert "mask_token" in message and "myna.encoder.layers.1.mlp.fc2.bias" in message


def test_variant_must_match_the_checkpoint():
    with pytest.raises(ValueError, match="does not match"):
        convert_checkpoint(reference("hybrid").state_dict(), "base")
    with pytest.raises(ValueError, match="does not match"):
        convert_checkpoint(reference("vertical").state_dict(), "hybrid")


def test_missing_checkpoint_says_where_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="ghost-signal/myna"):
        convert_checkpoint(str(tmp_path / "myna-base.pth"), "base")


def test_full_size_state_dict_shapes_map_onto_vit_s():
    """The released models are ViT-S: check every shape of a full-size reference state dict maps."""
    original = reference("hybrid", dim=384, depth=12, heads=6, dim_head=64, mlp_dim=1536, num_outputs=128)
    converted = convert_checkpoint(original.state_dict(), "hybrid")
    config = converted.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 12, 6)
    assert config.intermediate_size == 1536 and config.projection_dim == 128
    spec = torch.rand(1, 128, 96) * 10
    with torch.no_grad():
        torch.testing.assert_close(
            converted.myna(spec, patch_mode="square").pooler_output, original.encode(spec[:, None]), rtol=1e-4, atol=1e-5
        )


def test_unreadable_checkpoints_are_named_in_one_line(tmp_path, capsys):
    # issue 10: a junk file gave a bare `KeyError: 174812789`; each kind of wrong file now says what it is.
    from myna_pipelines.cli import main

    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(256)) * 40)
    listed = tmp_path / "list.pth"
    torch.save([1, 2, 3], listed)
    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, other)
    cases = {
        junk: "is not a PyTorch checkpoint that torch.load can read",
        listed: "holds list, not a state dict of tensors",
        other: "is a state dict, but not of a Myna SimpleViT: it lacks to_patch_embedding.1.weight",
        tmp_path / "missing.pth": "no checkpoint at",
    }
    for path, message in cases.items():
        argv = ["convert", "--checkpoint", str(path), "--variant", "base", "--output", str(tmp_path / "out")]
        assert main(argv) == 1, path
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.startswith("myna convert: error:"), err
    assert main(["convert", "--checkpoint", str(junk), "--varient", "base", "--output", "x"]) == 2
    assert "Did you mean '--variant'?" in capsys.readouterr().err
