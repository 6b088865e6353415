"""The `myna` command: embed audio files, convert released checkpoints, describe a model folder.

    myna embed music/ live.mp3 --model myna-hybrid --output embeddings.npz
    myna embed set.flac --model myna-hybrid --pooling none --output timeline.parquet
    myna embed music/ --model myna-hybrid --output store/     # a resumable store (see library.py)
    myna index store/ --output index/ && myna search index/ query.mp3 -k 10
    myna app --index index/                                   # a web page: search by example, the map (app.py)
    myna convert --checkpoint myna-hybrid.pth --variant hybrid --output myna-hybrid
    myna info myna-hybrid
    myna export myna-hybrid --format onnx --output myna-hybrid --quantize int8  # ONNX graphs (onnx_command.py)

Each command parses its options from a dataclass with the standard library's argparse (`dataclass_parser` of
`myna_common.cli_support`), before importing numpy, torch or transformers, so that `--help` and mistakes answer at
once; `myna COMMAND --help` lists them. `myna embed` skips files it cannot decode and files shorter than one chunk
(`query_rules.py`), reports them, and carries on; it never writes inside a folder it embeds.
Errors are one line; `--debug` (or `MYNA_DEBUG=1`) shows the traceback.
"""

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from myna_common.atomic import atomic_path
from myna_common.cli_support import (
    CommandParser,
    UsageError,
    check_model_name,
    check_unknown_options,
    dataclass_parser,
    did_you_mean,
    parse_into,
    plural,
    run_cli,
)
from myna_common.progress import progress_bar, quiet_library_bars

from .arguments import (  # noqa: F401  (AUDIO_EXTENSIONS, DEFAULT_BATCH_SIZE: checked against their sources)
    AUDIO_EXTENSIONS,
    DEFAULT_BATCH_SIZE,
    EmbedArguments,
    LibraryArguments,
    check_output_outside_inputs,
    embed_parser,
    find_audio_files,
    store_options_given,
)


OUTPUT_FORMATS = (".npz", ".parquet")


# ----------------------------------------------------------------------------------------------------------- embed


def unique_files(files: list[str]) -> tuple[list[str], list[str]]:
    """`(files, duplicates)`: each file once (the same file under two names counts once), in first-seen order."""
    seen, kept, duplicates = set(), [], []
    for path in files:
        key = os.path.realpath(path)
        (duplicates if key in seen else kept).append(path)
        seen.add(key)
    return kept, duplicates


def audio_seconds(path: str) -> float:
    """A file's duration from its header (0 when unreadable: decoding will say why). Opened as decoding opens it,
    so that a text file named .mp3 is recognised before libsndfile's decoders print their resync notes."""
    from modeling_myna.audio_utils import open_audio

    try:
        with open_audio(path) as audio:
            return audio.duration
    except Exception:  # noqa: BLE001  (unreadable: decoding says why)
        return 0.0


class AudioProgress:
    """A progress bar in seconds of audio, advanced segment by segment inside long files (a 60-minute recording
    moves the bar as it is embedded) by wrapping the pipeline's `preprocess`."""

    def __init__(self, embedder, files: list[str], min_seconds: float = 3.0):
        self.durations = {path: audio_seconds(path) for path in files}
        total = round(sum(self.durations.values()), 1)
        self.bar = progress_bar(
            total=total, desc="myna embed", unit="audio s", dynamic_ncols=True,
            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} audio s [{elapsed}<{remaining}, {rate_fmt}] {postfix}",
            disable=total < min_seconds,  # less than one 3 s chunk: done before a bar could say anything
        )
        self.done, self.files_done, self.num_files = 0.0, 0, len(files)
        extractor = embedder.feature_extractor
        self.seconds_per_frame = extractor.hop_length / extractor.sampling_rate
        original = embedder.preprocess

        def preprocess(inputs, **kwargs):
            for item in original(inputs, **kwargs):
                yield item
                covered = item["num_chunks"] * item["hop_frames"] * self.seconds_per_frame
                self.bar.update(min(covered, max(self.done + self.durations.get(inputs, 0) - self.bar.n, 0)))

        embedder.preprocess = preprocess
        self.bar.set_postfix_str(f"0/{plural(self.num_files, 'file')}")

    def file_done(self, path: str) -> None:
        self.done += self.durations.get(path, 0.0)
        self.files_done += 1
        self.bar.n = min(round(self.done, 1), self.bar.total)  # the dropped tail and skipped files too
        self.bar.set_postfix_str(f"{self.files_done}/{plural(self.num_files, 'file')}")

    def write(self, message: str) -> None:
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _write_npz(path: str, results: list[tuple[str, Any]], skipped: list[str], pooling: str) -> None:
    import numpy as np

    paths = np.array([p for p, _ in results], dtype=str)
    arrays = {"paths": paths, "skipped": np.array(skipped, dtype=str)}
    if pooling == "mean":
        arrays["embeddings"] = np.stack([e for _, e in results]).astype(np.float32)
    else:
        arrays["embeddings"] = np.concatenate([r["embeddings"] for _, r in results]).astype(np.float32)
        arrays["start_times"] = np.concatenate([r["start_times"] for _, r in results])
        arrays["file_index"] = np.concatenate(
            [np.full(len(r["start_times"]), i, dtype=np.int64) for i, (_, r) in enumerate(results)]
        )
    with atomic_path(path, suffix=".npz") as partial:  # np.savez appends .npz to a name without it
        np.savez(partial, **arrays)


def _write_parquet(path: str, results: list[tuple[str, Any]], pooling: str) -> None:
    import numpy as np

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise SystemExit("myna embed: writing .parquet needs pyarrow (pip install pyarrow); or write .npz.") from None
    if pooling == "mean":
        embeddings = np.stack([e for _, e in results]).astype(np.float32)
        columns = {"path": pa.array([p for p, _ in results])}
    else:
        embeddings = np.concatenate([r["embeddings"] for _, r in results]).astype(np.float32)
        columns = {
            "path": pa.array([p for p, r in results for _ in range(len(r["start_times"]))]),
            "start_time": pa.array(np.concatenate([r["start_times"] for _, r in results])),
        }
    # Fixed-size lists keep the (rows, width) shape: `np.stack(table["embedding"].to_numpy(zero_copy_only=False))`.
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.reshape(-1)), embeddings.shape[1])
    with atomic_path(path) as partial:
        pq.write_table(pa.table(columns), partial)


def check_patch_mode(embedder, patch_mode: str | None) -> None:
    """Stops before any work when the model has no `patch_mode` (e.g. `vertical` on a square-patch model)."""
    available = embedder.model.config.available_patch_modes
    if patch_mode is not None and patch_mode not in available:
        raise UsageError(
            f"--patch_mode {patch_mode}: this model offers {', '.join(available)} (a hybrid model offers square, "
            "vertical and both)."
        )


def is_store_output(argv: list[str]) -> bool:
    """Whether `myna embed` was asked to write a store: an --output folder (an existing one, a name ending in `/`,
    or a name without an extension); `x.npz`, `x.parquet` and other file names keep their meaning."""
    for i, arg in enumerate(argv):
        value = None
        if arg.startswith("--output="):
            value = arg.split("=", 1)[1]
        elif arg == "--output" and i + 1 < len(argv):
            value = argv[i + 1]
        if value is not None:
            return os.path.isdir(value) or value.endswith(os.sep) or not os.path.splitext(value.rstrip(os.sep))[1]
    return False


def embed_command(argv: list[str]) -> int:
    parser = embed_parser()  # one parser for both outputs: --help lists every option, before torch is imported
    args, _, positional = parse_into(parser, (EmbedArguments, LibraryArguments), argv)
    if is_store_output(argv):  # --output FOLDER: the resumable store (pipelines/library.py)
        from .library import embed_library_command

        return embed_library_command(argv)
    store_only = store_options_given(parser, argv)
    if store_only:
        chunks = " (one file of chunk embeddings: --pooling none)" if "--timeline" in store_only else ""
        parser.error(
            f"{', '.join(store_only)} {'applies' if len(store_only) == 1 else 'apply'} only to a store folder output "
            f"(--output FOLDER, a name without .npz or .parquet), not to the file {args.output}: drop "
            f"{'it' if len(store_only) == 1 else 'them'}, or write a store{chunks}."
        )
    check_output_outside_inputs(args.output, positional.inputs)

    extension = os.path.splitext(args.output)[1].lower()
    if extension not in OUTPUT_FORMATS:
        parser.error(f"--output {args.output}: unknown format {extension!r}; use a .npz or .parquet file name.")
    if os.path.exists(args.output) and not args.overwrite:
        parser.error(f"--output {args.output} exists; pass --overwrite to replace it.")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}.")
    files, duplicates = unique_files(find_audio_files(positional.inputs))
    if not files:
        parser.error(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in {' '.join(positional.inputs)}.")
    check_model_name(args.model)  # at once, not after the Hub client's retries
    if duplicates:
        print(f"myna embed: {plural(len(duplicates), 'file')} named twice, embedded once: {', '.join(duplicates)}",
              file=sys.stderr)

    import torch
    from transformers import pipeline

    import modeling_myna  # noqa: F401  (registers Myna and the "music-embedding" task)
    from modeling_myna.audio_utils import AudioDecodeError
    from myna_common.cli_support import check_device

    from .precision import keep_freed_memory
    from .query_rules import QueryTooShortError, check_query_length, shortest_query_seconds

    cuda = torch.cuda.is_available() and args.backend == "pytorch"  # onnxruntime runs on the CPU
    device = check_device(args.device) if args.device else ("cuda" if cuda else "cpu")
    try:
        embedder = pipeline(
            "music-embedding", model=args.model, device=device, dtype=getattr(torch, args.dtype), backend=args.backend
        )
    except OSError as error:
        # transformers' message says whether the folder lacks files or the Hub could not be reached.
        print(f"myna embed: cannot load the model {args.model!r}: {error}", file=sys.stderr)
        return 1
    check_patch_mode(embedder, args.patch_mode)
    call_options = {"pooling": args.pooling, "batch_size": args.batch_size}
    if args.patch_mode is not None:
        call_options["patch_mode"] = args.patch_mode
    shortest = shortest_query_seconds(embedder.feature_extractor)

    def check_length(path: str, seconds: float) -> None:
        if seconds > 0:  # 0: an empty or unreadable header, which decoding words
            check_query_length(seconds, path, shortest, use="an embedding")

    if len(files) == 1:  # one file: its length is the answer, in one line
        try:
            check_length(files[0], audio_seconds(files[0]))
        except QueryTooShortError as error:
            print(f"myna embed: {error}", file=sys.stderr)
            return 1

    if embedder.device.type == "cpu":
        keep_freed_memory()  # a command that exits when done, not a server: its forwards reuse their pages
    results, skipped, too_short, seconds = [], [], [], 0.0
    started = time.perf_counter()
    progress = AudioProgress(embedder, files)
    for path in files:
        try:
            check_length(path, progress.durations[path])
            results.append((path, embedder(path, **call_options)))
            seconds += progress.durations[path]
        except QueryTooShortError as error:
            too_short.append(path)
            progress.write(f"skipped: {error}")
        except AudioDecodeError as error:
            skipped.append(path)
            progress.write(f"skipped: {error}")
        progress.file_done(path)
    progress.close()
    elapsed = time.perf_counter() - started

    if not results:
        done = "embedded" if too_short else "read"
        what = "the file could not be read" if len(files) == 1 else f"none of the {len(files)} files could be {done}"
        print(f"myna embed: {what}; nothing written.", file=sys.stderr)
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    if extension == ".npz":
        _write_npz(args.output, results, skipped + too_short, args.pooling)
    else:
        _write_parquet(args.output, results, args.pooling)
    print(
        f"embedded {plural(len(results), 'file')} ({seconds:.1f} s of audio) in {elapsed:.1f} s "
        f"({len(results) / elapsed:.2f} files/s, {seconds / elapsed:.1f} audio s/s) -> {args.output}"
    )
    if skipped:
        print(f"skipped {plural(len(skipped), 'unreadable file')}: {', '.join(skipped)}", file=sys.stderr)
    if too_short:
        print(
            f"skipped {plural(len(too_short), 'file')} shorter than one chunk ({shortest:.2f} s): "
            f"{', '.join(too_short)}",
            file=sys.stderr,
        )
    return 0


# --------------------------------------------------------------------------------------------------------- convert


@contextlib.contextmanager
def _program_name(name: str):
    """argparse names the program after `sys.argv[0]`; the converter's parser should say `myna convert`."""
    saved = sys.argv[0]
    sys.argv[0] = name
    try:
        yield
    finally:
        sys.argv[0] = saved


def convert_command(argv: list[str]) -> int:
    from transformers import HfArgumentParser

    from modeling_myna.convert_original_checkpoint import ConvertArguments
    from modeling_myna.convert_original_checkpoint import main as convert_main

    with _program_name("myna convert"):
        check_unknown_options(HfArgumentParser(ConvertArguments), argv)  # before parsing, as every command
        convert_main(argv)
    return 0


# ------------------------------------------------------------------------------------------------------------ info


@dataclass
class InfoArguments:
    json: bool = field(default=False, metadata={"help": "Print a JSON object instead of text."})


def _stored_parameters(folder: str) -> int | None:
    """Values stored in a folder's safetensors files (encoder and head), without loading them."""
    import numpy as np

    if not os.path.isdir(folder):
        return None
    from safetensors import safe_open

    total, found = 0, False
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            found = True
            with safe_open(os.path.join(folder, name), framework="pt") as f:
                total += sum(int(np.prod(f.get_slice(key).get_shape())) for key in f.keys())
    return total if found else None


def describe_model(model: str) -> dict[str, Any]:
    """What `myna info` prints: variant, parameters, patch modes, chunk geometry, embedding widths, head."""
    import torch

    import modeling_myna
    from modeling_myna.configuration_myna import HOP_LENGTH
    from modeling_myna.model_card import variant_name
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    if config.model_type != modeling_myna.MynaConfig.model_type:
        raise ValueError(f"{model} holds a {config.model_type!r} model, not a Myna one.")
    with torch.device("meta"):  # shapes only: counts parameters without allocating them
        encoder_parameters = modeling_myna.MynaModel(config).num_parameters()
    seconds = config.chunk_frames * HOP_LENGTH / config.sampling_rate
    description = {
        "model": model,
        "architecture": (config.architectures or ["MynaModel"])[0],
        "variant": variant_name(config),
        "patch_sizes": {mode: size for mode, size in zip(config.patch_modes, config.patch_sizes)},
        "patch_modes": config.available_patch_modes,
        "default_patch_mode": config.default_patch_mode,
        "embedding_size": {mode: config.embedding_size(mode) for mode in config.available_patch_modes},
        "chunk_frames": config.chunk_frames,
        "chunk_seconds": seconds,
        "sampling_rate": config.sampling_rate,
        "num_mel_bins": config.num_mel_bins,
        "encoder": {
            "layers": config.num_hidden_layers,
            "hidden_size": config.hidden_size,
            "heads": config.num_attention_heads,
            "intermediate_size": config.intermediate_size,
        },
        "encoder_parameters": encoder_parameters,
        "stored_parameters": _stored_parameters(model),
    }
    if description["architecture"] == "MynaForAudioClassification":
        description["problem_type"] = config.problem_type or "single_label_classification"
        description["labels"] = [config.id2label[i] for i in range(config.num_labels)]
    if os.path.isdir(model):
        description["files"] = sorted(os.listdir(model))
    return description


def _format_info(info: dict[str, Any]) -> str:
    sizes = ", ".join(f"{mode} {h}x{w}" for mode, (h, w) in info["patch_sizes"].items())
    widths = ", ".join(f"{mode} {width}" for mode, width in info["embedding_size"].items())
    encoder = info["encoder"]
    rows = [
        ("architecture", info["architecture"]),
        ("variant", f"{info['variant']} ({sizes})"),
        ("patch modes", f"{', '.join(info['patch_modes'])} (default {info['default_patch_mode']})"),
        ("embedding size", widths),
        (
            "chunk",
            f"{info['chunk_frames']} frames = {info['chunk_seconds']:.3f} s at {info['sampling_rate']} Hz, "
            f"{info['num_mel_bins']} mel bins",
        ),
        (
            "encoder",
            f"{encoder['layers']} layers, width {encoder['hidden_size']}, {encoder['heads']} heads, "
            f"MLP {encoder['intermediate_size']}",
        ),
        ("parameters", f"{info['encoder_parameters'] / 1e6:.2f}M in the encoder"),
    ]
    if info["stored_parameters"] is not None:
        rows[-1] = ("parameters", rows[-1][1] + f", {info['stored_parameters'] / 1e6:.2f}M stored with the head")
    if "labels" in info:
        rows.append(("labels", f"{len(info['labels'])} ({info['problem_type']}): {', '.join(info['labels'])}"))
    if "files" in info:
        rows.append(("files", ", ".join(info["files"])))
    width = max(len(key) for key, _ in rows)
    return "\n".join([info["model"]] + [f"  {key:<{width}}  {value}" for key, value in rows])


def info_command(argv: list[str]) -> int:
    parser = dataclass_parser(
        InfoArguments,
        prog="myna info",
        description="Describe a Myna model folder: variant, parameters, patch modes, chunk size, embedding width.",
    )
    parser.add_argument("model", metavar="MODEL", help="Model folder (or a cached Hub id).")
    args, positional = parse_into(parser, InfoArguments, argv)
    check_model_name(positional.model, option="")
    try:
        description = describe_model(positional.model)
    except (OSError, ValueError) as error:
        print(f"myna info: {error}", file=sys.stderr)
        return 1
    print(json.dumps(description, indent=2) if args.json else _format_info(description))
    return 0


# ------------------------------------------------------------------------------------------------------------ main


COMMANDS = {
    "embed": (embed_command, "embed audio files or folders into one .npz or .parquet file"),
    "convert": (convert_command, "convert a released Myna checkpoint (.pth) into a transformers folder"),
    "info": (info_command, "describe a Myna model folder: variant, parameters, patch modes"),
    "index": (lambda argv: _search().index_command(argv), "build a similarity index over a store from `myna embed`"),
    "search": (lambda argv: _search().search_command(argv), "find the tracks of an index nearest to audio files"),
    "app": (lambda argv: _app().app_command(argv), "a web page on a library: search by example, the map, timelines"),
    "export": (lambda argv: _onnx().export_command(argv), "export a model to ONNX (float32, int8), checked"),
}


def _onnx():
    from . import onnx_command

    return onnx_command


def _search():
    from . import search

    return search


def _app():
    from . import app

    return app


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `myna` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = CommandParser(
        prog="myna",
        description="Myna music embeddings (arXiv 2502.12511) from the command line.",
        epilog="commands:\n"
        + "\n".join(f"  {name:<9}{help_text}" for name, (_, help_text) in COMMANDS.items())
        + "\n\nRun `myna COMMAND --help` for the options of a command. Errors are one line; --debug (or "
        "MYNA_DEBUG=1) shows the traceback.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(COMMANDS), help="what to do (see below)")
    # Only the command name is parsed here; the command's own parser reads the rest (and its --help).
    if not argv:  # `myna` alone: what it can do
        parser.print_help(sys.stderr)
        return 2
    if not argv[0].startswith("-") and argv[0] not in COMMANDS:
        parser.error(f"unknown command {argv[0]!r}.{did_you_mean(argv[0], COMMANDS)} Commands: {', '.join(COMMANDS)}.")
    command = parser.parse_args(argv[:1]).command
    quiet_library_bars()  # in a log, the libraries' own bars (loading weights, ...) are debris
    return run_cli(COMMANDS[command][0], f"myna {command}", argv[1:])


if __name__ == "__main__":
    sys.exit(main())
