"""One 3-minute track through full-size Myna-Hybrid (both tokenizers), file to embeddings, each CPU path against the
plain eager implementation, in one process, like with like.

    python benchmarks/benchmark_embed_track.py                        # CPU: reference, float32, bfloat16, int8
    python benchmarks/benchmark_embed_track.py --seconds 60 --repeats 3 --probe_clips 0

"reference" is the straightforward eager model (`tests/reference_vit.py`, plain softmax attention, one forward per
tokenizer) run the way a script would: decode the file, resample, the feature extractor's mel (its nnAudio module
is built once, as ours), then the model batch after batch. The other rows are `myna embed`'s library path
(`pipelines/library.py`): a worker process decodes, resamples and computes the mel ahead of the model, which encodes
both tokenizers in one pass; at float32, bfloat16 (autocast, CPUs with native bfloat16) or int8 (dynamic
quantization). Every path sees the same file, the same chunks and the same `--batch_size`, with the same random
weights (the reference's, converted); runs are interleaved (reference, float32, ..., then again) and the best of
`--repeats` is kept, so that load from other processes hits every path alike. Accuracy: float32's embeddings against
the reference's (max relative error), the others' mean cosine to float32, and, with `--probe_clips`, the change of
a style-probe score on generated music (`pipelines/precision.py`). "of peak" is the encoder's FLOPs per second over
the machine's measured float32 matmul throughput, end to end (decoding and the mel included in the time).
"""

import os
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import torch

from transformers import HfArgumentParser


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


@dataclass
class BenchmarkArguments:
    seconds: float = field(default=180.0, metadata={"help": "Length of the generated track."})
    implementations: str = field(default="reference,float32,bfloat16,int8", metadata={"help": "Comma-separated."})
    batch_size: int = field(default=16, metadata={"help": "Chunks per forward, for every path."})
    repeats: int = field(default=3, metadata={"help": "Interleaved timed rounds after one warm-up; best kept."})
    threads: int = field(default=0, metadata={"help": "torch threads (0: torch's default)."})
    probe_clips: int = field(default=40, metadata={"help": "Generated 10 s clips for the probe (0: skip it)."})


def matmul_gflops(seconds: float = 2.0) -> float:
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


def main() -> None:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    from modeling_myna import MynaFeatureExtractor
    from modeling_myna.audio_utils import load_audio
    from modeling_myna.convert_original_checkpoint import convert_checkpoint
    from myna_pipelines.library import _Batcher, _LibraryFiles, _worker_init
    from myna_pipelines.precision import MynaInferenceModel, bfloat16_supported, mean_cosine, measure_precision
    from tests.reference_vit import ReferenceMyna

    from benchmark_embed import write_track

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    reference = ReferenceMyna((16, 16), patch_b=(128, 2)).eval()
    model = convert_checkpoint(reference.state_dict(), "hybrid").base_model.eval()
    extractor = MynaFeatureExtractor.from_config(model.config)
    workdir = tempfile.mkdtemp(prefix="myna-track-")
    path = os.path.join(workdir, "track.flac")
    write_track(path, args.seconds, 44_100, 2, seed=0)
    batch = args.batch_size

    def run_reference() -> np.ndarray:
        audio, rate = load_audio(path)
        chunks = extractor(audio, sampling_rate=rate, return_tensors="pt")["input_values"][:, None]
        with torch.inference_mode():
            return torch.cat([
                torch.cat([reference.encode(c), reference.encode(c, second=True)], dim=-1)
                for c in chunks.split(batch)
            ]).numpy()  # fmt: skip

    def library_path(precision: str):
        inference = MynaInferenceModel(model, precision)

        def run() -> np.ndarray:
            files = _LibraryFiles([path], extractor, batch, spectrograms=True)
            loader = torch.utils.data.DataLoader(
                files, batch_size=None, num_workers=1, worker_init_fn=_worker_init, prefetch_factor=8
            )
            batcher, done = _Batcher(inference, batch, "both"), []
            for item in loader:
                batcher.add(item, item["chunks"])
                done += batcher.run()
            done += batcher.run(final=True)
            return torch.cat(done[0]["embeddings"]).numpy()

        return run

    runs = {}
    for name in args.implementations.split(","):
        if name == "bfloat16" and not bfloat16_supported():
            print("bfloat16: skipped, this CPU has no native bfloat16")
            continue
        runs[name] = run_reference if name == "reference" else library_path(name)

    outputs = {name: run() for name, run in runs.items()}  # warm-up, and the embeddings compared below
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)

    peak = matmul_gflops()
    num_chunks = len(next(iter(outputs.values())))
    flops = encoder_flops_per_chunk(model.config) * num_chunks
    float32 = outputs.get("float32", outputs.get("reference"))
    print(
        f"{args.seconds:.0f} s track (44.1 kHz stereo FLAC, {num_chunks} chunks), Myna-Hybrid both tokenizers, batch "
        f"{batch}, {torch.get_num_threads()} threads, best of {args.repeats} interleaved rounds, load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; float32 matmul peak measured {peak:.0f} GFLOP/s"
    )
    print("| path | wall s | audio s / s | vs reference | of peak | accuracy |")
    print("|---|---|---|---|---|---|")
    for name, seconds in best.items():
        speedup = f"{best['reference'] / seconds:.2f}x" if "reference" in best else "-"
        if name == "reference":
            accuracy = "-"
        elif name == "float32" and "reference" in outputs:
            error = np.abs(outputs[name] - outputs["reference"]).max() / np.abs(outputs["reference"]).max()
            accuracy = f"max rel. error {error:.1e} vs reference"
        else:
            accuracy = f"cosine {mean_cosine(outputs[name], float32):.5f} vs float32"
        print(
            f"| {name} | {seconds:.2f} | {args.seconds / seconds:.1f} | {speedup} | "
            f"{flops / seconds / 1e9 / peak:.0%} | {accuracy} |"
        )
    if args.probe_clips:
        print(f"\nstyle probe on {args.probe_clips} generated 10 s clips (70/30 split), x100:")
        for name in runs:
            if name in ("reference", "float32"):
                continue
            m = measure_precision(model, extractor, name, num_clips=args.probe_clips, patch_mode="both", probe=True)
            print(
                f"  {name}: cosine {m['cosine']:.5f}, probe {m['probe']:.1f} vs float32 {m['probe_float32']:.1f} "
                f"(change {m['probe_change']:+.1f} points)"
            )


if __name__ == "__main__":
    main()
