"""`probe.py`'s options: the model, the tasks, the probe protocol (grid, layers, pooling) and the report, parsed
without importing torch, transformers or datasets, so that `--help` and a mistake answer at once."""

import re
import sys
from dataclasses import dataclass, field


# tasks.SYNTHETIC_TASKS, written out so that parsing (and --help) imports neither torch nor datasets.
SYNTHETIC_TASK_NAMES = ("synthetic-key", "synthetic-tempo", "synthetic-tags", "synthetic-style")


@dataclass
class ModelArguments:
    model: str = field(
        metadata={
            "help": "A model folder AutoModel loads (a Myna checkpoint, or another audio model), or hand-crafted "
            "features: handcrafted:logmel, handcrafted:chroma, handcrafted:all."
        }
    )
    model_name: str | None = field(
        default=None, metadata={"help": "Row name in the table; the folder name by default."}
    )
    patch_modes: str | None = field(
        default=None, metadata={"help": "Comma list of embeddings to probe (square,vertical,both); all by default."}
    )
    device: str = field(default="cpu", metadata={"help": "Device for extraction and probes, e.g. cuda."})
    num_threads: int | None = field(
        default=None,
        metadata={"help": "torch CPU threads; 1 is fastest for the probes' small matmuls on a busy machine."},
    )
    extraction_batch_size: int = field(default=64, metadata={"help": "Chunks per model forward."})
    train_hop_frames: int | None = field(
        default=None, metadata={"help": "Frames between training chunks; half a chunk by default (valid/test: none)."}
    )
    cache_dir: str | None = field(
        default=None, metadata={"help": "Embedding cache; <output_dir>/embeddings by default."}
    )


@dataclass
class TaskArguments:
    tasks: str = field(
        default=",".join(SYNTHETIC_TASK_NAMES),
        metadata={
            "help": "Comma list: mtt, gtzan, giantsteps, emomusic; MARBLE's mtg-genre, mtg-instrument, "
            "mtg-moodtheme, mtg-top50tags, nsynth-instrument, nsynth-pitch, vocalset-singer, vocalset-technique; "
            "synthetic-key, synthetic-tempo, synthetic-tags, synthetic-style; custom:<task.yaml or audio folder>."
        },
    )
    task_files: str | None = field(
        default=None, metadata={"help": "Comma list of custom task files (YAML), added to --tasks as custom:<file>."}
    )
    dataset_paths: str | None = field(
        default=None,
        metadata={
            "help": "Comma list task=folder or task=hub_id, e.g. gtzan=/data/gtzan,mtt=m-a-p/MTT; a family name "
            "(mtg, nsynth, vocalset) gives the folder of all its tasks."
        },
    )
    layout: str = field(default="auto", metadata={"help": "auto, original, marble or hub."})
    split_files: str | None = field(
        default=None, metadata={"help": "Comma list task=split.json replacing the shipped split of that task."}
    )
    synthetic_sizes: str = field(
        default="256,96,96", metadata={"help": "Generated clips per split: train,valid,test."}
    )
    synthetic_duration: float = field(default=10.0, metadata={"help": "Seconds per generated clip."})


@dataclass
class ProbeArguments:
    fast: bool = field(default=False, metadata={"help": "Train an 8-probe subset of the grid (development)."})
    protocol: str = field(
        default="jukemir",
        metadata={
            "help": "jukemir: the paper's 216-probe grid, training chunks at half-chunk hops. marble: MARBLE's "
            "probe (MLP 512, dropout 0.2, batch 64, 5 learning rates), training chunks without overlap."
        },
    )
    max_epochs: int = field(default=100, metadata={"help": "Epochs per probe at most."})
    patience: int = field(
        default=10, metadata={"help": "Epochs without a better validation score before a probe stops."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the probes' initial weights, batch order and dropout."})
    layers: str = field(
        default="last",
        metadata={
            "help": "last (the paper's): probe the pooled last layer (Myna: after the final LayerNorm). all: every "
            "layer's pooled hidden states, extracted in one forward (Myna: 0 is the embedding layer, tokens plus "
            "positions before any block; 1..N the N blocks, N the same embedding as last); the grid runs on each "
            "and the layer (and a hybrid's patch mode) is chosen on VALIDATION, as MARBLE does. Or a comma list of "
            "those indices (-1: the last). Hand-crafted features have one layer."
        },
    )
    pooling: str = field(
        default="mean",
        metadata={
            "help": "The statistic over time within a chunk, the same for every row. mean: Myna the mean of the "
            "chunk's tokens (the paper's); hand-crafted features the mean of their frame features (logmel 168 "
            "values, chroma 12, all 180). meanstd: the mean and the standard deviation over time, [mean ; std], "
            "twice as wide (hand-crafted: 336, 24, 360, their vectors before this option)."
        },
    )


@dataclass
class ReportArguments:
    output_dir: str = field(
        default="outputs/evaluation", metadata={"help": "Where results.json, table.md and plots go."}
    )
    tsne: bool = field(
        default=True, metadata={"help": "Plot a t-SNE of the test embeddings of classification tasks (--no_tsne: skip)."}
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Write into output_dir even when it holds another model's results or other files."},
    )


ARGUMENT_GROUPS = (ModelArguments, TaskArguments, ProbeArguments, ReportArguments)


def parse_arguments(argv: list[str] | None = None):
    """`(model_args, task_args, probe_args, report_args)`, parsed without importing torch or transformers."""
    from myna_common.cli_support import dataclass_parser, parse_into

    parser = dataclass_parser(
        *ARGUMENT_GROUPS,
        prog="probe.py",
        description="Evaluate one model with the JukeMIR probe protocol (the Myna paper's) on downstream tasks; "
        "writes results.json, table.md and the linear probes. --debug (or MYNA_DEBUG=1) shows tracebacks.",
    )
    return parse_into(parser, ARGUMENT_GROUPS, sys.argv[1:] if argv is None else argv)[:4]


# Protocol descriptions for the report, without and with --fast.
PROTOCOLS = {
    "jukemir": ("JukeMIR grid (216 probes)", "fast subset (8 probes)"),
    "marble": (
        "MARBLE probe (MLP 512, 5 learning rates, non-overlapping training chunks)",
        "MARBLE probe, fast (2 learning rates, non-overlapping training chunks)",
    ),
}


def _parse_mapping(text: str | None, what: str) -> dict[str, str]:
    mapping = {}
    for item in filter(None, (text or "").split(",")):
        if "=" not in item:
            raise ValueError(f"{what}: expected task=value items separated by commas, got {item!r}.")
        key, value = item.split("=", 1)
        mapping[key.strip()] = value.strip()
    return mapping


LAYERS_FORM = re.compile(r"last|all|-?\d+(,-?\d+)*")


def check_protocol_arguments(probe_args: ProbeArguments) -> None:
    """`--layers` and `--pooling` well formed (before any task or model loads)."""
    if not LAYERS_FORM.fullmatch(probe_args.layers.replace(" ", "")):
        raise ValueError(
            f"--layers {probe_args.layers}: expected last, all, or a comma list of layer indices such as 4,8,12."
        )
    from myna_evaluation.extract import POOLINGS

    if probe_args.pooling not in POOLINGS:
        raise ValueError(f"--pooling {probe_args.pooling}: expected one of {', '.join(POOLINGS)}.")


def parse_layers(text: str, num_layers: int) -> list[int] | None:
    """`--layers` as the sorted layer indices to probe, in `0..num_layers - 1`; `None` for `last` (the paper's)."""
    text = text.replace(" ", "")
    if text == "last":
        return None
    if text == "all":
        return list(range(num_layers))
    indices = [int(i) for i in text.split(",")]
    outside = [i for i in indices if not -num_layers <= i < num_layers]
    if outside:
        raise ValueError(
            f"--layers {text}: this model has layers 0..{num_layers - 1} (0 the embedding layer, {num_layers - 1} "
            f"the last; -1 also names the last), not {', '.join(map(str, outside))}."
        )
    return sorted({i % num_layers for i in indices})


__all__ = [
    "ARGUMENT_GROUPS", "LAYERS_FORM", "PROTOCOLS", "SYNTHETIC_TASK_NAMES", "ModelArguments", "ProbeArguments",
    "ReportArguments", "TaskArguments", "check_protocol_arguments", "parse_arguments", "parse_layers",
]
