"""The ablation runner's options (`AblationArguments`, one dataclass read by `HfArgumentParser`) and the readers of
their comma lists: plain values, named recipes, ratio schedules and model sizes, each checked with a line that says
how to write it."""

import re
from dataclasses import dataclass, field

from modeling_myna.configuration_myna import MASK_RATIO_SCHEDULES, MASKING_POLICIES, MODEL_SIZES, VARIANTS


@dataclass
class AblationArguments:
    output_dir: str = field(
        default="outputs/ablation", metadata={"help": "results.json, results.md, plots (and runs/)."}
    )
    runs_dir: str | None = field(
        default=None,
        metadata={"help": "Where each run's folder goes (default <output_dir>/runs); sweeps sharing it share runs."},
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Spectrogram cache shared by the runs (default <output_dir>/cache)."}
    )
    mask_ratios: str = field(default="0.5,0.75,0.9", metadata={"help": "Comma list of masking ratios."})
    mask_schedules: str = field(
        default="constant",
        metadata={
            "help": "Comma list of ratio schedules: constant, or linear:START / cosine:START (from START to the "
            "point's mask ratio over the run)."
        },
    )
    masking_policies: str = field(
        default=",".join(MASKING_POLICIES), metadata={"help": f"Comma list of policies of {list(MASKING_POLICIES)}."}
    )
    batch_sizes: str = field(default="16,64", metadata={"help": "Comma list of batch sizes."})
    crop_frames: str = field(
        default="", metadata={"help": "Comma list of crop lengths in frames (empty: the model's default, 96 = 3 s)."}
    )
    model_sizes: str = field(
        default="small",
        metadata={"help": f"Comma list of sizes of {list(MODEL_SIZES)}, or WIDTHxDEPTH (e.g. 256x2; 32-wide heads)."},
    )
    variants: str = field(default="base,vertical", metadata={"help": f"Comma list of {sorted(VARIANTS)}."})
    recipes: str = field(
        default="",
        metadata={
            "help": "Named pre-training flag sets, one factor: 'name=--flag value ...;name2=...' (an empty flag "
            "list is the plain point), e.g. 'plain=;views4=--num_views 4'."
        },
    )
    design: str = field(
        default="one_at_a_time", metadata={"help": "'one_at_a_time' around a base run (the paper's way) or 'grid'."}
    )
    examples_per_run: str = field(
        default="6400",
        metadata={"help": "Training examples each run sees (steps x batch); a comma list runs every point at each."},
    )
    seeds: str = field(
        default="0,1,2", metadata={"help": "Comma list of seeds; every point runs once per seed (mean, 95%% interval)."}
    )
    dataset: str = field(
        default="synthetic",
        metadata={"help": "Pre-training data, passed to pretrain.py: synthetic, folder (with --data_dir), ..."},
    )
    data_dir: str | None = field(default=None, metadata={"help": "Audio folder for --dataset folder."})
    num_clips: int = field(default=256, metadata={"help": "Clips of the generated pre-training corpus."})
    tasks: str = field(
        default="synthetic-key,synthetic-tempo,synthetic-style",
        metadata={"help": "Comma list of probe tasks (probe.py's names, or custom:<task.yaml>)."},
    )
    synthetic_sizes: str = field(default="256,96,96", metadata={"help": "Generated clips per probe split."})
    synthetic_duration: float = field(default=10.0, metadata={"help": "Seconds per generated probe clip."})
    full_grid: bool = field(default=False, metadata={"help": "The paper's 216-probe grid instead of --fast (8)."})
    baselines: str | None = field(
        default=None,
        metadata={"help": "Comma list of probe.py results.json files (hand-crafted features), drawn as references."},
    )
    pretrain_args: str = field(default="", metadata={"help": "Extra flags for every pretrain.py run, one string."})
    probe_args: str = field(default="", metadata={"help": "Extra flags for every probe.py run, one string."})
    checkpoints_per_run: int = field(
        default=4, metadata={"help": "Checkpoints during each pre-training, so a killed run resumes (0: none)."}
    )
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's)."})
    keep_checkpoints: bool = field(default=False, metadata={"help": "Keep each run's checkpoints (large)."})
    plot_policies: str | None = field(
        default=None, metadata={"help": "Only draw one PNG per masking policy into this folder, then exit."}
    )
    curve: str | None = field(
        default=None,
        metadata={
            "help": "Instead of a sweep: probe the checkpoints of one pre-training (its --output_dir; keep them with "
            "--checkpoints_total_limit) on --tasks, for quality against its CPU-seconds (curve.md, curve.png). "
            "Several, comma-separated: the same recipe with different --seed; each step's row is then their mean "
            "and 95%% interval."
        },
    )
    curve_steps: str = field(
        default="", metadata={"help": "With --curve: a comma list of checkpoint steps to probe (default: every one)."}
    )


def split_list(text: str, cast) -> list:
    """`"0.5, 0.9,"` -> `[0.5, 0.9]` with `cast=float`: the non-empty items of a comma list."""
    return [cast(v.strip()) for v in text.split(",") if v.strip()]


def parse_recipes(text: str) -> dict[str, str]:
    """`'a=--x 1;b='` -> `{"a": "--x 1", "b": ""}`; no recipes -> `{"": ""}` (the plain point)."""
    recipes = {}
    for item in filter(None, (i.strip() for i in text.split(";"))):
        name, sep, flags = item.partition("=")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            raise ValueError(
                f"--recipes item {item!r}: write name=flags (a name of letters, digits, . _ + -), items separated by "
                "';'."
            )
        if name in recipes:
            raise ValueError(f"--recipes names {name!r} twice.")
        recipes[name] = flags.strip()
    return recipes or {"": ""}


def parse_schedule(text: str) -> str:
    """One item of `--mask_schedules`: `constant`, `linear:START` or `cosine:START`, returned as written."""
    name, _, start = text.partition(":")
    if name not in MASK_RATIO_SCHEDULES or (name != "constant") != bool(start):
        raise ValueError(
            f"mask schedule {text!r}: write constant, linear:START or cosine:START (START the first step's ratio)."
        )
    if start:
        float(start)
    return text


def parse_model_size(text: str) -> str:
    """One item of `--model_sizes`: a name of `MODEL_SIZES` or `WIDTHxDEPTH`, returned as written."""
    if text in MODEL_SIZES or re.fullmatch(r"\d+x\d+", text):
        return text
    raise ValueError(f"unknown model_size {text!r}: choose from {list(MODEL_SIZES)} or write WIDTHxDEPTH (256x2).")


__all__ = ["AblationArguments", "parse_model_size", "parse_recipes", "parse_schedule", "split_list"]
