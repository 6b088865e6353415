"""One 3-minute track through full-size Myna-Hybrid (both tokenizers), file to embeddings, against what a user would
otherwise run: nnAudio's `MelSpectrogram` feeding a plain eager ViT with the same weights. Like with like.

    python benchmarks/benchmark_embed_track.py                          # plain, float32, bfloat16, int8, ONNX Runtime
    python benchmarks/benchmark_embed_track.py --implementations float32,int8,int8@fbgemm,int8@x86 --repeats 3
    python benchmarks/benchmark_embed_track.py --seconds 60 --repeats 1 --allow_busy   # a dry run on a busy machine

"plain" is the baseline: the file decoded and resampled (`load_audio`), nnAudio's own `MelSpectrogram` module (the
feature extractor's `mel_backend="nnaudio"`, built once), then the straightforward eager model of
`tests/reference_vit.py` (plain softmax attention, one forward per tokenizer). The other rows are this project's path,
as `myna embed` runs it minus the decoding worker: the same decoding, the FFT mel (`MynaMelSpectrogram`), then
`MynaInferenceModel(model, precision).embed(chunks, "both")` at float32, bfloat16 (autocast; CPUs with native
bfloat16) or int8 (dynamic quantization; `int8@ENGINE` picks the quantized engine, default `int8_engine()`).
`onnxruntime` and `onnxruntime-int8` are the same weights exported to ONNX (`pipelines/onnx_export.py`, once, before
any timing; int8 by onnxruntime's dynamic quantization of the same linear layers) and run by ONNX Runtime on the CPU
with as many threads as torch (`MynaOnnxInferenceModel`, `--backend onnxruntime` of `myna embed`). Every
path runs in this one process on the same file, the same chunks and the same batch (`--batch_size 0`: all chunks in
one batch), with the same random weights (the plain model's, converted); runs are interleaved (plain, float32, ...,
then again) and the best of `--repeats` is kept, after one warm-up round. Every path runs with the same malloc
settings: by default `keep_freed_memory()` (what `myna embed` applies on a CPU) before anything is timed;
`--default_malloc` leaves glibc's defaults, to measure what it gives.

The 2-core machine this project measures on is shared, so the figures are reported only on a quiet machine: the
1-minute load average before the run must not exceed the core count, nor, after it, the core count plus this
process's own threads (the load it adds itself). `--allow_busy` prints the table anyway, headed as a dry run. The
CPU share is this process's CPU seconds over (wall seconds x threads) during the timed rounds: near 100% when no
other process took its cores.

Accuracy: every path's mean chunk cosine to the plain model's embeddings (the bound for reduced precisions is 0.99,
`pipelines/precision.py`), and float32's max relative error. "of peak" is the encoder's FLOPs per second over the
machine's measured float32 matmul throughput, end to end (decoding and the mel included in the time).
"""

import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from transformers import HfArgumentParser


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


@dataclass
class BenchmarkArguments:
    seconds: float = field(default=180.0, metadata={"help": "Length of the generated track."})
    implementations: str = field(
        default="float32,bfloat16,int8,onnxruntime,onnxruntime-int8",
        metadata={"help": "Comma-separated project paths, each timed against the plain baseline: float32, "
                  "bfloat16, int8 or int8@ENGINE (onednn, fbgemm, x86); onnxruntime, onnxruntime-int8 (the "
                  "`onnx` extra)."},
    )  # fmt: skip
    batch_size: int = field(default=0, metadata={"help": "Chunks per forward, for every path (0: all in one)."})
    repeats: int = field(default=4, metadata={"help": "Interleaved timed rounds after one warm-up; best kept."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: torch's default)."})
    probe_clips: int = field(default=0, metadata={"help": "Generated 10 s clips for a style probe (0: skip it)."})
    default_malloc: bool = field(
        default=False,
        metadata={"help": "Leave glibc's malloc as it is (`MynaInferenceModel(..., keep_memory=False)`), to measure "
                  "what `keep_freed_memory()` gives every path; by default it is applied before any timing."},
    )  # fmt: skip
    allow_busy: bool = field(
        default=False, metadata={"help": "Report even when the load is above the core count: a dry run, so headed."}
    )


def matmul_gflops(seconds: float = 1.0) -> float:
    """The machine's float32 matmul throughput, GFLOP/s, on the encoder's largest product shape."""
    a, b = torch.randn(3072, 384), torch.randn(384, 1536)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * 3072 * 384 * 1536 * count / (time.perf_counter() - start) / 1e9


def encoder_flops_per_chunk(config, tokens_per_tokenizer: int = 48, tokenizers: int = 2) -> float:
    d, m, n = config.hidden_size, config.intermediate_size, tokens_per_tokenizer
    per_token_layer = 2 * (d * 3 * d + d * d + 2 * d * m) + 2 * 2 * n * d  # projections, MLP, QK^T and AV
    return tokenizers * n * (config.num_hidden_layers * per_token_layer + 2 * 256 * d)


def too_busy(load: float, own_threads: int = 0) -> bool:
    """Whether other processes kept the machine's cores busy: the 1-minute load, less this process's threads."""
    return load - own_threads > os.cpu_count()


def main() -> None:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    load_before = os.getloadavg()[0]
    if too_busy(load_before) and not args.allow_busy:
        sys.exit(
            f"1-minute load average {load_before:.2f} on {os.cpu_count()} cores: other processes would share the "
            "cores and the figures would mean little. Run it when the machine is quiet (or under a script that "
            "pauses the other jobs), or pass --allow_busy for a dry run."
        )
    from modeling_myna import MynaFeatureExtractor
    from modeling_myna.audio_utils import load_audio
    from modeling_myna.convert_original_checkpoint import convert_checkpoint
    from myna_pipelines.precision import MynaInferenceModel, bfloat16_supported, int8_engine, keep_freed_memory
    from myna_pipelines.precision import mean_cosine
    from myna_pipelines.precision import measure_precision
    from tests.reference_vit import ReferenceMyna

    from benchmark_embed import write_track

    if args.threads:
        torch.set_num_threads(args.threads)
    # Process-wide, so every path (the plain baseline too) runs with the same malloc.
    malloc = "glibc malloc as it is" if args.default_malloc else (
        "freed memory kept (keep_freed_memory)" if keep_freed_memory() else "malloc as it is (not glibc)"
    )
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    plain_model = ReferenceMyna((16, 16), patch_b=(128, 2)).eval()
    model = convert_checkpoint(plain_model.state_dict(), "hybrid").base_model.eval()
    extractor = MynaFeatureExtractor.from_config(model.config)
    nnaudio_extractor = MynaFeatureExtractor.from_config(model.config, mel_backend="nnaudio")
    path = os.path.join(tempfile.mkdtemp(prefix="myna-track-"), "track.flac")
    write_track(path, args.seconds, 44_100, 2, seed=0)

    def batches(chunks: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return chunks.split(args.batch_size) if args.batch_size else (chunks,)

    def run_plain() -> np.ndarray:
        audio, rate = load_audio(path)
        chunks = nnaudio_extractor(audio, sampling_rate=rate, return_tensors="pt")["input_values"][:, None]
        with torch.inference_mode():
            return torch.cat([
                torch.cat([plain_model.encode(c), plain_model.encode(c, second=True)], dim=-1) for c in batches(chunks)
            ]).numpy()  # fmt: skip

    def project_path(precision: str, engine: str | None):
        inference = MynaInferenceModel(model, precision, engine=engine, keep_memory=not args.default_malloc)

        def run() -> np.ndarray:
            audio, rate = load_audio(path)
            chunks = extractor(audio, sampling_rate=rate, return_tensors="pt")["input_values"]
            return torch.cat([inference.embed(c, "both") for c in batches(chunks)]).numpy()

        return run

    def onnx_path(precision: str, folder: str):
        from myna_pipelines.onnx_backend import MynaOnnxInferenceModel

        inference = MynaOnnxInferenceModel(model, precision, source=folder, feature_extractor=extractor, check=False)

        def run() -> np.ndarray:
            audio, rate = load_audio(path)
            chunks = extractor(audio, sampling_rate=rate, return_tensors="pt")["input_values"]
            return torch.cat([inference.embed(c, "both") for c in batches(chunks)]).numpy()

        return run

    runs, labels = {"plain": run_plain}, {"plain": "plain eager ViT + nnAudio MelSpectrogram"}
    onnx_folder = None
    for name in args.implementations.split(","):
        if name.startswith("onnxruntime"):
            missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
            if missing:
                print(f"{name}: skipped, {', '.join(missing)} not installed (pip install 'myna-hf[onnx]')")
                continue
            if onnx_folder is None:
                from myna_pipelines.onnx_export import export_onnx

                onnx_folder, started = tempfile.mkdtemp(prefix="myna-onnx-"), time.perf_counter()
                export_onnx(model, onnx_folder, extractor, ["both"], "int8")
                print(f"exported to ONNX (float32 and int8) in {time.perf_counter() - started:.0f} s, before timing")
            precision = "int8" if name.endswith("int8") else "float32"
            runs[name] = onnx_path(precision, onnx_folder)
            labels[name] = f"ONNX Runtime {precision}"
            if precision == "int8":
                labels[name] += " (onnxruntime's dynamic quantization)"
            continue
        precision, _, engine = name.partition("@")
        if precision == "bfloat16" and not bfloat16_supported():
            print("bfloat16: skipped, this CPU has no native bfloat16")
            continue
        runs[name] = project_path(precision, engine or None)
        labels[name] = f"int8 ({engine or int8_engine()})" if precision == "int8" else precision
        if precision == "bfloat16":
            labels[name] += " (autocast)"

    outputs = {name: run() for name, run in runs.items()}  # warm-up, and the embeddings compared below
    best = dict.fromkeys(runs, float("inf"))
    cpu_start, wall_start = os.times(), time.perf_counter()
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    cpu_end, wall = os.times(), time.perf_counter() - wall_start
    cpu_share = (cpu_end.user + cpu_end.system - cpu_start.user - cpu_start.system) / (wall * threads)
    load_after = os.getloadavg()

    peak = matmul_gflops()
    num_chunks = len(outputs["plain"])
    flops = encoder_flops_per_chunk(model.config) * num_chunks
    busy = too_busy(load_before) or too_busy(load_after[0], threads)
    if busy and not args.allow_busy:
        sys.exit(
            f"1-minute load average {load_after[0]:.2f} after the run on {os.cpu_count()} cores, {threads} of it this "
            "process's: other processes shared the cores, so no figures are reported. Run it again on a quiet "
            "machine, or pass --allow_busy for a dry run."
        )
    if busy:
        print("DRY RUN ON A BUSY MACHINE (--allow_busy): the figures below are not a measurement.")
    print(
        f"{args.seconds:.0f} s track (44.1 kHz stereo FLAC, {num_chunks} chunks), Myna-Hybrid both tokenizers, "
        f"batch {args.batch_size or num_chunks}, {threads} threads, best of {args.repeats} interleaved rounds; "
        f"load average {load_before:.2f} before, {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f} "
        f"after on {os.cpu_count()} CPUs; CPU share {cpu_share:.0%}; float32 matmul peak measured {peak:.0f} GFLOP/s; "
        f"{malloc}"
    )
    columns = ("path", "seconds", "audio s / s", "vs plain eager + nnAudio", "of peak", "mean chunk cosine to plain")
    print("| " + " | ".join(columns) + " | accuracy |")
    print("|---|---|---|---|---|---|---|")
    for name, seconds in best.items():
        cosine = mean_cosine(outputs[name], outputs["plain"])
        accuracy = "-"
        if name == "float32":
            error = np.abs(outputs[name] - outputs["plain"]).max() / np.abs(outputs["plain"]).max()
            accuracy = f"max relative error {error:.1e}"
        elif name != "plain" and "float32" in outputs:
            accuracy = f"cosine {mean_cosine(outputs[name], outputs['float32']):.5f} to float32"
        print(
            f"| {labels[name]} | {seconds:.2f} | {args.seconds / seconds:.0f} | {best['plain'] / seconds:.2f}x | "
            f"{flops / seconds / 1e9 / peak:.0%} | {cosine:.5f} | {accuracy} |"
        )
    if args.probe_clips:
        print(f"\nstyle probe on {args.probe_clips} generated 10 s clips (70/30 split), x100:")
        for name in runs:
            precision, _, _ = name.partition("@")
            if precision in ("plain", "float32"):
                continue
            m = measure_precision(
                model, extractor, precision, num_clips=args.probe_clips, patch_mode="both", probe=True
            )
            print(
                f"  {name}: cosine {m['cosine']:.5f}, probe {m['probe']:.1f} vs float32 {m['probe_float32']:.1f} "
                f"(change {m['probe_change']:+.1f} points)"
            )


if __name__ == "__main__":
    main()
