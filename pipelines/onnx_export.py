"""ONNX export of the Myna encoder: one graph per patch mode, float32 or dynamically quantized to int8.

The graph is `MynaModel` from `input_values` to its outputs, as optimum exports transformers' audio encoders (AST,
wav2vec2): input `input_values` `(batch, num_mel_bins, chunk_frames)` float32 with a dynamic batch axis, the raw power
mel spectrogram the feature extractor returns; outputs `last_hidden_state` `(batch, num_tokens, hidden_size)` and
`pooler_output` `(batch, embedding_size)`, named and computed as `MynaModel`'s. The frame axis is fixed at the chunk
width: the sin-cos positions of that patch grid are constants of the graph.

The mel front end stays outside the graph. A track's chunks are windows of the spectrogram of the whole track (the
reflect padding of the centred STFT happens at the track's ends only, and each chunk's edge frames see the samples
of its neighbours), so a graph from 50,000 samples of audio to one chunk's embedding would not reproduce the
embeddings of `myna embed`. The front end is fully described instead, in `preprocessor_config.json` (sampling rate,
`n_fft`, `hop_length`, mel bins, chunk width) and in the graph's metadata (`myna.front_end`: the window, padding,
mel scale and norm that the JSON leaves at nnAudio's defaults); `front_end_description` writes both.

Layout, as optimum and transformers.js read it: exported into a model folder (one with weights), the graphs go into
its `onnx/` subfolder beside the weights and `preprocessor_config.json` is added if missing; into any other folder,
the graphs go at its top with `config.json` and `preprocessor_config.json`. The graph of the model's default patch
mode is `model.onnx` (`model_quantized.onnx` at int8); another mode's carries its name (`model_square.onnx`, ...).

int8 follows `precision.py`'s int8 path: `onnxruntime.quantization.quantize_dynamic` on the `nn.Linear` products of
the encoder blocks only (qkv, o_proj, fc1, fc2: int8 weights with one scale per tensor, uint8 activations quantized
per batch at run time); the tokenizers, attention products, LayerNorms and GELU stay float32. The weights use 7 bits
(`reduce_range`), as torch.ao's activations do, and for the same reason: on x86 CPUs without VNNI (AVX2 only) ONNX
Runtime multiplies uint8 activations by int8 weights with `vpmaddubsw`, which adds pairs of products in 16 bits and
saturates with full-range weights. Measured on this project's AVX2 machine (AMD EPYC, no AVX512), full-size
Myna-Hybrid "both" with the benchmark's weights, 19 chunks of a real track: mean chunk cosine to float32 0.9818 with
8-bit weights, 0.99994 with 7-bit ones (uint8 weights, which use other kernels, 0.99998 but slower).
"""

import contextlib
import copy
import importlib.util
import json
import logging
import os
import warnings
from typing import Any

import torch

from modeling_myna.configuration_myna import BOTH_PATCH_MODES
from myna_common.atomic import atomic_path


OPSET = 18  # LayerNormalization needs 17; 18 is what current ONNX Runtime, transformers.js and optimum all run
ONNX_SUBFOLDER = "onnx"
INPUT_NAME = "input_values"
OUTPUT_NAMES = ("last_hidden_state", "pooler_output")
QUANTIZATIONS = ("int8",)
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
EXTRA_HINT = 'pip install "myna-hf[onnx]"'
# Metadata keys of an exported graph (`onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map`).
META_PREFIX = "myna."


def require(*modules: str, purpose: str = "ONNX export") -> None:
    """Raises a one-line `ImportError` naming the extra when any of `modules` is not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{purpose} needs {', '.join(modules)} (missing: {', '.join(missing)}): {EXTRA_HINT}")


def onnx_file_name(config, patch_mode: str | None = None, quantize: str | None = None) -> str:
    """`model.onnx` for the default patch mode, `model_<mode>.onnx` for another; `_quantized` before the extension
    at int8 (transformers.js's name for a dynamically quantized graph)."""
    patch_mode = patch_mode or config.default_patch_mode
    stem = "model" if patch_mode == config.default_patch_mode else f"model_{patch_mode}"
    return f"{stem}{'_quantized' if quantize else ''}.onnx"


def is_model_folder(folder: str) -> bool:
    """Whether `folder` holds a model's weights (`save_pretrained`'s output): its graphs go into `onnx/`."""
    return any(os.path.exists(os.path.join(folder, name)) for name in WEIGHT_FILES)


def graph_folder(output: str) -> str:
    """Where the graphs exported to `output` go: `output/onnx/` in a model folder, else `output` itself."""
    return os.path.join(output, ONNX_SUBFOLDER) if is_model_folder(output) else output


def front_end_description(feature_extractor) -> dict[str, Any]:
    """What turns audio into this graph's `input_values`, for users outside Python. The JSON of the feature
    extractor gives the numbers it stores; the rest are nnAudio's `MelSpectrogram` defaults, which
    `modeling_myna.mel.MynaMelSpectrogram` reproduces (SPEC §1). librosa computes the same spectrogram
    (`librosa.feature.melspectrogram(y=audio, sr=16000, n_fft=2048, hop_length=512, n_mels=128, power=2.0,
    center=True, pad_mode="reflect", htk=False, norm="slaney")`, to ~1e-6 of the maximum; tests/test_onnx.py)."""
    sampling_rate = int(feature_extractor.sampling_rate)
    return {
        "audio": "mono (mean over channels), float in [-1, 1], resampled to sampling_rate",
        "sampling_rate": sampling_rate,
        "n_fft": int(feature_extractor.n_fft),
        "hop_length": int(feature_extractor.hop_length),
        "win_length": int(feature_extractor.n_fft),
        "window": "hann (periodic)",
        "center": True,
        "pad_mode": "reflect",
        "power": 2.0,
        "mel_scale": "slaney",
        "mel_norm": "slaney",
        "fmin": 0.0,
        "fmax": sampling_rate / 2,
        "num_mel_bins": int(feature_extractor.feature_size),
        "log": False,
        "chunk_frames": int(feature_extractor.chunk_frames),
        "chunking": "the whole track's spectrogram cut into non-overlapping chunk_frames windows, the tail dropped; "
        "audio shorter than one chunk zero-padded to (chunk_frames - 1) * hop_length samples first",
    }


class MynaExportedEncoder(torch.nn.Module):
    """`MynaModel` for one patch mode as a function of `input_values` alone: what the exporter traces."""

    def __init__(self, encoder, patch_mode: str):
        super().__init__()
        self.myna = encoder
        self.patch_mode = patch_mode

    def forward(self, input_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        outputs = self.myna(input_values=input_values, patch_mode=self.patch_mode, return_dict=True)
        return outputs.last_hidden_state, outputs.pooler_output


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter's progress lines and its notes about torchvision's operators (not used here) off."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "root")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(open(os.devnull, "w")) as devnull:
            warnings.simplefilter("ignore")
            try:
                yield
            finally:
                devnull.close()
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _float32_encoder(model):
    encoder = model.base_model
    if next(encoder.parameters()).dtype != torch.float32 or encoder.device.type != "cpu":
        encoder = copy.deepcopy(encoder).to("cpu", torch.float32)
    return encoder.eval()


def set_metadata(model_proto, metadata: dict[str, Any]) -> None:
    """Writes `metadata` into the graph's `metadata_props` as `myna.<key>`: strings as they are, the rest as JSON."""
    existing = {prop.key: prop for prop in model_proto.metadata_props}
    for key, value in metadata.items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        prop = existing.get(META_PREFIX + key) or model_proto.metadata_props.add()
        prop.key, prop.value = META_PREFIX + key, text


def graph_metadata(model_proto) -> dict[str, str]:
    """The `myna.` metadata of a graph, without the prefix."""
    return {p.key[len(META_PREFIX) :]: p.value for p in model_proto.metadata_props if p.key.startswith(META_PREFIX)}


def export_graph(
    model, path: str, feature_extractor, patch_mode: str | None = None, opset: int = OPSET, source: str | None = None
) -> str:
    """Exports `model`'s encoder for `patch_mode` (default: the model's) to the ONNX file `path`; returns `path`.

    torch.onnx's dynamo exporter traces `MynaExportedEncoder` on a `(2, num_mel_bins, chunk_frames)` example with a
    dynamic batch axis; float32 on the CPU whatever the model's dtype and device.
    """
    require("onnx", "onnxscript")
    import onnx

    config = model.config
    patch_mode = patch_mode or config.default_patch_mode
    if patch_mode not in config.available_patch_modes:
        raise ValueError(f"patch_mode={patch_mode!r}: this model offers {config.available_patch_modes}.")
    chunk_frames = int(feature_extractor.chunk_frames)
    wrapper = MynaExportedEncoder(_float32_encoder(model), patch_mode).eval()
    example = torch.rand(2, config.num_mel_bins, chunk_frames, generator=torch.Generator().manual_seed(0)) * 1e3
    batch = torch.export.Dim("batch", min=1)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            wrapper,
            (example,),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={INPUT_NAME: {0: batch}},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    proto = program.model_proto
    set_metadata(
        proto,
        {
            "patch_mode": patch_mode,
            "patch_modes": [patch_mode] if patch_mode != BOTH_PATCH_MODES else config.patch_modes,
            "embedding_size": config.embedding_size(patch_mode),
            "chunk_frames": chunk_frames,
            "num_mel_bins": config.num_mel_bins,
            "quantization": "none",
            "front_end": front_end_description(feature_extractor),
            "source": source or getattr(model, "name_or_path", "") or "",
        },
    )
    with atomic_path(path, suffix=".onnx") as partial:
        onnx.save(proto, partial)
    return path


def encoder_linear_nodes(model_proto) -> list[str]:
    """Names of the MatMul nodes of the encoder blocks' `nn.Linear` layers (weights as initializers), found from the
    module path the exporter records on every node; empty when the graph carries no such record."""
    weights = {initializer.name for initializer in model_proto.graph.initializer}
    found = []
    for node in model_proto.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        hierarchy = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.class_hierarchy"), "")
        if ".MynaLayer'" in hierarchy and ".Linear'" in hierarchy:
            found.append(node.name)
    return found


def quantize_graph(path: str, output: str) -> str:
    """`output`: the float32 graph at `path` with the encoder blocks' linear layers dynamically quantized to int8
    (`onnxruntime.quantization.quantize_dynamic`, per-tensor int8 weights in 7 bits); returns `output`."""
    require("onnx", "onnxruntime", purpose="int8 quantization of an ONNX graph")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load(path)
    nodes = encoder_linear_nodes(proto)
    # Without the exporter's module records (another exporter), every MatMul with constant weights is quantized.
    scope = "the encoder blocks' linear layers" if nodes else "every MatMul with constant weights"
    with _quiet_exporter(), atomic_path(output, suffix=".onnx") as partial:
        # 7-bit weights: no 16-bit saturation on CPUs without VNNI (module docstring).
        quantize_dynamic(
            proto, partial, nodes_to_quantize=nodes or None, weight_type=QuantType.QInt8, reduce_range=True
        )
        quantized = onnx.load(partial)
        count = len(nodes) or "all"
        set_metadata(quantized, {**graph_metadata(proto), "quantization": f"int8 dynamic ({scope}, {count} MatMul)"})
        onnx.save(quantized, partial)
    return output


def write_configs(output: str, model, feature_extractor) -> list[str]:
    """The JSON files beside the graphs: in a model folder, `preprocessor_config.json` if it lacks one (its
    `config.json` is the model's own); elsewhere, `config.json` and `preprocessor_config.json`."""
    written = []
    if not is_model_folder(output):
        model.config.save_pretrained(output)
        written.append(os.path.join(output, "config.json"))
    if not os.path.exists(os.path.join(output, "preprocessor_config.json")):
        feature_extractor.save_pretrained(output)
        written.append(os.path.join(output, "preprocessor_config.json"))
    return written


def export_onnx(
    model,
    output: str,
    feature_extractor,
    patch_modes: list[str] | None = None,
    quantize: str | None = None,
    overwrite: bool = False,
    opset: int = OPSET,
    source: str | None = None,
) -> dict[str, Any]:
    """Exports `model` into the folder `output` (the layout of the module docstring): one graph per patch mode of
    `patch_modes` (default: the model's default mode), and with `quantize="int8"` its quantized copy too.

    Returns `{"folder", "graphs": {patch_mode: {"float32": path, "int8": path}}, "configs": [paths]}`. Refuses to
    replace an existing graph without `overwrite`.
    """
    if quantize not in (None, *QUANTIZATIONS):
        raise ValueError(f"quantize={quantize!r}: choose one of {QUANTIZATIONS}, or none for float32 only.")
    require("onnx", "onnxscript", *(("onnxruntime",) if quantize else ()))
    config = model.config
    patch_modes = patch_modes or [config.default_patch_mode]
    for patch_mode in patch_modes:
        if patch_mode not in config.available_patch_modes:
            raise ValueError(f"patch_mode={patch_mode!r}: this model offers {config.available_patch_modes}.")
    folder = graph_folder(output)
    planned = {
        mode: {"float32": os.path.join(folder, onnx_file_name(config, mode))}
        | ({quantize: os.path.join(folder, onnx_file_name(config, mode, quantize))} if quantize else {})
        for mode in patch_modes
    }
    existing = [path for paths in planned.values() for path in paths.values() if os.path.exists(path)]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists: pass --overwrite to replace it (or export into another folder).")
    os.makedirs(folder, exist_ok=True)
    for mode, paths in planned.items():
        export_graph(model, paths["float32"], feature_extractor, mode, opset=opset, source=source)
        if quantize:
            quantize_graph(paths["float32"], paths[quantize])
    return {"folder": folder, "graphs": planned, "configs": write_configs(output, model, feature_extractor)}


__all__ = [
    "EXTRA_HINT",
    "INPUT_NAME",
    "ONNX_SUBFOLDER",
    "OPSET",
    "OUTPUT_NAMES",
    "QUANTIZATIONS",
    "MynaExportedEncoder",
    "encoder_linear_nodes",
    "export_graph",
    "export_onnx",
    "front_end_description",
    "graph_folder",
    "graph_metadata",
    "is_model_folder",
    "onnx_file_name",
    "quantize_graph",
    "require",
    "write_configs",
]
