"""Convert a released Myna checkpoint (ghost-signal/myna `.pth` state dict) into a transformers folder.

    python -m modeling_myna.convert_original_checkpoint --checkpoint myna-hybrid.pth --variant hybrid \\
        --output myna-hybrid

writes config.json, model.safetensors, preprocessor_config.json, a model card and the model code, loadable with
`AutoModel.from_pretrained("myna-hybrid")`. Every key of the original maps to exactly one of ours; anything
unmapped or missing stops the conversion with the list of keys.
"""

import os
import re
from dataclasses import dataclass, field

import torch

from transformers import HfArgumentParser

from .audio_utils import AUDIO_EXTENSIONS
from .configuration_myna import MODEL_SIZES, VARIANTS, MynaConfig, model_size_name
from .feature_extraction_myna import MynaFeatureExtractor
from .model_card import paper_evaluation_table
from .modeling_myna import MynaForContrastivePretraining


# (pattern in the reference SimpleViT, replacement in MynaForContrastivePretraining). `to_patch_embedding.0` is
# the einops Rearrange and holds no weights.
KEY_PATTERNS = [
    (r"^to_patch_embedding\.1\.", "myna.embeddings.patch_embeddings.0.patch_norm."),
    (r"^to_patch_embedding\.2\.", "myna.embeddings.patch_embeddings.0.projection."),
    (r"^to_patch_embedding\.3\.", "myna.embeddings.patch_embeddings.0.norm."),
    (r"^to_patch_embedding_b\.1\.", "myna.embeddings.patch_embeddings.1.patch_norm."),
    (r"^to_patch_embedding_b\.2\.", "myna.embeddings.patch_embeddings.1.projection."),
    (r"^to_patch_embedding_b\.3\.", "myna.embeddings.patch_embeddings.1.norm."),
    (r"^transformer\.layers\.(\d+)\.0\.norm\.", r"myna.encoder.layers.\1.layernorm_before."),
    (r"^transformer\.layers\.(\d+)\.0\.to_qkv\.", r"myna.encoder.layers.\1.attention.qkv."),
    (r"^transformer\.layers\.(\d+)\.0\.to_out\.", r"myna.encoder.layers.\1.attention.o_proj."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.0\.", r"myna.encoder.layers.\1.layernorm_after."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.1\.", r"myna.encoder.layers.\1.mlp.fc1."),
    (r"^transformer\.layers\.(\d+)\.1\.net\.3\.", r"myna.encoder.layers.\1.mlp.fc2."),
    (r"^transformer\.norm\.", "myna.layernorm."),
    (r"^linear_head\.", "projection."),
]


def rename_key(key: str) -> str | None:
    """Our name for an original key, or `None` when no pattern matches."""
    for pattern, replacement in KEY_PATTERNS:
        if re.match(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def strip_wrappers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drops the `module.` (DDP) and `_orig_mod.` (torch.compile) prefixes training may have left."""
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state_dict.items()}


def config_from_state_dict(state_dict: dict[str, torch.Tensor], variant: str, head_dim: int = 64) -> MynaConfig:
    """A config for `variant` whose sizes are read off the checkpoint's tensors.

    The fused qkv weight gives heads * head_dim but not the split; `head_dim` is the reference's `dim_head`
    (64 in every released model).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {sorted(VARIANTS)}.")
    has_second_tokenizer = any(k.startswith("to_patch_embedding_b.") for k in state_dict)
    if has_second_tokenizer != (variant == "hybrid"):
        found = "two tokenizers (to_patch_embedding_b.*)" if has_second_tokenizer else "a single tokenizer"
        raise ValueError(f"--variant {variant} does not match the checkpoint, which has {found}.")
    layer_ids = {int(m.group(1)) for k in state_dict if (m := re.match(r"^transformer\.layers\.(\d+)\.", k))}
    hidden_size = state_dict["transformer.norm.weight"].shape[0]
    inner_dim = state_dict["transformer.layers.0.0.to_out.weight"].shape[1]
    patch_dim = state_dict["to_patch_embedding.1.weight"].shape[0]
    for height, width in VARIANTS[variant]:
        if height * width != patch_dim:
            raise ValueError(
                f"the checkpoint's patches have {patch_dim} values, not {height}x{width} = {height * width} of the "
                f"{variant} variant."
            )
    if inner_dim % head_dim != 0:
        raise ValueError(f"the attention width {inner_dim} is not a multiple of head_dim={head_dim}: pass --head_dim.")
    return MynaConfig.from_variant(
        variant,
        hidden_size=hidden_size,
        num_hidden_layers=len(layer_ids),
        num_attention_heads=inner_dim // head_dim,
        head_dim=head_dim,
        intermediate_size=state_dict["transformer.layers.0.1.net.1.weight"].shape[0],
        projection_dim=state_dict["linear_head.weight"].shape[0],
        architectures=["MynaForContrastivePretraining"],
    )


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], model: MynaForContrastivePretraining
) -> dict[str, torch.Tensor]:
    """Renames every key; raises listing the original keys that map nowhere and the model keys left unfilled."""
    converted, unmapped = {}, []
    for key, value in state_dict.items():
        new_key = rename_key(key)
        if new_key is None:
            unmapped.append(key)
        else:
            converted[new_key] = value
    expected = set(model.state_dict())
    missing = sorted(expected - set(converted))
    unexpected = sorted(set(converted) - expected)
    if unmapped or missing or unexpected:
        raise ValueError(
            "the checkpoint does not map exactly onto Myna:\n"
            f"  original keys with no mapping: {unmapped}\n"
            f"  mapped keys the model does not have: {unexpected}\n"
            f"  model keys the checkpoint does not fill: {missing}"
        )
    for key, value in converted.items():
        if value.shape != model.state_dict()[key].shape:
            raise ValueError(f"{key}: checkpoint shape {tuple(value.shape)}, model {tuple(model.state_dict()[key].shape)}.")
    return converted


# Keys every released checkpoint has; `config_from_state_dict` reads sizes off them.
REQUIRED_KEYS = (
    "to_patch_embedding.1.weight",
    "transformer.norm.weight",
    "transformer.layers.0.0.to_out.weight",
    "transformer.layers.0.1.net.1.weight",
    "linear_head.weight",
)
RELEASES = "https://github.com/ghost-signal/myna#model-checkpoints"


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The state dict in `path` (`torch.load(weights_only=True)`), or a `ValueError` saying what the file is instead:
    missing, not a PyTorch file, not a state dict, or a state dict of another model."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no checkpoint at {path}: download myna-{{base,vertical,hybrid}}.pth from the links in {RELEASES}"
        ) from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder; pass the .pth file (a converted folder needs no conversion).") from None
    except Exception as error:  # pickle and zip errors of every kind: the file is not a torch.save output
        raise ValueError(
            f"{path} is not a PyTorch checkpoint that torch.load can read ({type(error).__name__}: "
            f"{str(error)[:120]}); download the released .pth again from {RELEASES}"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        what = type(loaded).__name__ if not isinstance(loaded, dict) else "a dict of non-tensors"
        raise ValueError(f"{path} holds {what}, not a state dict of tensors; pass a released Myna .pth ({RELEASES}).")
    state_dict = strip_wrappers(loaded)
    missing = [k for k in REQUIRED_KEYS if k not in state_dict]
    if missing:
        sample = ", ".join(list(state_dict)[:3]) or "no keys at all"
        raise ValueError(
            f"{path} is a state dict, but not of a Myna SimpleViT: it lacks {', '.join(missing)} (it has {sample}, "
            f"...); pass a released Myna .pth ({RELEASES})."
        )
    return state_dict


def convert_checkpoint(
    checkpoint: str | dict[str, torch.Tensor],
    variant: str,
    output: str | None = None,
    head_dim: int = 64,
    model_size: str | None = None,
) -> MynaForContrastivePretraining:
    """Loads (with `weights_only=True`), converts and, if `output` is given, saves a released checkpoint.

    `model_size` (a `MODEL_SIZES` name: `"vit-s"` for the released models, `"vit-t"`, `"vit-b"`, `"vit-l"`) takes
    its head width and checks that the checkpoint has that encoder.
    """
    if model_size is not None:
        if model_size not in MODEL_SIZES:
            raise ValueError(f"model_size={model_size!r}: choose one of {list(MODEL_SIZES)}.")
        head_dim = MODEL_SIZES[model_size]["head_dim"]
    if isinstance(checkpoint, str):
        state_dict = read_state_dict(checkpoint)
    else:
        state_dict = checkpoint
        if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
            state_dict = state_dict["state_dict"]
        state_dict = strip_wrappers(state_dict)

    config = config_from_state_dict(state_dict, variant, head_dim=head_dim)
    if model_size is not None and model_size_name(config) != model_size:
        found = {k: getattr(config, k) for k in MODEL_SIZES[model_size]}
        raise ValueError(f"the checkpoint's encoder {found} is not the {model_size} preset {MODEL_SIZES[model_size]}.")
    model = MynaForContrastivePretraining(config)
    model.load_state_dict(convert_state_dict(state_dict, model), strict=True)
    model.eval()
    if output is not None:
        model.save_pretrained(
            output,
            model_card_kwargs={
                "source": f"converted from the released Myna-{variant.capitalize()} checkpoint",
                "evaluation_table": paper_evaluation_table(variant),
            },
        )
        MynaFeatureExtractor.from_config(config).save_pretrained(output)
    return model


@dataclass
class ConvertArguments:
    checkpoint: str = field(metadata={"help": "Path to the released .pth state dict (myna-base.pth, ...)."})
    variant: str = field(metadata={"help": "Released variant.", "choices": sorted(VARIANTS)})
    output: str = field(metadata={"help": "Folder to write (config.json, model.safetensors, ...)."})
    head_dim: int = field(default=64, metadata={"help": "Width of one attention head (64 in every released model)."})
    model_size: str | None = field(
        default=None,
        metadata={"help": "Expected encoder preset (vit-s for the released models; vit-t, vit-b, vit-l); checked."},
    )
    overwrite: bool = field(default=False, metadata={"help": "Write into --output even if it is not empty."})


def check_output(output: str, overwrite: bool = False) -> None:
    """Stops before loading anything when `output` is a file, a folder of audio (never written into), or a
    non-empty folder without `overwrite`."""
    if os.path.exists(output) and not os.path.isdir(output):
        raise ValueError(f"--output {output} is a file, not a folder: name a new folder for the converted model.")
    if not os.path.isdir(output) or not os.listdir(output):
        return
    for root, _, names in os.walk(output):
        audio = [n for n in names if n.lower().endswith(AUDIO_EXTENSIONS)]
        if audio:
            raise ValueError(
                f"--output {output} holds audio ({os.path.join(os.path.relpath(root, output), audio[0])}): a model "
                "never goes into a folder of music; name a new folder."
            )
    if not overwrite:
        what = "a model (config.json)" if os.path.isfile(os.path.join(output, "config.json")) else "other files"
        raise ValueError(
            f"--output {output} is not empty (it holds {what}): choose a new folder, or pass --overwrite to write "
            "into it."
        )


def main(argv: list[str] | None = None) -> None:
    """Converts the checkpoint `argv` names (`ConvertArguments`) and prints what it wrote.

    The programs that run it, `python -m modeling_myna.convert_original_checkpoint` and `myna convert`, first check
    `argv` for a misspelt option ("did you mean") and report errors in one line, with the command-line floor
    (`myna_common.cli_support`), which this package does not import.
    """
    (args,) = HfArgumentParser(ConvertArguments).parse_args_into_dataclasses(args=argv)
    check_output(args.output, args.overwrite)
    model = convert_checkpoint(
        args.checkpoint, args.variant, args.output, head_dim=args.head_dim, model_size=args.model_size
    )
    size = model_size_name(model.config) or "custom size"
    print(
        f"converted {args.checkpoint} ({args.variant}, {size}, {model.myna.num_parameters() / 1e6:.2f}M encoder "
        "parameters, "
        f"projection {model.config.projection_dim}) -> {args.output}"
    )


if __name__ == "__main__":
    # The program, as `myna convert`: a misspelt option gets a "did you mean", errors are one line (--debug for the
    # traceback). This block runs only when the file is the program, never on import: the model package itself
    # imports nothing else of the project (the floor plan, tests/test_imports.py).
    import sys

    from myna_common.cli_support import check_unknown_options, run_cli

    def command(argv: list[str]) -> None:
        check_unknown_options(HfArgumentParser(ConvertArguments), argv)
        main(argv)

    sys.exit(run_cli(command, "convert_original_checkpoint"))
