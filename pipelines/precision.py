"""Reduced-precision CPU inference for Myna, each path with a measured accuracy bound.

    float32   the model as trained; the reference.
    bfloat16  `torch.autocast("cpu", torch.bfloat16)` around the encoder, on CPUs with native bfloat16
              (AVX512-BF16 or AMX); elsewhere it is emulated and slower than float32, so it is refused.
    int8      dynamic quantization of the encoder's `nn.Linear` layers (`torch.ao.quantization.quantize_dynamic`):
              int8 weights (one scale per layer), activations quantized per batch on the fly to 7 bits (torch.ao's
              `reduce_range`, which keeps AVX2's 16-bit pair sums from saturating): qkv, o_proj, fc1 and fc2 of
              every block, 99.5% of the encoder's multiply-adds. The kernels are oneDNN's where the CPU has VNNI or
              AMX (oneDNN uses AMX tiles on Xeon 4th generation and later), torch's default engine elsewhere
              (`x86`, with fbgemm's AVX2/AVX512 kernels; `qnnpack` on ARM): `int8_engine()`. On this project's
              AVX512-VNNI machine (no AMX) the three engines are within 3% on a quiet machine (3-minute track,
              hybrid "both": oneDNN 0.66 s, fbgemm 0.67 s, x86 0.66 s, docs/benchmarks.md); oneDNN is chosen for
              the CPUs with AMX, whose tiles only it uses.
              What stays float32: the tokenizers (LayerNorm -> Linear -> LayerNorm on the raw power mel; their
              256 x 384 projections are 0.5% of the multiply-adds), the attention products (48 x 48 per head, 2%),
              LayerNorms, GELU and residual sums. torchao's current API (0.18,
              `quantize_(model, Int8DynamicActivationInt8WeightConfig())`) is not used: in eager mode it took 1.85x
              float32's time on the same batch (interleaved runs; its fast kernels come through `torch.compile`,
              minutes of C++ compilation on a small CPU), against 0.57x for the oneDNN path in the same runs.

Memory: on Linux with glibc, `MynaInferenceModel(..., keep_memory=True)` on the CPU first calls
`keep_freed_memory()`, which keeps freed blocks of up to 32 MiB in the process's heap instead of handing them back to
the kernel. By default glibc maps large blocks afresh and returns the heap's free top, so every forward faults its
activations' pages in again: profiled on a 3-minute hybrid "both" batch at int8, GELU took 3x and the quantized GEMMs
1.3x as long without it; end to end (decoding and the mel included) it is worth a few percent
(`benchmarks/benchmark_embed_track.py`, with and without `--default_malloc`). The price is that the process keeps its
peak heap until it exits, and the setting is the whole process's: so it is opt-in. `myna embed`, a command that
exits when done, opts in; the library by default (the app's server, a service importing it) leaves malloc alone.

A reduced precision is accepted when the mean cosine similarity of its chunk embeddings to float32's, on generated
music (`myna_common.synthetic`), is at least `COSINE_BOUND`; `check_precision` measures it in a few seconds and
refuses the path otherwise. The benchmark also reports the change of a probe score on a generated task
(`probe_score_change`): the bound there is `PROBE_BOUND` points.
"""

import contextlib
import copy
import ctypes
import ctypes.util
import functools
import platform
import warnings
from typing import Any

import numpy as np
import torch


PRECISIONS = ("float32", "bfloat16", "int8")
COSINE_BOUND = 0.99  # mean cosine similarity to the float32 chunk embeddings
PROBE_BOUND = 1.0  # points (of 100) of probe score


def int8_engine() -> str:
    """The quantized engine the int8 path prepares its weights for: `"onednn"` on CPUs with VNNI or AMX (AMX tiles
    only through it; on VNNI alone it is level with fbgemm, `benchmarks/benchmark_embed_track.py`), torch's default
    engine elsewhere."""
    try:
        fast_int8 = torch.cpu._is_vnni_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # older torch: no CPU feature queries
        fast_int8 = False
    if fast_int8 and "onednn" in torch.backends.quantized.supported_engines:
        return "onednn"
    return torch.backends.quantized.engine


def quantize_int8(encoder, engine: str | None = None):
    """A copy of `encoder` (a `MynaModel`) whose encoder blocks' `nn.Linear` layers are dynamically quantized to
    int8 for `engine` (default `int8_engine()`). The packed weights carry their engine, so the global
    `torch.backends.quantized.engine` is set only while they are packed, and restored."""
    encoder = copy.deepcopy(encoder)
    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine or int8_engine()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao's deprecation notice: see the module docstring
            torch.ao.quantization.quantize_dynamic(encoder.encoder, {torch.nn.Linear}, torch.qint8, inplace=True)
    finally:
        torch.backends.quantized.engine = previous
    return encoder


# glibc's mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit systems.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MAX_MMAP_THRESHOLD = 32 * 2**20
_TRIM_THRESHOLD = 2**30


@functools.cache
def keep_freed_memory() -> bool:
    """Has glibc's malloc keep freed blocks for reuse: blocks of up to 32 MiB come from the heap (`M_MMAP_THRESHOLD`
    at its maximum, instead of glibc's threshold that starts at 128 KiB) and the heap's free top is returned to the
    kernel only above 1 GiB (`M_TRIM_THRESHOLD`). Repeated forwards then reuse their activations' pages instead of
    faulting fresh ones in. Process-wide and once; returns whether it applies (Linux with glibc)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        applied = libc.mallopt(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD) == 1
        return libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and applied
    except (OSError, AttributeError):
        return False


def bfloat16_supported() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's check: AVX512-BF16 or AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class MynaInferenceModel:
    """A Myna encoder prepared for one precision; `embed(chunks, patch_mode)` returns float32 `(B, D)` embeddings.

    Args:
        model: any Myna model (its `base_model`, the bare encoder, is used).
        precision: one of `PRECISIONS`.
        engine: for int8, the quantized engine (`torch.backends.quantized.supported_engines`); default
            `int8_engine()`.
        keep_memory: on the CPU, call `keep_freed_memory()`: glibc keeps freed blocks for the next forward, for
            the whole process and until it exits (the module docstring gives the gain and the price). Off by
            default; `myna embed` turns it on.
    """

    def __init__(self, model, precision: str = "float32", engine: str | None = None, keep_memory: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"precision={precision!r} is not one of {PRECISIONS}.")
        encoder = model.base_model.eval()
        self.precision = precision
        self.device = encoder.device
        if precision != "float32" and self.device.type != "cpu":
            raise ValueError(
                f"precision={precision!r} is a CPU path; on {self.device.type} load the model in bfloat16 "
                "(--dtype bfloat16) instead."
            )
        if precision == "bfloat16" and not bfloat16_supported():
            raise ValueError(
                "precision='bfloat16': this CPU has no native bfloat16 (AVX512-BF16 or AMX), where it is slower "
                "than float32; use --precision int8 or float32."
            )
        if precision == "int8":
            encoder = quantize_int8(encoder, engine)
        self.encoder = encoder
        if keep_memory and self.device.type == "cpu":
            keep_freed_memory()

    def _context(self):
        if self.precision == "bfloat16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def embed(self, chunks: torch.Tensor, patch_mode: str | None = None) -> torch.Tensor:
        """`(B, num_mel_bins, chunk_frames)` spectrograms -> `(B, D)` float32 pooled embeddings."""
        with self._context():
            return self.encoder(input_values=chunks.to(self.device), patch_mode=patch_mode).pooler_output.float()


def _generated_chunks(
    feature_extractor, num_clips: int, seed: int, duration: float = 10.0
) -> tuple[torch.Tensor, np.ndarray]:
    """Chunk spectrograms of generated music clips and each chunk's style label."""
    from myna_common.synthetic import STYLES, generate_clip

    # Styles in turn, so that every split of the probe sees each of them.
    clips = [generate_clip([seed, i], duration=duration, style=i % len(STYLES)) for i in range(num_clips)]
    features = feature_extractor([audio for audio, _ in clips], sampling_rate=16_000, return_tensors="pt")
    labels = np.array([labels["style_index"] for _, labels in clips])[features["audio_index"].numpy()]
    return features["input_values"], labels


def _embed_all(model: MynaInferenceModel, chunks: torch.Tensor, patch_mode, batch_size: int = 32) -> np.ndarray:
    batches = [model.embed(chunks[i : i + batch_size], patch_mode) for i in range(0, len(chunks), batch_size)]
    return torch.cat(batches).numpy()


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).mean())


def probe_score(embeddings: np.ndarray, labels: np.ndarray, train_fraction: float = 0.7, ridge: float = 1e-2) -> float:
    """Accuracy (x100) of a standardised one-vs-rest ridge classifier, trained on the first `train_fraction` of the
    rows, tested on the rest: a closed-form probe, deterministic, with no dependency beyond NumPy."""
    n_train = int(len(labels) * train_fraction)
    mean, std = embeddings[:n_train].mean(0), embeddings[:n_train].std(0) + 1e-6
    x = np.c_[(embeddings - mean) / std, np.ones(len(labels))].astype(np.float64)
    targets = np.eye(labels.max() + 1)[labels]
    xt = x[:n_train]
    weights = np.linalg.solve(xt.T @ xt + ridge * len(xt) * np.eye(x.shape[1]), xt.T @ targets[:n_train])
    return float(100 * ((x[n_train:] @ weights).argmax(1) == labels[n_train:]).mean())


def measure_precision(
    model, feature_extractor, precision: str, num_clips: int = 8, patch_mode: str | None = None, seed: int = 0,
    probe: bool = False,
) -> dict[str, Any]:
    """Mean cosine similarity of `precision`'s chunk embeddings to float32's on generated music; with `probe`, also
    the style-probe scores of both (x100) and their difference in points."""
    chunks, labels = _generated_chunks(feature_extractor, num_clips, seed)
    reference = _embed_all(MynaInferenceModel(model, "float32"), chunks, patch_mode)
    reduced = _embed_all(MynaInferenceModel(model, precision), chunks, patch_mode)
    result = {"precision": precision, "chunks": len(chunks), "cosine": mean_cosine(reduced, reference)}
    if probe:
        result["probe_float32"] = probe_score(reference, labels)
        result["probe"] = probe_score(reduced, labels)
        result["probe_change"] = result["probe"] - result["probe_float32"]
    return result


def check_precision(model, feature_extractor, precision: str, patch_mode: str | None = None) -> dict[str, Any]:
    """Measures a reduced precision on a few generated clips; raises `ValueError` if it misses `COSINE_BOUND`."""
    if precision == "float32":
        return {"precision": precision, "cosine": 1.0}
    result = measure_precision(model, feature_extractor, precision, patch_mode=patch_mode)
    if result["cosine"] < COSINE_BOUND:
        raise ValueError(
            f"precision={precision!r} gives embeddings with mean cosine {result['cosine']:.4f} to float32 on "
            f"generated music, below the bound {COSINE_BOUND}: this model is not safe to run at that precision; "
            "use --precision float32."
        )
    return result


__all__ = [
    "COSINE_BOUND",
    "PRECISIONS",
    "PROBE_BOUND",
    "MynaInferenceModel",
    "bfloat16_supported",
    "check_precision",
    "int8_engine",
    "keep_freed_memory",
    "mean_cosine",
    "measure_precision",
    "probe_score",
    "quantize_int8",
]
