"""Out-of-core pre-training at scale: host memory stays flat as the spectrogram store grows, and a step costs about
what it costs with a resident bank.

Generates on-disk stores of `--clips` random 10 s clips (100k by default: 7.5 GiB in bfloat16) and `--scale` times
as many, then runs `benchmark_pretrain.py` in a fresh process for each case, so that every process's memory is its
own: resident at 1x, out-of-core at 1x and out-of-core at each larger scale. Prints one table: step time, examples/s
and the process's memory (peak RSS; anonymous pages, which are the process's own; file pages, which belong to the
page cache and are dropped under pressure).

    python benchmarks/benchmark_out_of_core.py                      # 100k and 400k clips (7.5 + 30 GiB of disk)
    python benchmarks/benchmark_out_of_core.py --scale 1 2          # 100k and 200k
    python benchmarks/benchmark_out_of_core.py --device cuda --model_size vit-s --batch_size 4096
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def run(args, store: str, placement: str) -> dict:
    command = [
        sys.executable, os.path.join(HERE, "benchmark_pretrain.py"), "--json", "--store", store,
        "--placement", placement, "--device", args.device, "--model_size", args.model_size,
        "--batch_size", str(args.batch_size), "--steps", str(args.steps), "--warmup", "2",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=False)
    if output.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{output.stdout[-2000:]}{output.stderr[-2000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def main() -> None:
    from benchmark_pretrain import generate_store

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--scale", type=int, nargs="+", default=[1, 4], help="store sizes, in multiples of --clips")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model_size", default="small", choices=["small", "vit-s"])
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats; the best step time is kept")
    parser.add_argument("--workdir", default=None, help="where the stores are generated (default: a temp folder)")
    args = parser.parse_args()

    workdir = args.workdir or tempfile.mkdtemp(prefix="myna-ooc-")
    rows = []
    try:
        for scale in sorted(args.scale):
            store = os.path.join(workdir, f"store-{scale}x")
            free = shutil.disk_usage(workdir).free
            needed = args.clips * scale * 313 * 128 * 2
            if needed > 0.9 * free:
                print(f"skipping {scale}x: needs {needed / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free")
                continue
            start = time.perf_counter()
            generate_store(store, args.clips * scale, 313)
            print(f"generated {args.clips * scale} clips ({needed / 2**30:.2f} GiB) in {time.perf_counter() - start:.0f} s",
                  flush=True)
            placements = ["resident", "out_of_core"] if scale == min(args.scale) else ["out_of_core"]
            best = {}
            for _ in range(args.repeats):  # interleaved: resident, out-of-core, resident, ...
                for placement in placements:
                    result = run(args, store, placement)
                    if placement not in best or result["ms_per_step"] < best[placement]["ms_per_step"]:
                        best[placement] = result
            for placement in placements:
                rows.append((scale, best[placement]))
            shutil.rmtree(store)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{rows[0][1]['device']}; model {args.model_size}, batch {args.batch_size}, {args.steps} steps, "
          f"best of {args.repeats}")
    print(f"{'clips':>9} {'store GiB':>9} {'placement':>12} {'ms/step':>8} {'ex/s':>7} {'peak RSS':>9} "
          f"{'anon GiB':>9} {'file GiB':>9}")
    for scale, r in rows:
        print(f"{r['store_clips']:>9} {r['store_gib']:>9.2f} {r['placement']:>12} {r['ms_per_step']:>8.1f} "
              f"{r['examples_per_second']:>7.0f} {r['peak_rss_gib']:>9.2f} {r['rss_anon_gib']:>9.2f} "
              f"{r['rss_file_gib']:>9.2f}")


if __name__ == "__main__":
    main()
