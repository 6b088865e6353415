"""Command-line and config-file arguments of `training/pretrain.py`, as three dataclass groups.

`HfArgumentParser` reads them from flags or from a single `.yaml` / `.json` file (`--config file.yaml`, or the file
as the only argument). Configuration flows one way: these groups -> `MynaConfig` (`ModelArguments.to_config`) and
the loss/optimiser/data set-up; modules read only `config.*`. The defaults are the project's main job: a small model
pre-trained for a few minutes on CPU on the generated corpus; the paper's values are noted where they differ.
"""

import argparse
import os
import sys
from dataclasses import asdict, dataclass, field, fields


# modeling_myna's names, written out so that parsing (and --help) does not import torch; `to_config` checks them and
# tests/test_pipelines_cli.py checks that they agree with their sources.
VARIANT_NAMES = ("base", "hybrid", "vertical")
MODEL_SIZE_NAMES = ("small", "vit-t", "vit-s", "vit-b", "vit-l")  # configuration_myna.MODEL_SIZES
MASKING_POLICY_NAMES = ("uniform", "time_block", "frequency_band", "multi_block", "complementary", "saliency")
MASK_RATIO_SCHEDULE_NAMES = ("constant", "linear", "cosine")
INPUT_SCALE_NAMES = ("power", "log", "mixed")  # configuration_myna.INPUT_SCALES
STATISTICS_TARGET_NAMES = ("mean", "std", "delta")  # configuration_myna.STATISTICS_TARGETS
DEFAULT_STATISTICS_TARGET_NAMES = ("mean", "std")  # configuration_myna.DEFAULT_STATISTICS_TARGETS
# The fields that override a model_size's dimensions.
SIZE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


@dataclass
class ModelArguments:
    """The encoder to pre-train. Defaults: a small square-patch model (the paper's ViT-S is `--model_size vit-s`)."""

    variant: str = field(default="base", metadata={"help": f"Patch layout: one of {', '.join(VARIANT_NAMES)}."})
    model_size: str = field(
        default="small",
        metadata={
            "help": "'small' (width 128, 3 layers: the CPU default), 'vit-t' (192 x 12), 'vit-s' (the paper's "
            "384 x 12), 'vit-b' (768 x 12) or 'vit-l' (1024 x 24); modeling_myna.configuration_myna.MODEL_SIZES."
        },
    )
    hidden_size: int | None = field(default=None, metadata={"help": "Overrides the width of model_size."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Overrides the depth of model_size."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Overrides the heads of model_size."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Overrides the MLP width."})
    projection_dim: int = field(default=128, metadata={"help": "Width of the contrastive projection."})
    projection_hidden_size: int = field(
        default=0,
        metadata={"help": "0: the paper's linear projection; else an MLP projection head this wide (e.g. 512)."},
    )
    statistics_loss_weight: float = field(
        default=0.0,
        metadata={
            "help": "0: the contrastive loss alone (the paper's); else the weight of an auxiliary loss that predicts "
            "each view's per-bin log-mel mean and std over its whole crop from the masked view (e.g. 1.0)."
        },
    )
    statistics_targets: list[str] = field(
        default_factory=lambda: list(DEFAULT_STATISTICS_TARGET_NAMES),
        metadata={
            "help": "What the statistics loss predicts of each mel bin's log over the crop: any of `mean`, `std` and "
            "`delta` (the mean absolute frame-to-frame change), e.g. `mean std delta` (default `mean std`)."
        },
    )
    tokenizer_loss_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Hybrid only: each tokenizer's weight in the contrastive loss, square then vertical, e.g. "
            "`1 3` (default equal: the reference code's mean)."
        },
    )
    chunk_frames: int | None = field(
        default=None,
        metadata={
            "help": "Crop length in mel frames: each view's and each embedded chunk's length (default 96, 3 s, the "
            "paper's; a multiple of the patch width)."
        },
    )
    mask_ratio: float = field(default=0.9, metadata={"help": "Fraction of patch tokens dropped per view (paper: 0.9)."})
    masking_policy: str = field(
        default="uniform",
        metadata={"help": f"Which tokens each view keeps: one of {list(MASKING_POLICY_NAMES)} (paper: uniform)."},
    )
    masking_policy_args: str | None = field(
        default=None,
        metadata={"help": "Options of the policy as key=value[,key=value], e.g. 'temperature=0.5,saliency=flux'."},
    )
    mask_ratio_schedule: str = field(
        default="constant",
        metadata={"help": f"Masking ratio over training: one of {list(MASK_RATIO_SCHEDULE_NAMES)}; ends at mask_ratio."},
    )
    mask_ratio_start: float | None = field(
        default=None, metadata={"help": "Masking ratio at the first step of a linear or cosine schedule."}
    )
    input_scale: str = field(
        default="power",
        metadata={
            "help": "What the tokenizers see of the mel: 'power' (the paper's, the released models'), 'log' (its "
            "log, which keeps the quiet bins' spectral envelope) or 'mixed' (the log in square patches, the power in "
            "vertical ones)."
        },
    )
    init_from: str | None = field(
        default=None, metadata={"help": "A saved Myna folder or Hub id to start from instead of random weights."}
    )

    def __post_init__(self):
        # Checked here, so that a mistyped name stops the run before any work (or any refusal about the folder).
        from myna_common.cli_support import did_you_mean

        for name, known in (("variant", VARIANT_NAMES), ("model_size", MODEL_SIZE_NAMES),
                            ("masking_policy", MASKING_POLICY_NAMES), ("mask_ratio_schedule", MASK_RATIO_SCHEDULE_NAMES),
                            ("input_scale", INPUT_SCALE_NAMES)):
            value = getattr(self, name)
            if value not in known:
                raise ValueError(f"{name}={value!r}: choose one of {list(known)}.{did_you_mean(value, known)}")
        for value in self.statistics_targets:
            if value not in STATISTICS_TARGET_NAMES:
                raise ValueError(
                    f"statistics_targets: {value!r} is not one of {list(STATISTICS_TARGET_NAMES)}."
                    f"{did_you_mean(value, STATISTICS_TARGET_NAMES)}"
                )
        if self.statistics_targets != list(DEFAULT_STATISTICS_TARGET_NAMES) and self.statistics_loss_weight == 0:
            raise ValueError(
                f"statistics_targets={self.statistics_targets} has no effect without the statistics loss: give a "
                "positive --statistics_loss_weight (e.g. 3, the cpu-hour preset's) or drop --statistics_targets."
            )

    def to_config(self):
        """The `MynaConfig` of these arguments."""
        from modeling_myna import MynaConfig
        from modeling_myna.configuration_myna import MODEL_SIZES
        from modeling_myna.masking import build_masking_policy, parse_policy_options

        if self.model_size not in MODEL_SIZES:
            raise ValueError(f"model_size={self.model_size!r}: choose one of {list(MODEL_SIZES)}.")
        size = dict(MODEL_SIZES[self.model_size])
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            if getattr(self, key) is not None:
                size[key] = getattr(self, key)
        if size["hidden_size"] % size["num_attention_heads"] != 0:
            raise ValueError(
                f"hidden_size={size['hidden_size']} is not divisible by num_attention_heads="
                f"{size['num_attention_heads']}."
            )
        size["head_dim"] = size["hidden_size"] // size["num_attention_heads"]
        policy_options = parse_policy_options(self.masking_policy_args)
        build_masking_policy(self.masking_policy, **policy_options)  # fails here on a bad name or option
        scheduled = self.mask_ratio_start if self.mask_ratio_schedule != "constant" else None
        lowest = min(r for r in (self.mask_ratio, scheduled) if r is not None)
        if self.masking_policy == "complementary" and lowest < 0.5:
            raise ValueError(
                f"masking_policy complementary keeps disjoint tokens in the two views, which needs at least 50% "
                f"masking; this run masks {lowest:g}{' at the start of its schedule' if lowest != self.mask_ratio else ''}"
                ": raise --mask_ratio (and --mask_ratio_start) to 0.5 or more, or choose another policy."
            )
        return MynaConfig.from_variant(
            self.variant,
            projection_dim=self.projection_dim,
            projection_hidden_size=self.projection_hidden_size,
            statistics_loss_weight=self.statistics_loss_weight,
            statistics_targets=self.statistics_targets,
            tokenizer_loss_weights=self.tokenizer_loss_weights,
            mask_ratio=self.mask_ratio,
            masking_policy=self.masking_policy,
            masking_policy_kwargs=policy_options,
            mask_ratio_schedule=self.mask_ratio_schedule,
            mask_ratio_start=self.mask_ratio_start,
            input_scale=self.input_scale,
            **({"chunk_frames": self.chunk_frames} if self.chunk_frames is not None else {}),
            **size,
        )


@dataclass
class DataArguments:
    """Where the clips come from, and how their spectrograms are cached and cropped."""

    dataset: str = field(
        default="synthetic",
        metadata={
            "help": "'synthetic' (the generated corpus), 'folder' (audio files under --data_dir, recursive), "
            "'audioset' (Hub dataset --dataset_name, Music subset) or 'audioset_csv' (segment CSV + audio folder)."
        },
    )
    data_dir: str | None = field(default=None, metadata={"help": "Audio folder for 'folder' and 'audioset_csv'."})
    dataset_name: str = field(default="agkphysics/AudioSet", metadata={"help": "Hub id for 'audioset'."})
    dataset_config: str = field(default="balanced", metadata={"help": "Config for 'audioset': balanced, unbalanced."})
    dataset_split: str = field(default="train", metadata={"help": "Split for 'audioset'."})
    segments_csv: str | None = field(
        default=None, metadata={"help": "AudioSet segment CSV (YTID, start, end, labels) for 'audioset_csv'."}
    )
    streaming: bool = field(
        default=False, metadata={"help": "Stream the set instead of caching it (sets that do not fit on disk)."}
    )
    shuffle_buffer_size: int = field(default=1000, metadata={"help": "Shuffle buffer when streaming."})
    num_clips: int = field(default=384, metadata={"help": "Clips of the generated corpus."})
    clip_seconds: float = field(default=10.0, metadata={"help": "Length of a generated clip."})
    max_clips: int | None = field(default=None, metadata={"help": "Use at most this many clips of any source."})
    storage_dtype: str = field(
        default="bfloat16",
        metadata={
            "help": "Spectrogram store dtype: bfloat16 (half the bytes; relative rounding at most 2^-8, see "
            "benchmarks/benchmark_storage_dtype.py) or float32 (never float16: power mels overflow it)."
        },
    )
    segment_seconds: float | None = field(
        default=None,
        metadata={
            "help": "Cut each file of 'folder' into clips of this many seconds (default 10 for 'folder'; 0: one clip "
            "per file), so that whole tracks give many clips and the two views of a pair stay close."
        },
    )
    spectrogram_placement: str = field(
        default="auto",
        metadata={
            "help": "'resident' (the whole set in device memory), 'out_of_core' (crops read from the store on "
            "disk by a background thread) or 'auto' (resident when it takes under half the free memory)."
        },
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Where the spectrogram Arrow cache goes (default: <output_dir>/cache)."}
    )
    max_crop_distance: int | None = field(
        default=None, metadata={"help": "Largest distance in frames between the starts of the two crops."}
    )
    num_views: int = field(
        default=2,
        metadata={
            "help": "Crops per clip per step (the paper: 2). More views give each clip more positives from one read "
            "of its spectrogram; a 90%%-masked view is cheap."
        },
    )
    equalizer_db: float = field(
        default=0.0,
        metadata={
            "help": "Filter each view by its own smooth random equaliser of at most this many dB either way over the "
            "mel bins (0: none, the paper's), so that a pair cannot be matched by its spectral envelope alone."
        },
    )
    probe_clips: int = field(
        default=240, metadata={"help": "Held-out generated clips for the closing linear probe (0: no probe)."}
    )
    preprocessing_batch_size: int = field(default=16, metadata={"help": "Clips per spectrogram batch."})
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={
            "help": "Processes computing spectrograms on the CPU, one thread each (default: one per core; 1: the "
            "main process). A GPU preprocesses in the main process."
        },
    )


    def __post_init__(self):
        # Checked here, so that a mistake stops the run before any preprocessing (names written out: no torch import).
        datasets = ("synthetic", "folder", "audioset", "audioset_csv")
        if self.dataset not in datasets:
            raise ValueError(f"dataset={self.dataset!r}: choose one of {datasets}.")
        if self.storage_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"storage_dtype={self.storage_dtype!r}: use bfloat16 or float32 (float16 overflows).")
        placements = ("auto", "resident", "out_of_core")
        if self.spectrogram_placement not in placements:
            raise ValueError(f"spectrogram_placement={self.spectrogram_placement!r}: choose one of {placements}.")
        if self.segment_seconds is not None and self.segment_seconds < 0:
            raise ValueError(f"segment_seconds={self.segment_seconds}: use a length in seconds, or 0 for whole files.")
        if self.num_views < 2:
            raise ValueError(f"num_views={self.num_views}: a contrastive pair needs at least 2 views per clip.")
        if not 0 <= self.equalizer_db <= 60:
            raise ValueError(f"equalizer_db={self.equalizer_db}: use a largest gain in dB from 0 (none) to 60, e.g. 6.")
        if self.num_views > 2 and self.streaming:
            raise ValueError(f"num_views={self.num_views} with --streaming: a stream gives 2 views; cache the set.")


@dataclass
class PretrainingArguments:
    """The optimisation, checkpoints and export. Paper: batch 4096, Adam lr 3e-4, wd 1e-5, 500 epochs."""

    output_dir: str = field(
        default="outputs/myna-pretrain",
        metadata={"help": "The run's folder: model/ (the export), checkpoints/, logs/, cache/, run.json."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the run already in output_dir (its model, checkpoints, logs); without it a new run "
                  "into a non-empty output_dir stops."},
    )
    loss: str = field(default="sogclr", metadata={"help": "'sogclr' (reference code) or 'infonce' (paper)."})
    temperature: float = field(default=0.1, metadata={"help": "Softmax temperature of the loss."})
    sogclr_gamma: float = field(default=0.9, metadata={"help": "SogCLR moving-average weight."})
    per_device_batch_size: int = field(default=64, metadata={"help": "Clips per process per step (paper: 4096)."})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimiser step; SogCLR only (InfoNCE needs the full batch)."}
    )
    max_steps: int = field(default=300, metadata={"help": "Optimiser steps (overrides num_epochs when > 0)."})
    num_epochs: float = field(default=0, metadata={"help": "Epochs, used when max_steps <= 0."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak learning rate (paper: 3e-4 at batch 4096)."})
    weight_decay: float = field(
        default=1e-5, metadata={"help": "Adam (coupled L2) weight decay, on --weight_decay_scope (paper: 1e-5)."}
    )
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    warmup_steps: int = field(default=30, metadata={"help": "Linear warm-up steps."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping (0: off)."})
    mixed_precision: str | None = field(
        default=None, metadata={"help": "'no', 'bf16' or 'fp16'; default: what `accelerate launch` was given."}
    )
    torch_compile: bool = field(default=False, metadata={"help": "Compile the model with torch.compile."})
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Recompute each block's activations in the backward pass (less memory, ~1/3 more compute); "
            "benchmarks/estimate_memory.py estimates the saving per model size."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of weights, crops, masks and the data order."})
    checkpointing_steps: int = field(default=100, metadata={"help": "Save a checkpoint every N steps (0: only at the end)."})
    checkpoints_total_limit: int | None = field(default=2, metadata={"help": "Keep this many checkpoints."})
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "A checkpoint folder, or 'latest' for the newest one of this run under output_dir (a checkpoint "
            "of another seed, settings or data is refused). Checkpoints hold pickled state (accelerate's RNG "
            "states): resume only from checkpoints you trust."
        },
    )
    resume_with_new_process_count: bool = field(
        default=False,
        metadata={
            "help": "Let --resume_from_checkpoint continue a run on another number of processes with the same global "
            "batch (per_device_batch_size x processes): the plan (clips, crops, masks per step) is the same. Without "
            "it such a resume is refused; another global batch always is (it would be another run)."
        },
    )
    logging_steps: int = field(default=10, metadata={"help": "Log every N steps."})
    report_to: str = field(default="none", metadata={"help": "Trackers: none, all, tensorboard, wandb, ..."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the exported model to the Hub."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repository id for --push_to_hub."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository private."})
    print_config: bool = field(
        default=False, metadata={"help": "Print the resolved settings (config file + flags) as YAML and exit."}
    )
    weight_decay_scope: str = field(
        default="matrices",
        metadata={
            "help": "'matrices': decay only tensors with >= 2 dims, not biases and LayerNorm gains (nanoGPT; the "
            "default, kept so that existing runs and checkpoints train as before); 'all': every parameter, as the "
            "reference code's torch.optim.Adam(model.parameters(), weight_decay=...) does (set by the paper preset)."
        },
    )

    def __post_init__(self):
        if self.loss not in ("sogclr", "infonce"):
            raise ValueError(f"loss={self.loss!r}: choose 'sogclr' or 'infonce'.")
        if self.loss == "infonce" and self.gradient_accumulation_steps > 1:
            raise ValueError(
                "gradient_accumulation_steps > 1 with loss='infonce' would give each micro-batch only its own "
                "negatives, not those of the full batch: raise per_device_batch_size or the number of processes, "
                "or use loss='sogclr', whose per-example state makes small batches work."
            )
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/myna-small).")
        if self.max_steps <= 0 and self.num_epochs <= 0:
            raise ValueError("set max_steps > 0 or num_epochs > 0.")
        if self.weight_decay_scope not in ("matrices", "all"):
            raise ValueError(f"weight_decay_scope={self.weight_decay_scope!r}: choose 'matrices' or 'all'.")


ARGUMENT_GROUPS = (ModelArguments, DataArguments, PretrainingArguments)
PRESETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")  # the paper's runs, a CPU smoke run


def read_config_file(path: str, groups: tuple = ARGUMENT_GROUPS) -> dict:
    """The settings of a `.yaml` / `.json` config file, checked against the argument names of `groups` (with a
    suggestion)."""
    import difflib
    import json

    import yaml

    shipped = os.path.join(PRESETS_DIR, os.path.basename(path))
    if not os.path.exists(path) and os.path.exists(shipped):
        path = shipped  # `training/configs/myna-base.yaml` (or `myna-base.yaml`) from any folder: a shipped preset
    from myna_common.cli_support import syntax_error_message

    given, path = path, os.path.abspath(path)
    presets = ", ".join(sorted(f for f in os.listdir(PRESETS_DIR) if f.endswith(".yaml")))
    if not os.path.exists(path):
        raise ValueError(f"config file {path} does not exist (shipped presets: {presets}).")
    if os.path.isdir(path):
        inside = sorted(f for f in os.listdir(path) if f.endswith((".yaml", ".yml", ".json")))
        raise ValueError(
            f"--config {given} is a folder; pass one file in it"
            + (f": {', '.join(inside[:6])}" if inside else f" (shipped presets: {presets})") + "."
        )
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise ValueError(
            f"config file {syntax_error_message(path, error)}; fix that line (the shipped presets in "
            f"{PRESETS_DIR} show the format: setting: value, one per line)."
        ) from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path} must hold a mapping of setting: value.")
    known = [f.name for group in groups for f in fields(group)]
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else " See --help for the settings."
            raise ValueError(f"config file {path}: unknown setting {key!r}.{hint}")
    return values


HELP_DESCRIPTION = """\
Contrastive pre-training of Myna (arXiv 2502.12511). With no arguments: a small model on the generated corpus (CPU,
a few minutes), the project's demo.

  --config FILE      a .yaml/.json file of these settings; flags given with it override its values. Presets in
                     training/configs/: cpu-smoke.yaml, myna-base.yaml, myna-vertical.yaml, myna-hybrid.yaml
  --print_config     print the resolved settings (file + flags) as YAML and exit
  --debug            show the traceback of an error (or set MYNA_DEBUG=1)
"""


def build_parser(groups: tuple = ARGUMENT_GROUPS):
    from transformers import HfArgumentParser

    if groups != ARGUMENT_GROUPS:  # another script's groups (fine-tuning): its own help
        return HfArgumentParser(groups)

    class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        def _get_help_string(self, action):  # no "(default: None)" for settings whose help explains the default
            return action.help if action.default is None else super()._get_help_string(action)

    return HfArgumentParser(
        groups,
        prog="pretrain.py",
        usage="accelerate launch -q --config_file training/accelerate.yaml training/pretrain.py [--config FILE] "
        "[--SETTING VALUE ...]",
        description=HELP_DESCRIPTION,
        # The repository's line length: most settings fit on one line (the dashed aliases are HfArgumentParser's).
        formatter_class=lambda prog: _Formatter(prog, width=119, max_help_position=56),
    )


def parse_arguments(argv: list[str] | None = None, groups: tuple = ARGUMENT_GROUPS):
    """`(model_args, data_args, training_args)` from flags, from one `.yaml`/`.json` file, or both.

    The file is given with `--config file` (or as the first argument); flags given with it override its values, so
    `--config training/configs/myna-base.yaml --max_steps 10` is the paper's run cut to 10 steps. A mistyped flag
    raises a `ValueError` naming the closest known one. `groups` are the dataclasses to fill (fine-tuning passes its
    own).
    """
    from myna_common.cli_support import check_unknown_options

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(groups)
    config_file = None
    if "--config" in argv:
        position = argv.index("--config")
        if position + 1 >= len(argv) or argv[position + 1].startswith("--"):
            raise ValueError("--config needs a .yaml or .json file, e.g. --config training/configs/myna-base.yaml.")
        config_file = argv[position + 1]
        del argv[position : position + 2]
    elif argv and argv[0].endswith((".yaml", ".yml", ".json")):
        config_file = argv.pop(0)
    if config_file is not None:
        values = read_config_file(config_file, groups)
        given = {argument.split("=", 1)[0][2:].replace("-", "_") for argument in argv if argument.startswith("--")}
        if "model_size" in given:
            # A size given as a flag wins over the file's whole size, not just its name: the file's explicit
            # dimensions (a preset's hidden_size: 64, ...) go too, unless they are flags as well.
            for key in SIZE_FIELDS:
                if key not in given:
                    values.pop(key, None)
        parser.set_defaults(**values)
    if "-h" not in argv and "--help" not in argv:
        check_unknown_options(parser, argv)
    parsed = parser.parse_args_into_dataclasses(args=argv)
    if groups == ARGUMENT_GROUPS:
        check_together(*parsed)
    return parsed


def check_together(model_args: "ModelArguments", data_args: "DataArguments", training_args=None) -> None:
    """The checks that read settings of two groups, each dataclass having checked its own: before any data work."""
    if model_args.masking_policy == "complementary" and data_args.num_views != 2:
        raise ValueError(
            f"masking_policy complementary splits each clip's tokens between exactly two views, and num_views is "
            f"{data_args.num_views}: use --num_views 2 with it, or another --masking_policy for more views."
        )


def to_yaml(*groups) -> str:
    """The resolved settings as a YAML config file that `--config` reads back."""
    import yaml

    values = {k: v for k, v in flat_config(*groups).items() if k != "print_config"}
    return yaml.safe_dump(values, sort_keys=False)


def flat_config(*groups) -> dict:
    """One flat dict of every argument, for trackers and the model card."""
    flat = {}
    for group in groups:
        flat.update({k: v for k, v in asdict(group).items()})
    return flat


__all__ = [
    "DataArguments",
    "ModelArguments",
    "PretrainingArguments",
    "check_together",
    "flat_config",
    "parse_arguments",
    "read_config_file",
    "to_yaml",
]
