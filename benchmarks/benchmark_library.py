"""The library workflow: `myna embed` into a store killed halfway and resumed, FAISS search latency and recall, and
embedding throughput over several GPUs.

    python benchmarks/benchmark_library.py                                 # all three parts (GPUs: when present)
    python benchmarks/benchmark_library.py --parts resume --num_files 1000 --model_size vit-s
    python benchmarks/benchmark_library.py --parts search --num_vectors 100000 --dim 768
    python benchmarks/benchmark_library.py --parts gpus --model_size vit-s --num_files 2000   # on a GPU machine

resume: `--num_files` generated files (44.1 kHz stereo FLAC, `--seconds` each) through `myna embed --output store/`
three times: uninterrupted; killed (SIGKILL) once half the files are in the store; resumed. Reports the killed run
plus the resumed one against the uninterrupted run (the cost of the interruption: model loading twice, and the
shard that was being written when the kill came). search: `--num_vectors` random unit vectors, `--queries`
queries of two kinds: fresh random vectors (the hardest case for approximate search: every neighbour is almost
equally far) and noisy copies of stored vectors (the re-encoded-file case); latency per query (batch of 1) and
recall@10 of HNSW and IVF against the exact flat index. gpus: `torchrun --nproc_per_node N myna embed` for N = 1 ..
the GPUs present, files per second.
"""

import os
import signal
import subprocess
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
    parts: str = field(default="resume,search,gpus", metadata={"help": "Comma-separated: resume, search, gpus."})
    num_files: int = field(default=1000, metadata={"help": "Generated files for resume and gpus."})
    seconds: float = field(default=4.0, metadata={"help": "Length of each generated file."})
    model_size: str = field(default="tiny", metadata={"help": "tiny (2 layers x 32: decoding dominates) or vit-s."})
    num_workers: int = field(default=1, metadata={"help": "myna embed --num_workers."})
    shard_size: int = field(default=50, metadata={"help": "myna embed --shard_size."})
    num_vectors: int = field(default=100_000, metadata={"help": "Vectors in the search benchmark."})
    dim: int = field(default=768, metadata={"help": "Their width (768: Myna-Hybrid both)."})
    queries: int = field(default=200, metadata={"help": "Queries of each kind."})
    workdir: str | None = field(default=None, metadata={"help": "Where to write files (default: a temporary folder)."})


def prepare(args: BenchmarkArguments, workdir: str) -> tuple[str, str]:
    from modeling_myna import MynaConfig, MynaFeatureExtractor, MynaModel

    from benchmark_embed import write_track

    model_dir, music = os.path.join(workdir, "model"), os.path.join(workdir, "music")
    sizes = {} if args.model_size == "vit-s" else dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16, intermediate_size=64
    )  # fmt: skip
    torch.manual_seed(0)
    config = MynaConfig.from_variant("hybrid", **sizes)
    MynaModel(config).save_pretrained(model_dir)
    MynaFeatureExtractor.from_config(config).save_pretrained(model_dir)
    os.makedirs(music, exist_ok=True)
    for i in range(args.num_files):
        target = os.path.join(music, f"{i // 100:02d}", f"{i:05d}.flac")
        if not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            write_track(target, args.seconds, 44_100, 2, seed=i)
    return model_dir, music


def embed_command(music: str, model: str, store: str, args: BenchmarkArguments, launcher=()) -> list[str]:
    return [*launcher] + [
        "-m", "myna_pipelines.cli", "embed", music, "--model", model, "--output", store,
        "--num_workers", str(args.num_workers), "--shard_size", str(args.shard_size),
    ]  # fmt: skip


def rows_in(store: str) -> int:
    import pyarrow.parquet as pq

    data = os.path.join(store, "data")
    if not os.path.isdir(data):
        return 0
    total = 0
    for name in os.listdir(data):
        if name.endswith(".parquet"):
            try:
                total += pq.read_metadata(os.path.join(data, name)).num_rows
            except (OSError, ValueError):
                pass  # renamed or merged under us
    return total


def benchmark_resume(args: BenchmarkArguments, workdir: str) -> None:
    model, music = prepare(args, workdir)
    python = [sys.executable]

    start = time.perf_counter()
    subprocess.run(python + embed_command(music, model, os.path.join(workdir, "full"), args), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    uninterrupted = time.perf_counter() - start

    store = os.path.join(workdir, "killed")
    start = time.perf_counter()
    process = subprocess.Popen(python + embed_command(music, model, store, args), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    while rows_in(store) < args.num_files // 2 and process.poll() is None:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at, rows_at_kill = time.perf_counter() - start, rows_in(store)
    start = time.perf_counter()
    subprocess.run(python + embed_command(music, model, store, args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # fmt: skip
    resumed = time.perf_counter() - start
    assert rows_in(store) == args.num_files, "the resumed store is incomplete"
    print(
        f"\n## resume: {args.num_files} files x {args.seconds:g} s, Myna-Hybrid {args.model_size}, "
        f"{args.num_workers} decoding worker(s), shards of {args.shard_size}; load average {os.getloadavg()[0]:.1f}"
    )
    print("| run | wall s (process start to exit) |")
    print("|---|---|")
    print(f"| uninterrupted | {uninterrupted:.1f} |")
    print(f"| killed once {rows_at_kill} files were stored | {killed_at:.1f} |")
    print(f"| resumed (skips {rows_at_kill}) | {resumed:.1f} |")
    total = killed_at + resumed
    print(f"| killed + resumed | {total:.1f} ({total / uninterrupted:.2f}x uninterrupted) |")


def benchmark_search(args: BenchmarkArguments) -> None:
    from myna_pipelines.search import make_index, normalize

    rng = np.random.default_rng(0)
    vectors = normalize(rng.standard_normal((args.num_vectors, args.dim), dtype=np.float32))
    fresh = normalize(rng.standard_normal((args.queries, args.dim), dtype=np.float32))
    picked = rng.choice(args.num_vectors, args.queries, replace=False)
    noise = rng.standard_normal((args.queries, args.dim), dtype=np.float32) / np.sqrt(args.dim)
    copies = normalize(vectors[picked] + 0.5 * noise)
    print(
        f"\n## search: {args.num_vectors} random unit vectors x {args.dim}, {args.queries} queries of each kind, "
        f"{torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f}"
    )
    print("| index | build s | ms / query | recall@10 fresh random | recall@10 noisy copies | copy found first |")
    print("|---|---|---|---|---|---|")
    exact = {}
    for kind in ("flat", "hnsw", "ivf"):
        start = time.perf_counter()
        index = make_index(vectors, kind)
        build = time.perf_counter() - start
        start = time.perf_counter()
        for q in fresh:
            index.search(q[None], 10)
        latency = (time.perf_counter() - start) / len(fresh) * 1e3
        results = {name: index.search(queries, 10)[1] for name, queries in (("fresh", fresh), ("copies", copies))}
        if kind == "flat":
            exact = results
        recall = {
            name: np.mean([len(set(a) & set(e)) / 10 for a, e in zip(results[name], exact[name])]) for name in results
        }
        first = np.mean(results["copies"][:, 0] == picked)
        recalls = f"{recall['fresh']:.3f} | {recall['copies']:.3f}"
        print(f"| {kind} | {build:.1f} | {latency:.2f} | {recalls} | {first:.3f} |")


def benchmark_gpus(args: BenchmarkArguments, workdir: str) -> None:
    if not torch.cuda.is_available():
        print("\n## gpus: skipped, no CUDA device")
        return
    model, music = prepare(args, workdir)
    print(f"\n## gpus: {args.num_files} files x {args.seconds:g} s, Myna-Hybrid {args.model_size}")
    print("| processes (GPUs) | wall s | files / s |")
    print("|---|---|---|")
    for n in range(1, torch.cuda.device_count() + 1):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n)]
        start = time.perf_counter()
        subprocess.run(embed_command(music, model, os.path.join(workdir, f"gpus{n}"), args, launcher), check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        seconds = time.perf_counter() - start
        print(f"| {n} | {seconds:.1f} | {args.num_files / seconds:.1f} |")


def main() -> None:
    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses()
    workdir = args.workdir or tempfile.mkdtemp(prefix="myna-library-")
    parts = args.parts.split(",")
    if "resume" in parts:
        benchmark_resume(args, workdir)
    if "search" in parts:
        benchmark_search(args)
    if "gpus" in parts:
        benchmark_gpus(args, workdir)


if __name__ == "__main__":
    main()
