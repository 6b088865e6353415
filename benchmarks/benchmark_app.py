"""`myna app` on large libraries: how long it takes to open, how long a search takes, and the 50k-point map.

    python benchmarks/benchmark_app.py                                   # 1k and 10k tracks, full-size ViT-S
    python benchmarks/benchmark_app.py --tracks 1000 --queries 3 --map_tracks 0
    python benchmarks/benchmark_app.py --browser false                   # no Chromium: skip the map's rendering

For each size, a store of that many tracks is written directly (no audio to embed: random clustered track
embeddings in the width of a randomly initialised full-size Myna-Base, ViT-S 384 wide, with `--chunks` 3 s chunk
timelines each; the tracks point at a few generated audio files through symbolic links, so that results can be
played) and indexed with `myna index` (exact, flat). Then:

- **open**: `myna app --index INDEX` as a user runs it, from the command to the first page served over HTTP
  (Python's imports, model loading, the caches, Gradio), twice: *first* (the map's layout and the timeline cache are
  computed and written beside the index) and *again* (read back). The target: under 10 s for 10k tracks.
- **search**: a `--query_seconds` clip sent to that server the way the page sends it (gradio_client: upload, the
  `search` endpoint, k = 10 results with their segment clips and timelines), median and worst of `--queries`; and
  the parts inside the server (embedding the clip, FAISS, the segments). The target: under 1 s on CPU for 10k.
- **map**: `--map_tracks` tracks (timelines off), the map's Plotly figure: its build time and JSON size; with
  `--browser`, headless Chromium (Debian's) opens the page and draws the Map tab's 50k points (WebGL, software
  rendered here): time to draw, and to redraw after a zoom.

Measured on a shared, busy 2-core machine: absolute figures vary with the load, hence the median.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

import numpy as np


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


@dataclass
class BenchmarkArguments:
    tracks: str = field(default="1000,10000", metadata={"help": "Library sizes, comma-separated."})
    chunks: int = field(default=10, metadata={"help": "3 s chunks per track in the timelines (10: 30 s tracks)."})
    queries: int = field(default=5, metadata={"help": "Searches per size (the first, warm-up, is not counted)."})
    query_seconds: float = field(default=10.0, metadata={"help": "Length of the query clip."})
    layout: str = field(default="auto", metadata={"help": "The map's layout: auto (UMAP where installed), pca."})
    map_tracks: int = field(default=50_000, metadata={"help": "Tracks of the map benchmark (0: skip it)."})
    browser: bool = field(default=True, metadata={"help": "Draw the map in headless Chromium (when installed)."})
    threads: int = field(default=2, metadata={"help": "torch threads of the server (the machine's cores)."})
    workdir: str | None = field(default=None, metadata={"help": "Where to write (default: a temporary folder)."})


def save_model(folder: str) -> str:
    import torch

    from modeling_myna import MynaConfig, MynaFeatureExtractor, MynaModel

    torch.manual_seed(0)
    config = MynaConfig()  # Myna-Base: ViT-S, 16x16 patches, 384 wide
    MynaModel(config).eval().save_pretrained(folder)
    MynaFeatureExtractor.from_config(config).save_pretrained(folder)
    return folder


def write_store(folder: str, model: str, audio: list[str], tracks: int, chunks: int, music: str) -> float:
    """A store of `tracks` rows as `myna embed --timeline` writes them (shards of 256), with clustered random
    embeddings; each track a symbolic link to one of `audio`. Returns the seconds it took."""
    from myna_pipelines.library import load_model, model_fingerprint
    from myna_pipelines.store import EmbeddingStore, settings_key

    started = time.perf_counter()
    loaded, extractor = load_model(model, "cpu")
    fingerprint = model_fingerprint(loaded)
    width = loaded.config.embedding_size("square")
    settings = {
        "patch_mode": "square", "precision": "float32", "dtype": "float32", "timeline": chunks > 0,
        "chunk_frames": extractor.chunk_frames, "embedding_size": width,
    }  # fmt: skip
    key = settings_key(fingerprint, settings)
    store = EmbeddingStore(folder)
    model_id = os.path.abspath(model)
    store.write_metadata({"model": model_id, "model_fingerprint": fingerprint, "settings": settings,
                          "settings_key": key})  # fmt: skip
    rng = np.random.default_rng(tracks)
    centres = rng.standard_normal((64, width)).astype(np.float32)
    starts = (np.arange(max(chunks, 1)) * 3.072).astype(np.float32)
    rows = []
    for i in range(tracks):
        genre = f"genre{i % 16:02d}"
        path = os.path.join(music, genre, f"track{i:06d}.flac")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.lexists(path):
            os.symlink(audio[i % len(audio)], path)
        track = centres[i % 64] + 0.8 * rng.standard_normal(width).astype(np.float32)
        timeline = track + 0.5 * rng.standard_normal((max(chunks, 1), width)).astype(np.float32)
        row = {
            "path": path, "size": 1, "mtime_ns": 1, "content_hash": f"{i:032x}", "duration": 3.072 * max(chunks, 1),
            "num_chunks": max(chunks, 1), "model": model_id, "model_fingerprint": fingerprint,
            "settings": json.dumps(settings, sort_keys=True), "settings_key": key, "embedded_at": time.time(),
            "embedding": timeline.mean(axis=0),
        }  # fmt: skip
        if chunks:
            row.update(timeline=timeline, start_times=starts)
        rows.append(row)
        if len(rows) == 256 or i == tracks - 1:
            store.write_shard(rows)
            rows = []
    return time.perf_counter() - started


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used: what a search costs whatever else the machine runs."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # not Linux
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(index: str, port: int, threads: int, layout: str) -> tuple[subprocess.Popen, float, float]:
    """`myna app --index` in its own process; returns it, the seconds until its page was served and the CPU
    seconds it had used by then."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GRADIO_ANALYTICS_ENABLED": "False",
           "TRANSFORMERS_VERBOSITY": "error"}  # fmt: skip
    command = [sys.executable, "-m", "myna_pipelines.cli", "app", "--index", index, "--port", str(port),
               "--layout", layout]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"myna app exited: {process.stderr.read()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return process, time.perf_counter() - started, cpu_seconds(process.pid)
        except OSError:
            time.sleep(0.1)
        if time.perf_counter() - started > 600:
            process.kill()
            raise RuntimeError("myna app did not answer within 10 minutes")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def search_latency(port: int, pid: int, clip: str, queries: int) -> tuple[list[float], list[float], float]:
    """Seconds and server CPU seconds per search through the page's own endpoint (upload, embed, search, k = 10
    results), the first (warm-up) left out; and when (`time.perf_counter()`) the first search was answered."""
    from gradio_client import Client, handle_file

    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    times, cpu = [], []
    for i in range(queries):
        started, used = time.perf_counter(), cpu_seconds(pid)
        result = client.predict(handle_file(clip), None, 10, api_name="/search")
        times.append(time.perf_counter() - started)
        cpu.append(cpu_seconds(pid) - used)
        assert "nearest tracks" in str(result[0]), result[0]
        if i == 0:
            first_answered = time.perf_counter()
    return times[1:], cpu[1:], first_answered


def search_parts(index: str, clip: str, queries: int, threads: int) -> dict[str, float]:
    """Inside the server: the median seconds of embedding the clip, of the whole backend search (embedding,
    FAISS, segments and timelines), and of writing k = 10 segment clips."""
    import torch

    from myna_pipelines.explore import LibraryExplorer
    from myna_pipelines.library import embed_chunks

    torch.set_num_threads(threads)
    library = LibraryExplorer.open(index=index)
    inference, extractor = library.index.model(None)
    embed, total, clips = [], [], []
    for _ in range(queries):
        started = time.perf_counter()
        embed_chunks(clip, inference, extractor, "square")
        embed.append(time.perf_counter() - started)
        found = library.search_clip(clip, k=10)
        total.append(found.seconds)
        started = time.perf_counter()
        for result in found.results:
            library.segment_clip(result["id"], result["segment_start"] + 0.001 * len(clips))  # new files each time
        clips.append(time.perf_counter() - started)
    return {"embed": float(np.median(embed)), "backend": float(np.median(total)), "clips": float(np.median(clips))}


def map_benchmark(index: str, workdir: str, args) -> dict:
    from myna_pipelines.app import map_figure
    from myna_pipelines.explore import LibraryExplorer

    library = LibraryExplorer.open(index=index, load_query_model=False, layout=args.layout)
    started = time.perf_counter()
    figure = map_figure(library, "folder")
    build = time.perf_counter() - started
    size = len(figure.to_json())
    out = {"tracks": len(library), "layout": library.layout_method, "figure_s": build, "figure_mb": size / 1e6}
    chromium = next((shutil.which(c) for c in ("chromium", "chromium-browser") if shutil.which(c)), None)
    if not args.browser or chromium is None:
        return out
    from playwright.sync_api import sync_playwright

    port = free_port()
    process, opened, _ = serve(index, port, args.threads, args.layout)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_role("tab", name="Map").wait_for()
            started = time.perf_counter()
            page.get_by_role("tab", name="Map").click()
            page.wait_for_function(
                "() => { const gd = document.querySelector('#library-map .js-plotly-plot');"
                " return gd && gd._fullData && gd.querySelector('canvas'); }",
                timeout=120_000,
            )
            out["draw_s"] = time.perf_counter() - started
            # A zoom (a drag on the plot) until Plotly has drawn the zoomed view.
            page.evaluate(
                "() => { window.__redrawn = null; document.querySelector('#library-map .js-plotly-plot')"
                ".on('plotly_afterplot', () => { window.__redrawn = performance.now(); }); }"
            )
            box = page.locator("#library-map .js-plotly-plot .nsewdrag").first.bounding_box()
            page.mouse.move(box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
            page.mouse.down()
            page.mouse.move(box["x"] + 0.6 * box["width"], box["y"] + 0.6 * box["height"], steps=5)
            released = page.evaluate("() => performance.now()")
            page.mouse.up()
            page.wait_for_function("() => window.__redrawn !== null", timeout=60_000)
            out["zoom_s"] = (page.evaluate("() => window.__redrawn") - released) / 1000
            page.screenshot(path=os.path.join(workdir, "map-50k.png"))
            browser.close()
    finally:
        stop(process)
    return out


def main(argv: list[str] | None = None) -> None:
    from transformers import HfArgumentParser

    from myna_pipelines.search import build_index
    from myna_training.synthetic import generate_clip

    (args,) = HfArgumentParser(BenchmarkArguments).parse_args_into_dataclasses(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="myna-app-bench-")
    os.makedirs(workdir, exist_ok=True)
    import soundfile as sf

    model = save_model(os.path.join(workdir, "model"))
    audio = []
    for i in range(8):
        clip, _ = generate_clip([5, i], duration=3.072 * max(args.chunks, 1) + 0.1)
        audio.append(os.path.join(workdir, f"source{i}.flac"))
        sf.write(audio[-1], clip, 16_000)
    query = os.path.join(workdir, "query.wav")
    sf.write(query, generate_clip([6, 0], duration=args.query_seconds)[0], 16_000)

    rows = []
    for tracks in [int(t) for t in args.tracks.split(",") if t]:
        folder = os.path.join(workdir, f"lib{tracks}")
        shutil.rmtree(folder, ignore_errors=True)
        written = write_store(os.path.join(folder, "store"), model, audio, tracks, args.chunks,
                              os.path.join(folder, "music"))  # fmt: skip
        started = time.perf_counter()
        build_index(os.path.join(folder, "store"), os.path.join(folder, "index"))
        indexed = time.perf_counter() - started
        port = free_port()
        process, first, first_cpu = serve(os.path.join(folder, "index"), port, args.threads, args.layout)
        stop(process)
        started = time.perf_counter()
        process, again, again_cpu = serve(os.path.join(folder, "index"), port, args.threads, args.layout)
        try:
            latency, latency_cpu, first_answered = search_latency(port, process.pid, query, args.queries + 1)
            first_answer = first_answered - started  # the command, the page, the model, one search
        finally:
            stop(process)
        parts = search_parts(os.path.join(folder, "index"), query, args.queries, args.threads)
        cache = os.path.join(folder, "index", "app")
        cache_mb = sum(os.path.getsize(os.path.join(cache, n)) for n in os.listdir(cache)) / 1e6
        layout = next(n for n in os.listdir(cache) if n.startswith("layout-"))[len("layout-") : -len(".npy")]
        row = {
            "tracks": tracks, "chunks": args.chunks, "store_s": written, "index_s": indexed, "open_first_s": first,
            "open_first_cpu_s": first_cpu, "open_again_s": again, "open_again_cpu_s": again_cpu,
            "first_search_answered_s": first_answer, "search_median_s": float(np.median(latency)),
            "search_max_s": max(latency), "search_cpu_median_s": float(np.median(latency_cpu)),
            "embed_s": parts["embed"], "backend_s": parts["backend"], "clips_s": parts["clips"], "layout": layout,
            "cache_mb": cache_mb,
        }  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.map_tracks:
        folder = os.path.join(workdir, f"map{args.map_tracks}")
        shutil.rmtree(folder, ignore_errors=True)
        write_store(os.path.join(folder, "store"), model, audio, args.map_tracks, 0, os.path.join(folder, "music"))
        build_index(os.path.join(folder, "store"), os.path.join(folder, "index"))
        print(json.dumps({"map": map_benchmark(os.path.join(folder, "index"), workdir, args)}), flush=True)

    print("\n| tracks | open, first: wall / CPU (s) | open, again: wall / CPU (s) | search: median / worst wall, "
          "median CPU (s) | in the server: embed the clip, whole search, 10 clips (s) | map | cache (MB) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['tracks']:,} | {r['open_first_s']:.1f} / {r['open_first_cpu_s']:.1f} | {r['open_again_s']:.1f} / "
              f"{r['open_again_cpu_s']:.1f} | {r['search_median_s']:.2f} / {r['search_max_s']:.2f}, "
              f"{r['search_cpu_median_s']:.2f} | {r['embed_s']:.2f}, {r['backend_s']:.2f}, {r['clips_s']:.2f} | "
              f"{r['layout'].upper()} | {r['cache_mb']:.0f} |")
    print(f"\n(work folder: {workdir})")


if __name__ == "__main__":
    main()
