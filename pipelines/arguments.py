"""What `myna embed` is given, shared by its two writers (`cli.py`: one file; `library.py`: a resumable store): the
options (`EmbedArguments` for both, `LibraryArguments` for a store only) in one parser (`embed_parser`), the audio
files its arguments name (`find_audio_files`), and the rule that no output goes inside a folder being embedded
(`check_output_outside_inputs`).

Standard library only, so that the command parses its arguments and answers `--help` before importing torch.
"""

import os
from dataclasses import dataclass, field
from typing import Literal

from myna_common.cli_support import CommandParser, UsageError, dataclass_parser, options_given


# Written out, not imported, because their modules import torch: base.DEFAULT_BATCH_SIZE, audio_utils.AUDIO_EXTENSIONS
# (tests check that they agree).
DEFAULT_BATCH_SIZE = 32
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus")


@dataclass
class EmbedArguments:
    _argument_group_name = "every output (one .npz or .parquet file, or a store folder)"

    model: str = field(metadata={"help": "Myna model folder (from `myna convert` or save_pretrained), or a Hub id."})
    output: str = field(
        metadata={
            "help": "File to write: .npz (arrays `embeddings`, `paths`, `skipped`, and for --pooling none "
            "`start_times`, `file_index`) or .parquet (one row per track, or per chunk for --pooling none); or a "
            "folder (a name without an extension): a resumable store. Never inside a folder being embedded."
        }
    )
    pooling: Literal["mean", "none"] = field(
        default="mean",
        metadata={"help": "`mean`: one embedding per file, the mean over its 3 s chunks. `none`: one per chunk."},
    )
    patch_mode: Literal["square", "vertical", "both"] | None = field(
        default=None,
        metadata={"help": "Hybrid model tokenizer: square, vertical or both (concatenated). Default: the model's."},
    )
    batch_size: int = field(
        default=DEFAULT_BATCH_SIZE, metadata={"help": "Chunks (3 s each) per forward pass; sets peak memory."}
    )
    device: str | None = field(
        default=None, metadata={"help": "cpu, cuda, cuda:1, mps, ... Default: cuda when available, else cpu."}
    )
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32",
        metadata={"help": "Model weights' dtype (the spectrogram and the first LayerNorm stay float32)."},
    )
    backend: Literal["pytorch", "onnxruntime"] = field(
        default="pytorch",
        metadata={
            "help": "onnxruntime: run the model's exported ONNX graph on the CPU (`myna export`; exported on the fly "
            "if the folder has none), checked against PyTorch on generated music first."
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace --output if it exists."})


@dataclass
class LibraryArguments:
    _argument_group_name = "store folder output only (--output FOLDER: a name without .npz or .parquet)"

    precision: Literal["float32", "bfloat16", "int8"] = field(
        default="float32",
        metadata={
            "help": "CPU inference precision. bfloat16 (CPUs with native bfloat16) and int8 (dynamic quantization) "
            "are checked against float32 on generated music first and refused below a mean cosine of 0.99."
        },
    )
    timeline: bool = field(default=False, metadata={"help": "Also store each track's 3 s chunk embeddings."})
    num_workers: int = field(
        default=1, metadata={"help": "Decoding processes running ahead of the model (0: decode in the main process)."}
    )
    shard_size: int = field(default=256, metadata={"help": "Files per Parquet shard: at most this much is redone."})
    repair: bool = field(
        default=False,
        metadata={"help": "Set damaged shards aside (.myna/damaged/) and embed their files again, keeping the rest."},
    )


def embed_parser() -> CommandParser:
    """The parser of `myna embed`, whichever the output: its `--help` lists every option, the store's in their own
    group, before torch is imported."""
    parser = dataclass_parser(
        EmbedArguments,
        LibraryArguments,
        prog="myna embed",
        description="Embed audio files (wav, flac, ogg, mp3, ...) or folders of them with a Myna model: into one "
        ".npz or .parquet file, or (--output FOLDER) into a resumable store that a re-run continues. Long "
        "recordings are streamed; unreadable files and files shorter than one chunk are skipped and listed; a "
        "file named twice is embedded once.",
    )
    parser.add_argument("inputs", nargs="+", metavar="AUDIO", help="Audio files, or folders searched recursively.")
    return parser


def store_options_given(parser: CommandParser, argv: list[str]) -> list[str]:
    """The store-only options (`LibraryArguments`) that `argv` sets, as the parser names them."""
    store_only = set(LibraryArguments.__dataclass_fields__)
    return [action.option_strings[0] for action in options_given(parser, argv) if action.dest in store_only]


def check_output_outside_inputs(output: str, inputs: list[str], store: bool = False) -> None:
    """Raises a one-line `UsageError` when `output` (a file, or a store folder with `store`) is, or is inside, one
    of the folders in `inputs`: `myna embed` never writes into the music it reads."""
    target = os.path.realpath(output)
    for given in inputs:
        folder = os.path.realpath(given)
        if not os.path.isdir(folder) or not (target == folder or target.startswith(folder.rstrip(os.sep) + os.sep)):
            continue
        where = "is" if target == folder else "is inside"
        what, name = ("folder", "myna-store") if store else ("file", os.path.basename(output.rstrip(os.sep)))
        beside = os.path.join(os.path.relpath(os.path.dirname(folder)), name)
        raise UsageError(
            f"--output {output} {where} {given}, a folder being embedded: myna embed never writes into the music it "
            f"reads. Name a {what} beside it, e.g. --output {beside}"
        )


def find_audio_files(inputs: list[str]) -> list[str]:
    """Files named in `inputs`, with every folder replaced by the audio files under it (recursively, sorted).

    A file named explicitly is kept whatever its extension (decoding decides); in folders, only files with an
    audio extension (`AUDIO_EXTENSIONS`) are taken.
    """
    files = []
    for path in inputs:
        if os.path.isdir(path):
            found = []
            for root, dirs, names in os.walk(path):
                dirs.sort()
                found += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(AUDIO_EXTENSIONS)]
            files += found
        else:
            files.append(path)
    return files


__all__ = [
    "AUDIO_EXTENSIONS",
    "DEFAULT_BATCH_SIZE",
    "EmbedArguments",
    "LibraryArguments",
    "check_output_outside_inputs",
    "embed_parser",
    "find_audio_files",
    "store_options_given",
]
