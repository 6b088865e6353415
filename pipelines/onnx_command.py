"""`myna export MODEL --format onnx --output OUT/`: a Myna model as ONNX graphs, checked against PyTorch.

    myna export myna-hybrid --format onnx --output myna-hybrid                  # myna-hybrid/onnx/model.onnx
    myna export myna-hybrid --format onnx --output myna-hybrid-onnx --quantize int8 --patch_mode all

What is written where, and what the graph takes and returns: `onnx_export.py`. Each graph is then run by ONNX Runtime
on generated music (batches of 1 and of 7) and compared with the PyTorch model in float32; a graph below the
backend's bound (`onnx_backend.FLOAT32_BOUND`, `precision.COSINE_BOUND` at int8) is removed and the command fails.
Arguments are parsed before torch is imported, as every `myna` command's.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Literal

from myna_common.cli_support import check_model_name, check_output_folder, dataclass_parser, parse_into


@dataclass
class ExportArguments:
    output: str = field(
        metadata={
            "help": "Folder to write: into a model folder (one with weights, e.g. the MODEL folder itself) the graphs "
            "go in its onnx/ subfolder, beside the weights; into any other folder they go at its top with "
            "config.json and preprocessor_config.json (optimum's layout)."
        }
    )
    format: Literal["onnx"] = field(default="onnx", metadata={"help": "Export format."})
    patch_mode: Literal["square", "vertical", "both", "all"] | None = field(
        default=None,
        metadata={
            "help": "The tokenizer(s) of the graph: square, vertical or both (a hybrid's concatenated embedding); "
            "all: one graph per mode. Default: the model's default mode (model.onnx); another mode's graph is "
            "model_<mode>.onnx."
        },
    )
    quantize: Literal["int8"] | None = field(
        default=None,
        metadata={
            "help": "Also write the int8 graph (model_quantized.onnx): onnxruntime's dynamic quantization of the "
            "encoder blocks' linear layers."
        },
    )
    opset: int = field(default=18, metadata={"help": "ONNX opset of the graphs."})
    check: bool = field(
        default=True, metadata={"help": "Compare each graph with PyTorch on generated music (--no_check: skip it)."}
    )
    overwrite: bool = field(default=False, metadata={"help": "Replace graphs that exist."})


def _is_own_folder(folder: str) -> bool:
    """A model folder, or an earlier export (graphs and a config.json at its top)."""
    from .onnx_export import is_model_folder

    names = os.listdir(folder)
    return is_model_folder(folder) or ("config.json" in names and any(n.endswith(".onnx") for n in names))


def check_graphs(model, feature_extractor, graphs: dict[str, dict[str, str]]) -> list[str]:
    """One line per graph: its mean chunk cosine to PyTorch float32 on generated music. Raises `ValueError` (and
    removes the graph) for one below its bound."""
    from .onnx_backend import FLOAT32_BOUND, check_chunks, compare_to_pytorch
    from .precision import COSINE_BOUND

    chunks = check_chunks(feature_extractor)
    lines = []
    for patch_mode, paths in graphs.items():
        for precision, path in paths.items():
            cosine = compare_to_pytorch(model, path, chunks, patch_mode)
            bound = FLOAT32_BOUND if precision == "float32" else COSINE_BOUND
            if cosine < bound:
                os.remove(path)
                raise ValueError(
                    f"{path} ({patch_mode}, {precision}) gives embeddings with mean cosine {cosine:.6f} to PyTorch "
                    f"float32 on generated music, below {bound}: removed. Rerun with --debug and report it."
                )
            lines.append(
                f"  {os.path.basename(path)}: {patch_mode}, {precision}; mean chunk cosine {cosine:.6f} to PyTorch "
                f"float32 ({len(chunks)} generated chunks, batches of 1 and 7)"
            )
    return lines


def export_command(argv: list[str]) -> int:
    parser = dataclass_parser(
        ExportArguments,
        prog="myna export",
        description="Export a Myna model to ONNX (input_values -> last_hidden_state, pooler_output; a dynamic batch "
        "axis), optionally int8, in the layout optimum and transformers.js read; each graph is checked against "
        "the PyTorch model. The mel front end stays outside the graph (docs/onnx.md).",
    )
    parser.add_argument("model", metavar="MODEL", help="Myna model folder (or a Hub id).")
    args, positional = parse_into(parser, ExportArguments, argv)
    check_model_name(positional.model, option="")
    check_output_folder(args.output, overwrite=args.overwrite, own=_is_own_folder, what="ONNX export")

    from .library import load_model
    from .onnx_export import export_onnx, require

    require("onnx", "onnxscript", "onnxruntime")  # onnxruntime for the check and the int8 graph
    model, feature_extractor = load_model(positional.model, "cpu")
    if args.patch_mode == "all":
        modes = model.config.available_patch_modes
    else:
        modes = [args.patch_mode] if args.patch_mode else None
    started = time.perf_counter()
    result = export_onnx(
        model, args.output, feature_extractor, modes, args.quantize, overwrite=args.overwrite, opset=args.opset,
        source=positional.model,
    )  # fmt: skip
    if args.check:
        lines = check_graphs(model, feature_extractor, result["graphs"])
    else:
        graphs = result["graphs"].items()
        lines = [
            f"  {os.path.basename(p)}: {mode}, {kind} (not checked)" for mode, ps in graphs for kind, p in ps.items()
        ]
    count = sum(len(paths) for paths in result["graphs"].values())
    print(f"exported {count} ONNX graph{'s' if count > 1 else ''} in {time.perf_counter() - started:.0f} s -> "
          f"{result['folder']}")  # fmt: skip
    print("\n".join(lines))
    for path in result["configs"]:
        print(f"  {os.path.basename(path)}")
    return 0


__all__ = ["ExportArguments", "check_graphs", "export_command"]
