"""Shared by the app's tests: a tiny generated library (music in two folders with tags, a store with timelines, an
index), clips cut from its tracks on the store's 3 s chunk boundaries, and `myna app` served by its own command."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from myna_training.synthetic import generate_clip

from .pipelines_support import save_tiny_model


CHUNK_SAMPLES = 96 * 512  # one chunk of the tiny model at 16 kHz: 96 frames of 512 samples, 3.072 s
RATE = 16_000
TRACK_SECONDS = 4 * CHUNK_SAMPLES / RATE + 0.1  # four chunks


def write_music(folder, count: int = 8) -> list[str]:
    """`count` generated tracks of four chunks, alternately in `jazz/` and `rock/`, each folder with a
    `metadata.csv` (`file_name`, `style`, `tempo`) as `write_synthetic_folder` writes it."""
    paths, rows = [], {"jazz": [], "rock": []}
    for i in range(count):
        genre = ("jazz", "rock")[i % 2]
        os.makedirs(os.path.join(folder, genre), exist_ok=True)
        audio, labels = generate_clip([21, i], duration=TRACK_SECONDS, sampling_rate=RATE, style=i % 5)
        path = os.path.join(folder, genre, f"song{i}.wav")
        sf.write(path, audio, RATE, subtype="FLOAT")
        paths.append(path)
        rows[genre].append(f"song{i}.wav,{labels['style']},{labels['tempo']}")
    for genre, lines in rows.items():
        with open(os.path.join(folder, genre, "metadata.csv"), "w") as f:
            f.write("file_name,style,tempo\n" + "\n".join(lines) + "\n")
    return paths


def make_library(root, count: int = 8, timeline: bool = True, variant: str = "base") -> dict:
    """A tiny model, `count` tracks, their store (with timelines) and index under `root`."""
    from myna_pipelines.library import embed_library
    from myna_pipelines.search import build_index

    root = str(root)
    model = save_tiny_model(os.path.join(root, "model"), variant=variant)
    paths = write_music(os.path.join(root, "music"), count)
    store, index = os.path.join(root, "store"), os.path.join(root, "index")
    embed_library([os.path.join(root, "music")], store, model, timeline=timeline, num_workers=0, progress=False)
    build_index(store, index)
    return {"root": root, "model": model, "paths": paths, "store": store, "index": index}


def cut_clip(source: str, path: str, first_chunk: int = 1, chunks: int = 3) -> tuple[str, float]:
    """Writes `chunks` chunks of `source` from chunk `first_chunk` on to `path`; returns it and its start second."""
    audio, rate = sf.read(source, dtype="float32")
    chunk = CHUNK_SAMPLES * rate / RATE  # a chunk is 3.072 s at any rate
    start, stop = round(first_chunk * chunk), round((first_chunk + chunks) * chunk)
    sf.write(path, audio[start:stop], rate, subtype="FLOAT")
    return path, start / rate


def write_not_audio(path: str) -> str:
    """A text file with an audio file's name: what a wrong upload looks like to the server."""
    with open(path, "w") as f:
        f.write("track list\n1. intro\n2. outro\n")
    return path


def write_short_clip(path: str, seconds: float = 1.0) -> str:
    rng = np.random.default_rng(0)
    sf.write(path, (0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32), RATE, subtype="FLOAT")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServedCommand:
    """A running `myna app`: its page's `url`; once stopped, what it printed (`err`) and its `returncode`."""

    url: str
    process: subprocess.Popen
    err: str = ""
    returncode: int | None = None


@contextmanager
def serve_command(argv: list[str], env: dict[str, str] | None = None, wait: float = 180) -> Iterator[ServedCommand]:
    """`myna app ARGV --port FREE` in a process of its own, yielded once its page answers; on leaving, stopped with
    SIGINT as Ctrl+C stops it (killed if it has not stopped a minute later). `env` is added to this environment."""
    port = free_port()
    command = [sys.executable, "-m", "myna_pipelines.cli", "app", *argv, "--port", str(port)]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1", **(env or {})}
    # A run started in the background (a shell's `&`, as CI scripts do) ignores SIGINT, and children inherit that:
    # the server gets the terminal's default, so that SIGINT stops it as Ctrl+C does.
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    served = ServedCommand(f"http://127.0.0.1:{port}/", process)
    try:
        deadline = time.monotonic() + wait
        while True:
            if process.poll() is not None:
                raise AssertionError(f"myna app stopped before serving: {process.communicate()[1][-3000:]}")
            try:
                with urllib.request.urlopen(served.url, timeout=5) as response:
                    assert response.status == 200 and "Myna library" in response.read().decode()
                    break
            except OSError:
                assert time.monotonic() < deadline, "myna app did not serve its page"
                time.sleep(0.2)
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                served.err = process.communicate(timeout=60)[1]
            except subprocess.TimeoutExpired:
                process.kill()
                served.err = process.communicate()[1]
        served.returncode = process.returncode


def files_under(folder) -> list[str]:
    """Every file below `folder`, relative to it."""
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names)
