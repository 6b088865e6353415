"""What `myna embed` is given, shared by its two writers (`cli.py`: one file; `library.py`: a resumable store): the
options (`EmbedArguments`) and the audio files its arguments name (`find_audio_files`).

Standard library only, so that the command parses its arguments and answers `--help` before importing torch.
"""

import os
from dataclasses import dataclass, field
from typing import Literal


# Written out, not imported, because their modules import torch: base.DEFAULT_BATCH_SIZE, audio_utils.AUDIO_EXTENSIONS
# (tests check that they agree).
DEFAULT_BATCH_SIZE = 32
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".au", ".opus")


@dataclass
class EmbedArguments:
    model: str = field(metadata={"help": "Myna model folder (from `myna convert` or save_pretrained), or a Hub id."})
    output: str = field(
        metadata={
            "help": "File to write: .npz (arrays `embeddings`, `paths`, and for --pooling none `start_times`, "
            "`file_index`) or .parquet (one row per track, or per chunk for --pooling none)."
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


__all__ = ["AUDIO_EXTENSIONS", "DEFAULT_BATCH_SIZE", "EmbedArguments", "find_audio_files"]
