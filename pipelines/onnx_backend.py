"""The ONNX Runtime backend for CPU embedding: `MynaOnnxInferenceModel` runs an exported Myna graph (`onnx_export.py`)
where `MynaInferenceModel` (`precision.py`) runs PyTorch, behind the same `embed(chunks, patch_mode)`.

    inference, checks = inference_model(model, precision="int8", backend="onnxruntime")  # or backend="pytorch"
    inference.embed(chunks, "both")                                                      # (B, D) float32 tensor

The graph of each patch mode is looked up where `myna export` writes it, first in the model folder's `onnx/`, then at
its top (`model.onnx`, `model_quantized.onnx` at int8, `model_<mode>.onnx` for a mode other than the default; a Hub
id is looked up the same way in its repository). A missing graph is exported on the fly into a temporary folder (a
note says so, and how to keep it). Each session is checked against the PyTorch model on generated music before it
is used, as reduced precisions are: float32 must reach a mean chunk cosine of `FLOAT32_BOUND`, int8 `COSINE_BOUND`.
That also catches a graph exported from other weights than the model's.

ONNX Runtime runs on the CPU (`CPUExecutionProvider`), with as many intra-op threads as torch uses
(`torch.get_num_threads()`), so that the two backends compare like for like.
"""

import os
import shutil
import sys
import tempfile
from typing import Any

import numpy as np
import torch

from .onnx_export import INPUT_NAME, ONNX_SUBFOLDER, export_onnx, onnx_file_name, require
from .precision import COSINE_BOUND, MynaInferenceModel, check_precision, mean_cosine


BACKENDS = ("pytorch", "onnxruntime")
ONNX_PRECISIONS = ("float32", "int8")
FLOAT32_BOUND = 0.9999  # mean chunk cosine of the float32 graph to PyTorch float32 (measured: > 0.999999)
CHECK_CLIPS = 4  # generated 10 s clips (12 chunks) for the check before use


def find_graph(source: str | None, file_name: str) -> str | None:
    """The path of `file_name` for the model `source` (a folder or a Hub id): `onnx/` first, then the top; `None`
    when there is none (a Hub id is asked for both without raising)."""
    if not source:
        return None
    if os.path.isdir(source):
        for folder in (os.path.join(source, ONNX_SUBFOLDER), source):
            if os.path.isfile(os.path.join(folder, file_name)):
                return os.path.join(folder, file_name)
        return None
    from transformers.utils import cached_file

    for name in (f"{ONNX_SUBFOLDER}/{file_name}", file_name):
        try:
            path = cached_file(source, name, _raise_exceptions_for_missing_entries=False)
        except (OSError, ValueError):
            path = None
        if path:
            return path
    return None


class MynaOnnxInferenceModel:
    """A Myna encoder run by ONNX Runtime on the CPU; `embed(chunks, patch_mode)` returns float32 `(B, D)` embeddings,
    as `MynaInferenceModel.embed` does.

    Args:
        model: the Myna model the graphs were (or are to be) exported from: its config, and the reference they are
            checked against (its `base_model` in float32).
        precision: `"float32"` (`model.onnx`) or `"int8"` (`model_quantized.onnx`).
        source: the folder or Hub id to find exported graphs in; default `model.name_or_path`.
        feature_extractor: the extractor whose chunks the graphs take (its `chunk_frames`) and the check uses;
            default the one matching `model.config`.
        threads: ONNX Runtime's intra-op threads; default `torch.get_num_threads()`.
        check: check each session against PyTorch before its first use (see the module docstring).
    """

    backend = "onnxruntime"

    def __init__(
        self,
        model,
        precision: str = "float32",
        source: str | None = None,
        feature_extractor=None,
        threads: int | None = None,
        check: bool = True,
    ):
        if precision not in ONNX_PRECISIONS:
            raise ValueError(
                f"precision={precision!r} with the onnxruntime backend: choose {' or '.join(ONNX_PRECISIONS)} "
                "(bfloat16 is a PyTorch path: --backend pytorch)."
            )
        require("onnxruntime", purpose="the onnxruntime backend")
        if model.dtype != torch.float32:
            raise ValueError(
                f"the onnxruntime backend runs float32 graphs (or int8 with precision='int8'), and is checked against "
                f"the float32 model: load it in float32, not {str(model.dtype).removeprefix('torch.')}."
            )
        if model.device.type != "cpu":
            raise ValueError(
                f"the onnxruntime backend runs on the CPU, but the model is on {model.device}: load it on the CPU "
                "(--device cpu), or use --backend pytorch on the GPU."
            )
        from modeling_myna import MynaFeatureExtractor

        self.model = model
        self.precision = precision
        self.device = torch.device("cpu")
        self.source = source if source is not None else getattr(model, "name_or_path", None)
        self.feature_extractor = feature_extractor or MynaFeatureExtractor.from_config(model.config)
        self.threads = threads or torch.get_num_threads()
        self.check = check
        self.sessions: dict[str, Any] = {}
        self.checks: dict[str, dict[str, Any]] = {}
        self.paths: dict[str, str] = {}

    def graph_path(self, patch_mode: str) -> tuple[str, bool]:
        """`(path, exported now)`: the graph for `patch_mode` at this precision, the exported one or one exported now
        into a temporary folder (see the module docstring)."""
        quantize = "int8" if self.precision == "int8" else None
        file_name = onnx_file_name(self.model.config, patch_mode, quantize)
        found = find_graph(self.source, file_name)
        if found is not None:
            return found, False

        keep = export_command(self.source, patch_mode, quantize, self.model.config)
        print(f"onnxruntime backend: no {file_name} for {self.source or 'this model'}; exporting it now (to keep one: "
              f"{keep})", file=sys.stderr)  # fmt: skip
        folder = tempfile.mkdtemp(prefix="myna-onnx-")
        graphs = export_onnx(self.model, folder, self.feature_extractor, [patch_mode], quantize, source=self.source)
        return graphs["graphs"][patch_mode][quantize or "float32"], True

    def session(self, patch_mode: str | None = None):
        """The ONNX Runtime session of `patch_mode` (default: the model's), created, checked and kept on first use."""
        patch_mode = patch_mode or self.model.config.default_patch_mode
        if patch_mode not in self.model.config.available_patch_modes:
            raise ValueError(
                f"patch_mode={patch_mode!r}: this model offers {self.model.config.available_patch_modes}."
            )
        if patch_mode not in self.sessions:
            path, exported_now = self.graph_path(patch_mode)
            try:
                self.sessions[patch_mode] = open_session(path, self.threads)
            finally:
                if exported_now:  # the session holds the graph; the temporary folder goes
                    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            self.paths[patch_mode] = f"the graph exported now ({os.path.basename(path)})" if exported_now else path
            if self.check:
                self.checks[patch_mode] = self._check(patch_mode)
        return self.sessions[patch_mode]

    def _check(self, patch_mode: str) -> dict[str, Any]:
        chunks = check_chunks(self.feature_extractor)
        cosine = compare_to_pytorch(self.model, self.sessions[patch_mode], chunks, patch_mode)
        bound = FLOAT32_BOUND if self.precision == "float32" else COSINE_BOUND
        config, quantize = self.model.config, "int8" if self.precision == "int8" else None
        if cosine < bound:
            del self.sessions[patch_mode]
            raise ValueError(
                f"{self.paths[patch_mode]} gives embeddings with mean cosine {cosine:.5f} to the PyTorch model on "
                f"generated music, below {bound}: it was exported from other weights, or this precision does not "
                f"suit this model. Export it again ({export_command(self.source, patch_mode, quantize, config)} "
                "--overwrite), or use --backend pytorch."
            )
        return {"backend": self.backend, "precision": self.precision, "patch_mode": patch_mode, "cosine": cosine}

    def embed(self, chunks: torch.Tensor, patch_mode: str | None = None) -> torch.Tensor:
        """`(B, num_mel_bins, chunk_frames)` spectrograms -> `(B, D)` float32 pooled embeddings."""
        session = self.session(patch_mode)
        expected = session.get_inputs()[0].shape[1:]
        if list(chunks.shape[1:]) != list(expected):
            raise ValueError(
                f"chunks of shape {tuple(chunks.shape)}, but the exported graph takes (batch, {expected[0]}, "
                f"{expected[1]}): cut them with the model's feature extractor (chunk_frames {expected[1]})."
            )
        values = chunks.detach().to("cpu", torch.float32).contiguous().numpy()
        (pooled,) = session.run(["pooler_output"], {INPUT_NAME: values})
        return torch.from_numpy(pooled)


def check_chunks(feature_extractor) -> torch.Tensor:
    """The chunks every graph is checked on: `CHECK_CLIPS` generated clips, as `precision.check_precision` uses."""
    from .precision import _generated_chunks

    return _generated_chunks(feature_extractor, CHECK_CLIPS, seed=0)[0]


def export_command(source: str | None, patch_mode: str, quantize: str | None, config) -> str:
    """The `myna export` command that writes the graph the backend looks for into the model folder `source`."""
    model = source or "MODEL"
    command = f"myna export {model} --format onnx --output {model}"
    if patch_mode != config.default_patch_mode:
        command += f" --patch_mode {patch_mode}"
    return command + (f" --quantize {quantize}" if quantize else "")


def open_session(path: str, threads: int | None = None):
    """An ONNX Runtime CPU session on the graph at `path`, with `threads` intra-op threads (default: torch's)."""
    require("onnxruntime", purpose="the onnxruntime backend")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def compare_to_pytorch(model, graph, chunks: torch.Tensor, patch_mode: str | None = None) -> float:
    """Mean cosine similarity of the chunk embeddings of `graph` (a path or an ONNX Runtime session) to the PyTorch
    float32 model's, on `chunks` `(N, num_mel_bins, chunk_frames)` embedded in batches of 1 and of 7."""
    session = open_session(graph) if isinstance(graph, str) else graph
    reference = MynaInferenceModel(model, "float32", keep_memory=False).embed(chunks, patch_mode).numpy()
    values = chunks.to(torch.float32).contiguous().numpy()
    cosines = []
    for batch_size in (1, 7):
        pooled = [
            session.run(["pooler_output"], {INPUT_NAME: values[i : i + batch_size]})[0]
            for i in range(0, len(values), batch_size)
        ]
        cosines.append(mean_cosine(np.concatenate(pooled), reference))
    return min(cosines)


def inference_model(
    model,
    precision: str = "float32",
    backend: str = "pytorch",
    source: str | None = None,
    feature_extractor=None,
    patch_mode: str | None = None,
    keep_memory: bool = False,
) -> tuple[Any, list[dict[str, Any]]]:
    """`(inference model, checks)`: the inference model for `backend` at `precision`, and the outcome of its check
    against float32 PyTorch on generated music (none for float32 PyTorch itself; the check raises `ValueError` below
    its bound).

    `patch_mode` is the mode checked up front (default: the model's); the onnxruntime backend checks another mode on
    its first use. `keep_memory`: see `MynaInferenceModel` (PyTorch only).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}: choose one of {BACKENDS}.")
    patch_mode = patch_mode or model.config.default_patch_mode
    if backend == "onnxruntime":
        inference = MynaOnnxInferenceModel(model, precision, source=source, feature_extractor=feature_extractor)
        inference.session(patch_mode)
        return inference, list(inference.checks.values())
    checks = []
    if precision != "float32":
        from modeling_myna import MynaFeatureExtractor

        feature_extractor = feature_extractor or MynaFeatureExtractor.from_config(model.config)
        checks.append(check_precision(model, feature_extractor, precision, patch_mode=patch_mode))
    return MynaInferenceModel(model, precision, keep_memory=keep_memory), checks


__all__ = [
    "BACKENDS",
    "FLOAT32_BOUND",
    "ONNX_PRECISIONS",
    "MynaOnnxInferenceModel",
    "check_chunks",
    "compare_to_pytorch",
    "export_command",
    "find_graph",
    "inference_model",
    "open_session",
]
