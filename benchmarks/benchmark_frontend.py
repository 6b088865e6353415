"""Throughput of the mel front end: `MynaMelSpectrogram` (torch.stft) against nnAudio's `MelSpectrogram` (conv STFT),
and of `compute_spectrograms` with one process against one single-threaded worker per core.

    python benchmarks/benchmark_frontend.py                                # CPU: 1 thread and all threads
    python benchmarks/benchmark_frontend.py --device cuda --batch 16      # also the GPU
    python benchmarks/benchmark_frontend.py --num_clips 0                  # front end only

Both front ends run in the same process on the same input, interleaved (nnAudio, FFT, nnAudio, FFT, ...), and each
figure is the best of `--repeats`: on a shared machine the best run is the least disturbed one, and the ratio of two
interleaved best runs is what to quote. Throughput is audio-seconds per wall-clock second.
"""

import os
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import torch
from transformers import HfArgumentParser

from modeling_myna import MynaFeatureExtractor, MynaMelSpectrogram


SAMPLING_RATE = 16_000


@dataclass
class BenchmarkArguments:
    seconds: float = field(default=60.0, metadata={"help": "audio seconds per waveform"})
    batch: int = field(default=1, metadata={"help": "waveforms per call"})
    repeats: int = field(default=5, metadata={"help": "timed runs of each front end (best is kept)"})
    device: str = field(default="cpu", metadata={"help": "'cpu', or 'cuda' to add a GPU row"})
    num_clips: int = field(default=32, metadata={"help": "clips of the preprocessing benchmark (0: skip it)"})
    clip_seconds: float = field(default=10.0, metadata={"help": "seconds per preprocessing clip"})
    num_workers: int | None = field(default=None, metadata={"help": "preprocessing workers (default: one per core)"})


def best_times(functions: dict, repeats: int, synchronize=lambda: None) -> dict[str, float]:
    """Best wall time of each function over `repeats` interleaved rounds (one warm-up round first)."""
    best = {name: float("inf") for name in functions}
    for round_index in range(repeats + 1):
        for name, function in functions.items():
            synchronize()
            start = time.perf_counter()
            function()
            synchronize()
            if round_index:  # round 0 warms up allocators, FFT plans and kernels
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def front_end_rows(args: BenchmarkArguments) -> list[tuple[str, float, float, float]]:
    from nnAudio.features.mel import MelSpectrogram

    generator = torch.Generator().manual_seed(0)
    audio = 0.3 * torch.randn(args.batch, int(args.seconds * SAMPLING_RATE), generator=generator)
    audio_seconds = args.batch * args.seconds
    rows = []
    settings = [("cpu", 1), ("cpu", os.cpu_count() or 1)]
    if args.device.startswith("cuda"):
        if torch.cuda.is_available():
            settings.append((args.device, None))
        else:
            print("no CUDA device: GPU row skipped")
    threads = torch.get_num_threads()
    for device, num_threads in settings:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        nnaudio = MelSpectrogram(sr=SAMPLING_RATE, n_mels=128, verbose=False).to(device).eval()
        fast = MynaMelSpectrogram().to(device).eval()
        x = audio.to(device)
        synchronize = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        with torch.no_grad():
            reference, ours = nnaudio(x), fast(x)
            error = float(((ours - reference).abs().amax((1, 2)) / reference.abs().amax((1, 2))).max())
            best = best_times({"nnaudio": lambda: nnaudio(x), "fft": lambda: fast(x)}, args.repeats, synchronize)
        label = f"{device}, {num_threads} thread{'s' if num_threads != 1 else ''}" if num_threads else device
        rows.append((label, audio_seconds / best["nnaudio"], audio_seconds / best["fft"], error))
    torch.set_num_threads(threads)
    return rows


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def preprocessing_rows(args: BenchmarkArguments) -> list[tuple[str, float, float]]:
    from myna_training.data import SkipReport, compute_spectrograms, folder_clips

    workers = args.num_workers or os.cpu_count() or 1
    folder = tempfile.mkdtemp(prefix="myna-frontend-")
    try:
        rng = np.random.default_rng(0)
        t = np.arange(int(args.clip_seconds * SAMPLING_RATE)) / SAMPLING_RATE
        for i in range(args.num_clips):  # decoded from files, as a real corpus is
            tones = sum(0.1 * np.sin(2 * np.pi * rng.uniform(60, 4000) * t) for _ in range(3))
            sf.write(os.path.join(folder, f"clip{i:04d}.flac"), tones.astype(np.float32), SAMPLING_RATE)
        clips = folder_clips(folder)
        extractor = MynaFeatureExtractor()
        threads = torch.get_num_threads()
        runs = iter(range(1_000_000))

        def run(num_proc: int, num_threads: int):
            def call():
                # A fresh Arrow cache file per run, as pre-training writes one (workers each write their shard).
                cache_file = os.path.join(folder, "cache", f"run{next(runs)}.arrow")
                torch.set_num_threads(num_threads)
                compute_spectrograms(clips, extractor, 96, SkipReport(), cache_file=cache_file, num_proc=num_proc)
                torch.set_num_threads(threads)

            return call

        settings = {
            "1 process, 1 thread": run(1, 1),
            f"1 process, {threads} threads": run(1, threads),
            f"{workers} workers x 1 thread": run(workers, threads),
        }
        best = best_times(settings, max(1, args.repeats // 2))
        # CPU seconds per clip, the workers' included (the pool is joined, so they count as waited-for children):
        # what each setting costs whatever else the machine runs. One more run of each.
        cpu = {}
        for name, call in settings.items():
            before = cpu_seconds()
            call()
            cpu[name] = (cpu_seconds() - before) / args.num_clips
        return [(name, args.num_clips / seconds, cpu[name]) for name, seconds in best.items()]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    print(f"front end: {args.batch} x {args.seconds:g} s of audio per call, best of {args.repeats} interleaved runs")
    print(f"{'setting':<20} {'nnAudio (audio-s/s)':>20} {'FFT (audio-s/s)':>16} {'speed-up':>9} {'max rel. diff':>14}")
    for label, nnaudio, fast, error in front_end_rows(args):
        print(f"{label:<20} {nnaudio:>20.0f} {fast:>16.0f} {fast / nnaudio:>8.1f}x {error:>14.1e}")
    if args.num_clips:
        import datasets

        datasets.disable_progress_bars()
        print(f"\ncompute_spectrograms: {args.num_clips} FLAC clips of {args.clip_seconds:g} s, FFT front end")
        rows = preprocessing_rows(args)
        base = rows[0][1]
        print(f"{'setting':<28} {'clips/s':>8} {'vs 1 thread':>12} {'CPU ms/clip':>12}")
        for name, clips_per_second, cpu_per_clip in rows:
            print(f"{name:<28} {clips_per_second:>8.1f} {clips_per_second / base:>11.2f}x {cpu_per_clip * 1e3:>12.1f}")


if __name__ == "__main__":
    main()
